"""The ``joyful serve``, ``joyful correct``, ``joyful token create|list|revoke`` and ``joyful audit`` commands.

Only typer is imported here; FastAPI, uvicorn and PyTorch are imported when a command
runs, so ``joyful --help`` stays fast. User errors raise :class:`JoyfulError`, which the
CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from joyful.errors import JoyfulError
from joyful.service import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_SESSIONS, DEFAULT_STORE

StorePath = Annotated[
    str,
    typer.Option(
        help="Where the service keeps what consent allows (pseudonymised speakers, feature vectors, labels; texts only "
        "with --keep-text), corrections, sessions, tokens and the audit log: a SQLite file, or a postgresql:// URL "
        "shared by several hosts.",
    ),
]
#: The token and audit commands name their store explicitly: a token made in the wrong store opens nothing.
StoreLocation = Annotated[
    str, typer.Option(help="The service's store: its SQLite file or postgresql:// URL (as given to `joyful serve --store`).")
]


def serve_command(
    *,
    model: Annotated[Path, typer.Option(help="Model directory written by `joyful train` (train with --causal for streaming).")],
    host: Annotated[str, typer.Option(help="Address to listen on; the default keeps the service on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (printed at start).")] = 8000,
    store: StorePath = str(DEFAULT_STORE),
    keep_text: Annotated[bool, typer.Option("--keep-text", help="Also store utterance texts of dialogues shared with consent store or train (by default no text is stored).")] = False,
    max_request_bytes: Annotated[int, typer.Option(help="Larger request bodies are refused with 413.")] = DEFAULT_MAX_REQUEST_BYTES,
    max_sessions: Annotated[int, typer.Option(help="Streaming sessions open at once (in the store, across workers); more get 429.")] = DEFAULT_MAX_SESSIONS,
    threads: Annotated[int, typer.Option(help="PyTorch CPU threads per prediction; requests run one at a time, and one "
                                              "dialogue is too small a job to split (1 is fastest on a busy machine).")] = 1,
    device: Annotated[str, typer.Option(help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps.")] = "auto",
    abstain_below: Annotated[Optional[float], typer.Option(help="Default confidence under which a prediction is uncertain and joins the review queue (a request may give its own).")] = None,
    target_accuracy: Annotated[Optional[float], typer.Option(help="Or: choose that threshold on the model's validation outputs for this accuracy on the predictions kept.")] = None,
    drift_threshold: Annotated[float, typer.Option(help="PSI past which GET /monitor alerts (0.2: the usual 'significant shift').")] = 0.2,
    drift_window: Annotated[int, typer.Option(help="Last predictions served that GET /monitor compares with validation.")] = 500,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help="Serve on a non-loopback address although the store has no API token: anyone who reaches the port can read and delete every stored dialogue.")] = False,
    ssl_certfile: Annotated[Optional[Path], typer.Option(help="Serve HTTPS with this certificate (PEM; give --ssl-keyfile too).")] = None,
    ssl_keyfile: Annotated[Optional[Path], typer.Option(help="The certificate's private key (PEM, not encrypted).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes, each with the model loaded; they share sessions through the store.", min=1)] = 1,
    retention_days: Annotated[Optional[float], typer.Option(help="Erase stored dialogues (and their corrections) first stored more than this many days ago: at start-up and every hour.")] = None,
    names_as_given: Annotated[bool, typer.Option("--names-as-given", help="A new store keeps dialogue ids and speakers as given instead of pseudonyms (a store's choice cannot change later).")] = False,
) -> None:
    """Serve the model over HTTP(S): predict dialogues, stream utterances, explain and correct labels; web page at /.

    Requests need an API token (`joyful token create`) as soon as the store holds one; on
    an address other than loopback the service refuses to start without one.
    """
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise JoyfulError("give --ssl-certfile and --ssl-keyfile together: the certificate and its private key")
    if ssl_certfile is not None and ssl_keyfile is not None:
        _check_tls(ssl_certfile, ssl_keyfile)
    sock = _listen(host, port)
    public = not ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    if public and not insecure_no_auth and _active_tokens(str(store)) == 0:
        sock.close()
        raise JoyfulError(
            f"refusing to serve on {host} while the store has no API token (anyone who reaches the port could read "
            f"and delete the stored data): create one with `joyful token create --store {_shown(str(store))} --role admin "
            "--name NAME`, or pass --insecure-no-auth"
        )
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

    options = dict(
        store_path=store, keep_text=keep_text, max_request_bytes=max_request_bytes, max_sessions=max_sessions,
        abstain_below=abstain_below, target_accuracy=target_accuracy, drift_threshold=drift_threshold,
        drift_window=drift_window, retention_days=retention_days, pseudonymise=False if names_as_given else None,
    )
    # Built here even with workers, so that a bad model, store or option is one line before any worker starts.
    app = create_app(Joyful.load(model, device=device), **options)
    # On a public address revoking the last token must close the service, not open it.
    app.state.auth.require_tokens = require_tokens = public and not insecure_no_auth
    address = sock.getsockname()
    shown = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
    scheme = "https" if ssl_certfile is not None else "http"
    texts = "kept" if keep_text else "not kept"
    typer.echo(
        f"joyful: serving {model} at {scheme}://{shown}:{address[1]}/ (store {_shown(str(store))}, texts {texts})", err=True
    )
    if public and insecure_no_auth and app.state.store.active_tokens() == 0:
        typer.echo(
            f"joyful: warning: --insecure-no-auth: serving on {host} without API tokens; anyone who reaches this port "
            "can read, change and delete every stored dialogue",
            err=True,
        )
    # No access log: its lines would carry session ids and dialogue ids.
    tls = {"ssl_certfile": str(ssl_certfile) if ssl_certfile else None, "ssl_keyfile": str(ssl_keyfile) if ssl_keyfile else None}
    if workers == 1:
        uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **tls)).run(sockets=[sock])
        return
    _serve_workers(app, sock, workers, tls, model=str(model), device=device, threads=threads,
                   require_tokens=require_tokens, options=options)


def _serve_workers(app, sock: socket.socket, workers: int, tls: dict, **settings: object) -> None:
    """Run ``workers`` processes on ``sock``, each building its own app from ``settings`` (see :mod:`joyful.service.worker`).

    librosa's compiled code is cached on disk first when the model takes recordings, so
    that the workers' first extractions only read that cache (see
    :func:`joyful.extract.audio.warm_up`).
    """
    import os

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from joyful.extract.audio import warm_up
    from joyful.service.worker import SETTINGS_VARIABLE, settings_for_workers

    audio = (app.state.predictor.info.extra.get("extraction") or {}).get("audio_features")
    if audio and "a" in app.state.predictor.widths:
        warm_up(audio)
    app.state.store.close()
    os.environ[SETTINGS_VARIABLE] = settings_for_workers(**settings)
    config = uvicorn.Config(
        "joyful.service.worker:app", factory=True, workers=workers, log_level="warning", access_log=False, **tls
    )
    Multiprocess(config, sockets=[sock]).run()


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
    if _missing(store):
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


def token_create_command(
    *,
    store: StoreLocation,
    role: Annotated[str, typer.Option(help="viewer (predict, stream), annotator (+ corrections, review) or admin (+ delete, export, audit, monitor).")],
    name: Annotated[str, typer.Option(help="Who or what the token is for; shown in the audit log, unique among tokens not revoked.")],
) -> None:
    """Create an API token for `joyful serve`; it is printed once, as the last line, and only its hash is stored."""
    from joyful.corrections import CorrectionStore
    from joyful.service.auth import check_name, check_role, hash_token, new_token

    check_role(role)
    check_name(name)
    token_id, token = new_token()
    with CorrectionStore(store) as db:
        db.add_token(token_id, name, role, hash_token(token))
        db.audit(name, "token_create", None, "ok")
        where = db.location
    typer.echo(f"joyful: token {name!r} ({role}) created in {where}; it is shown only this once, keep it secret:", err=True)
    typer.echo(token)


def token_list_command(*, store: StoreLocation) -> None:
    """List the API tokens of a store: name, role, when created, when revoked (never a token or its hash)."""
    from joyful.corrections import CorrectionStore

    with CorrectionStore(_existing(store)) as db:
        rows = [(t.name, t.role, t.created, t.revoked or "-") for t in db.tokens()]
        where = db.location
    if not rows:
        typer.echo(f"joyful: no tokens in {where}: the service is open on loopback and refuses other addresses", err=True)
        return
    _table(("name", "role", "created", "revoked"), rows)


def token_revoke_command(
    *,
    store: StoreLocation,
    name: Annotated[str, typer.Option(help="The token to revoke; the service refuses it within seconds.")],
) -> None:
    """Revoke an API token: requests carrying it are refused from then on (within a few seconds in a running service)."""
    from joyful.corrections import CorrectionStore

    with CorrectionStore(_existing(store)) as db:
        if not db.revoke_token(name):
            raise JoyfulError(f"{db.location}: no token named {name!r} that is not already revoked (`joyful token list`)")
        db.audit(name, "token_revoke", None, "ok")
    typer.echo(f"joyful: token {name!r} revoked; a running service refuses it within seconds", err=True)


def audit_command(
    *,
    store: StoreLocation,
    limit: Annotated[Optional[int], typer.Option(help="Only the last N entries.", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
) -> None:
    """Show the audit log, oldest first: time, token name, action, dialogue (pseudonym) and outcome; never content."""
    from joyful.corrections import CorrectionStore

    with CorrectionStore(_existing(store)) as db:
        entries = db.audit_log(limit=limit)
    rows = [(e.time, e.token or "-", e.action, e.dialogue or "-", e.outcome) for e in entries]
    if as_json:
        for e in entries:
            typer.echo(json.dumps({"time": e.time, "token": e.token, "action": e.action, "dialogue": e.dialogue,
                                   "outcome": e.outcome}))
    elif rows:
        _table(("time", "token", "action", "dialogue", "outcome"), rows)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, *rows]:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _missing(store: str) -> bool:
    """Whether ``store`` is a SQLite file not created yet (opening it would create it; a URL is a server's)."""
    from joyful.storage import exists

    return not exists(store)


def _shown(store: str) -> str:
    """``store`` fit for a message: a URL's password masked."""
    from joyful.storage import is_postgres, masked

    return masked(store) if is_postgres(store) else store


def _existing(store: str) -> str:
    """``store`` if it exists: listing or revoking must not leave an empty SQLite file behind."""
    if _missing(store):
        raise JoyfulError(f"{store}: no such store (`joyful token create` or `joyful serve` creates one)")
    return store


def _active_tokens(store: str) -> int:
    """How many tokens of ``store`` work, without creating a store that does not exist yet."""
    if _missing(store):
        return 0
    from joyful.corrections import CorrectionStore

    with CorrectionStore(store) as db:
        return db.active_tokens()


def _check_tls(certfile: Path, keyfile: Path) -> None:
    """Load the certificate and key once here, so a bad pair is a one-line error rather than a server traceback.

    The password callback refuses an encrypted key instead of letting OpenSSL prompt on
    the terminal of a service that may have none.
    """
    def no_password() -> bytes:
        raise JoyfulError(f"{keyfile}: the private key is encrypted; give an unencrypted key to --ssl-keyfile")

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile, password=no_password)
    except (OSError, ssl.SSLError) as e:
        raise JoyfulError(
            f"--ssl-certfile {certfile} / --ssl-keyfile {keyfile}: cannot load them ({e.strerror or e}); give a PEM "
            "certificate and its own private key, PEM and not encrypted"
        ) from None


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
