"""Load test of the prediction service: streaming single-utterance predictions over concurrent sessions.

Starts ``joyful serve`` on 127.0.0.1 (a free port) with the given model, or with a tiny
causal model trained here on generated data; opens M sessions and streams N utterances
in all (N/M each, one client thread per session, each waiting for its answer before
sending the next utterance, as a live client does), then prints one JSON object:
requests per second and the p50/p95 latency of the streaming calls. Bounded: every
request has a timeout, and the server is stopped at the end. ``--workers 2`` runs two
worker processes sharing the store (a SQLite file here, or ``--store postgresql://…``),
so each utterance may be taken by either worker.

    python benchmarks/service_load.py [--model DIR] [--sessions 8] [--utterances 200] [--no-explain] [--threads 1]
                                      [--workers 2] [--store postgresql://USER:PASS@HOST/DB]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

SERVE = (
    "import typer; from joyful.service.commands import serve_command; app = typer.Typer(); "
    "app.command('serve')(serve_command); app.command('other')(lambda: None); app()"
)
TINY = {
    "global_attention_dim": 16, "global_ff": 32, "specific_dim": 24, "n_bases": 8, "gnn_hidden": 16, "gnn_heads": 2,
    "classifier_hidden": 16, "lr": 3e-3, "batch_size": 4, "epochs": 3, "patience": 3,
}


def train_tiny_model(directory: Path) -> Path:
    """A small causal model on generated three-modality data, as `joyful train --causal` would make."""
    from joyful import Joyful, JoyfulConfig
    from joyful.synthetic import generate_dialogues

    widths = {"t": 64, "a": 16, "v": 32}
    train = generate_dialogues(32, widths=widths, seed=1, signal=2.5, prefix="train-")
    valid = generate_dialogues(8, widths=widths, seed=2, signal=2.5, prefix="valid-")
    config = JoyfulConfig(**TINY, causal=True, window_future=0)
    Joyful(config).fit(train, valid, out_dir=directory / "model", progress=False)
    return directory / "model"


def start_server(model: Path, store: str, max_sessions: int, threads: int, workers: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--model", str(model), "--store", store, "--port", "0",
         "--max-sessions", str(max_sessions), "--threads", str(threads), "--workers", str(workers)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    line = proc.stderr.readline()
    found = re.search(r"http://[^/\s]+", line)
    if found is None:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}")
    url = found.group(0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not answer /health within 120 s")


def stream_session(url: str, k: int, n: int, widths: dict[str, int], explain: bool, latencies: list[float], errors: list[str]) -> None:
    """Open a session and stream ``n`` utterances of random vectors, timing each call."""
    rng = np.random.default_rng(k)
    with httpx.Client(base_url=url, timeout=120) as client:
        r = client.post("/sessions", json={"dialogue": f"load-{k}-{time.time_ns()}", "consent": "store"})
        if r.status_code != 201:
            errors.append(f"session {k}: {r.status_code} {r.text}")
            return
        session = r.json()["session"]
        for i in range(n):
            body = {"speaker": f"S{i % 2}", **{f: rng.standard_normal(w).round(4).tolist() for f, w in widths.items()}}
            start = time.perf_counter()
            r = client.post(f"/sessions/{session}/utterances", params={"explain": str(explain).lower()}, json=body)
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200:
                errors.append(f"session {k} utterance {i}: {r.status_code} {r.text[:200]}")
        client.delete(f"/sessions/{session}")  # a shared store (--store) keeps no slot taken for the next run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: train a tiny causal one on generated data)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions M")
    parser.add_argument("--utterances", type=int, default=200, help="utterances N streamed in all")
    parser.add_argument("--no-explain", dest="explain", action="store_false", help="skip explanations (cheaper)")
    parser.add_argument("--threads", type=int, default=1, help="the server's PyTorch threads (joyful serve --threads)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (joyful serve --workers)")
    parser.add_argument("--store", help="store to use (default: a fresh SQLite file); e.g. a postgresql:// URL")
    args = parser.parse_args()
    if args.sessions < 1 or args.utterances < args.sessions:
        parser.error("need at least one session and at least one utterance per session")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or train_tiny_model(Path(tmp))
        store = args.store or str(Path(tmp) / "store.sqlite")
        proc, url = start_server(model, store, args.sessions, args.threads, args.workers)
        try:
            info = httpx.get(f"{url}/model").json()
            per_session = [args.utterances // args.sessions + (k < args.utterances % args.sessions) for k in range(args.sessions)]
            latencies: list[float] = []
            errors: list[str] = []
            threads = [
                threading.Thread(target=stream_session, args=(url, k, n, info["widths"], args.explain, latencies, errors))
                for k, n in enumerate(per_session)
            ]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if not latencies:
        raise SystemExit(f"no request succeeded: {errors[:3]}")
    ms = sorted(1000 * x for x in latencies)
    print(json.dumps({
        "model": str(args.model) if args.model else "tiny causal model on generated data",
        "widths": info["widths"],
        "causal": info["causal"],
        "sessions": args.sessions,
        "utterances": len(latencies),
        "utterances_per_session": max(per_session),
        "explain": args.explain,
        "server_threads": args.threads,
        "workers": args.workers,
        "store": "postgresql" if args.store and args.store.startswith("postgresql") else "sqlite",
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1),
            "max": round(ms[-1], 1),
            "mean": round(statistics.fmean(ms), 1),
        },
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
