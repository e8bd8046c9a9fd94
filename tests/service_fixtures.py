"""Shared by the service tests: a small trained causal model, request bodies, and a live server.

Import the fixtures into a test module (``from service_fixtures import served_model_dir``)
so pytest finds them there.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.data.schema import Dialogue, feature_field
from joyful.synthetic import generate_dialogues


@pytest.fixture(scope="session")
def served_model_dir(data_dir, tmp_path_factory) -> Path:
    """A causal tiny model (past context only), as `joyful train --causal` makes for live use."""
    out = tmp_path_factory.mktemp("served") / "model"
    config = JoyfulConfig(**{**TINY, "epochs": 3, "causal": True, "window_future": 0})
    Joyful(config).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=out, progress=False)
    return out


def sample_dialogue(seed: int = 7, n: int = 6, prefix: str = "req-") -> Dialogue:
    """A generated dialogue with the model's feature widths and a planted signal."""
    return generate_dialogues(1, widths=WIDTHS, seed=seed, min_length=n, max_length=n, signal=2.5, prefix=prefix).dialogues[0]


def utterance_body(d: Dialogue, i: int, *, text: bool = True, label: bool = False) -> dict[str, Any]:
    """Utterance ``i`` of ``d`` in the JSONL utterance shape (NaN rows left out: missing)."""
    u: dict[str, Any] = {"speaker": d.speakers[i]}
    if text and d.texts is not None:
        u["text"] = d.texts[i]
    if label and d.labels is not None:
        u["label"] = d.labels[i]
    for m, x in d.features.items():
        if not np.isnan(x[i]).all():
            u[feature_field(m)] = [float(v) for v in x[i]]
    return u


def dialogue_body(d: Dialogue, *, consent: str | None = None, **kwargs: bool) -> dict[str, Any]:
    """``d`` as one line of the JSONL dialogue format (with a consent scope for the service, if given)."""
    body: dict[str, Any] = {"dialogue": d.id, "utterances": [utterance_body(d, i, **kwargs) for i in range(len(d))]}
    return body if consent is None else {**body, "consent": consent}


def file_bytes(path: Path) -> bytes:
    """The store's database file and its write-ahead log, where a trace of a dialogue could hide."""
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free local port in a background thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextlib.contextmanager
def serve_process(*args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``joyful serve ARGS --port 0`` in a subprocess; yields its base URL (read from its first line) and the process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "joyful.cli", "serve", *args, "--port", "0"], stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        line = proc.stderr.readline()
        found = re.search(r"http://[^/]+", line)
        if found is None:
            raise RuntimeError(f"joyful serve did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}")
        url = found.group(0)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
