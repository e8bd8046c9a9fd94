"""The ``joyful serve`` and ``joyful correct`` commands.

Only typer is imported here; FastAPI, uvicorn and PyTorch are imported when a command
runs, so ``joyful --help`` stays fast. User errors raise :class:`JoyfulError`, which the
CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from joyful.errors import JoyfulError
from joyful.service import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_SESSIONS, DEFAULT_STORE

StorePath = Annotated[
    Path,
    typer.Option(
        help="SQLite file for the dialogues the service saw (speakers, feature vectors, labels; texts only with "
        "--keep-text) and the corrections made to them.",
    ),
]


def serve_command(
    *,
    model: Annotated[Path, typer.Option(help="Model directory written by `joyful train` (train with --causal for streaming).")],
    host: Annotated[str, typer.Option(help="Address to listen on; the default keeps the service on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (printed at start).")] = 8000,
    store: StorePath = DEFAULT_STORE,
    keep_text: Annotated[bool, typer.Option("--keep-text", help="Also store utterance texts (by default no text is stored).")] = False,
    max_request_bytes: Annotated[int, typer.Option(help="Larger request bodies are refused with 413.")] = DEFAULT_MAX_REQUEST_BYTES,
    max_sessions: Annotated[int, typer.Option(help="Streaming sessions kept in memory at once; more get 429.")] = DEFAULT_MAX_SESSIONS,
    threads: Annotated[int, typer.Option(help="PyTorch CPU threads per prediction; requests run one at a time, and one "
                                              "dialogue is too small a job to split (1 is fastest on a busy machine).")] = 1,
    device: Annotated[str, typer.Option(help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps.")] = "auto",
    abstain_below: Annotated[Optional[float], typer.Option(help="Default confidence under which a prediction is uncertain and joins the review queue (a request may give its own).")] = None,
    target_accuracy: Annotated[Optional[float], typer.Option(help="Or: choose that threshold on the model's validation outputs for this accuracy on the predictions kept.")] = None,
    drift_threshold: Annotated[float, typer.Option(help="PSI past which GET /monitor alerts (0.2: the usual 'significant shift').")] = 0.2,
    drift_window: Annotated[int, typer.Option(help="Last predictions served that GET /monitor compares with validation.")] = 500,
) -> None:
    """Serve the model over HTTP: predict dialogues, stream utterances, explain and correct labels; web page at /."""
    try:
        import torch
        import uvicorn

        from joyful.service.app import create_app
    except ImportError as e:
        raise JoyfulError(f"joyful serve needs FastAPI and uvicorn ({e.name} is missing): pip install 'joyful[serve]'") from None
    if threads < 1:
        raise JoyfulError(f"--threads must be at least 1, not {threads}")
    torch.set_num_threads(threads)
    from joyful.api import Joyful

    app = create_app(
        Joyful.load(model, device=device), store, keep_text=keep_text, max_request_bytes=max_request_bytes,
        max_sessions=max_sessions, abstain_below=abstain_below, target_accuracy=target_accuracy,
        drift_threshold=drift_threshold, drift_window=drift_window,
    )
    sock = _listen(host, port)
    address = sock.getsockname()
    shown = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
    typer.echo(
        f"joyful: serving {model} at http://{shown}:{address[1]}/ (store {store}, texts {'kept' if keep_text else 'not kept'})",
        err=True,
    )
    # No access log: its lines would carry session ids and dialogue ids.
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def correct_command(
    *,
    store: StorePath = DEFAULT_STORE,
    dialogue: Annotated[str, typer.Option(help="Id of the dialogue.")],
    index: Annotated[int, typer.Option(help="Position of the utterance in the dialogue (as in predictions).")],
    label: Annotated[Optional[str], typer.Option(help="Classification: the right class.")] = None,
    emotions: Annotated[Optional[str], typer.Option(help="Multilabel: the emotions (labels) present, comma-separated; '' for none.")] = None,
    score: Annotated[Optional[float], typer.Option(help="Regression: the right score, in [-3, 3].")] = None,
    annotator: Annotated[Optional[str], typer.Option(help="Who made the correction.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Check the correction against this model's task and labels.")] = None,
) -> None:
    """Record a human correction of one utterance's label, for `joyful finetune`; prints it as JSON.

    Give exactly one of --label, --emotions and --score: the form of the model's labels.
    """
    from dataclasses import asdict

    from joyful.corrections import CorrectionStore

    given = [value for value in (label, emotions, score) if value is not None]
    if len(given) != 1:
        raise JoyfulError("give exactly one of --label (a class), --emotions (those present) and --score (a number)")
    if not store.is_file():
        raise JoyfulError(f"{store}: no such correction store (`joyful serve --store` creates one)")
    value = given[0] if emotions is None else tuple(e.strip() for e in emotions.split(",") if emotions.strip())
    labels = task = None
    if model is not None:
        from joyful.training.checkpoint import load_checkpoint

        info = load_checkpoint(model)[1]
        labels, task = info.label_set.labels, info.task
    with CorrectionStore(store) as db:
        correction = db.add_correction(dialogue, index, value, annotator, labels=labels, task=task)
    typer.echo(json.dumps(asdict(correction), ensure_ascii=False))


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket, so a busy port is a one-line error rather than a server log and exit."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        raise JoyfulError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock
