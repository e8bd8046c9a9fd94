"""Data-parallel training with 2 CPU processes (gloo): sharding, identical weights, torchrun, a crashed rank."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from joyful import Joyful, JoyfulConfig
from joyful.batching import encode_dialogues, iterate_batches
from joyful.data.labels import resolve_label_set
from joyful.io.jsonl import write_jsonl
from joyful.synthetic import generate_dialogues

CONFIG = {"modalities": "at", "epochs": 12, "batch_size": 8, "ema_decay": 0.0, "device": "cpu", "patience": 50}


def _data(directory: Path, n_train: int = 24) -> tuple[Path, Path]:
    train = generate_dialogues(n_train, widths={"a": 6, "t": 8}, seed=1, signal=3.0, min_length=4, max_length=12)
    valid = generate_dialogues(10, widths={"a": 6, "t": 8}, seed=2, signal=3.0, min_length=4, max_length=12, prefix="v")
    for ds in (train, valid):
        for d in ds:
            d.texts = None  # vectors only: no text encoder needed
    write_jsonl(train.dialogues, directory / "train.jsonl")
    write_jsonl(valid.dialogues, directory / "valid.jsonl")
    return directory / "train.jsonl", directory / "valid.jsonl"


def test_the_ranks_share_each_batch_without_overlap():
    ds = generate_dialogues(11, widths={"a": 3}, seed=0, min_length=2, max_length=3)
    encoded = encode_dialogues(ds, ("a",), resolve_label_set("auto", ds))

    def batches(shard):
        return [(b.ids, b.loss_scale) for b in iterate_batches(
            encoded, 4, 2, shuffle=True, generator=torch.Generator().manual_seed(3), shard=shard)]

    whole = batches(None)
    parts = [batches((r, 3)) for r in range(3)]
    assert all(len(p) == len(whole) for p in parts)  # as many optimiser steps as one process
    for k, (ids, _) in enumerate(whole):
        mine = [parts[r][k] for r in range(3)]
        used = [i for ids_r, scale in mine if scale == 1.0 for i in ids_r]
        assert sorted(used) == sorted(ids)  # each dialogue of the batch once, on one rank
    # the last batch holds 3 dialogues of 11: every rank has one; with 4 ranks one gets a stand-in
    last = [b for b in iterate_batches(encoded, 4, 2, shuffle=False, shard=(3, 4))][-1]
    assert last.loss_scale == 0.0 and last.ids == [encoded[8].id]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, directory: str) -> None:
    from joyful.training import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.start(torch.device("cpu"))
    try:
        d = Path(directory)
        out = d / "model" if rank == 0 else None
        clf = Joyful(JoyfulConfig(**CONFIG)).fit(d / "train.jsonl", d / "valid.jsonl", out_dir=out, progress=False)
        torch.save(clf.model.state_dict(), d / f"rank-{rank}.pt")
    finally:
        distributed.stop()


def test_two_processes_end_with_identical_weights_and_score_like_one(tmp_path):
    train, valid = _data(tmp_path)
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    w0, w1 = torch.load(tmp_path / "rank-0.pt"), torch.load(tmp_path / "rank-1.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k  # all-reduced gradients and rank 0's BatchNorm statistics
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) >= ["history.csv", "meta.json", "model.pt"]

    single = Joyful(JoyfulConfig(**CONFIG)).fit(train, valid, progress=False)
    parallel = Joyful.load(tmp_path / "model", device="cpu")
    a, b = single.evaluate(valid), parallel.evaluate(valid)
    # Stated tolerance: the contrastive loss draws its negatives from each process's share of a
    # batch and BatchNorm statistics from rank 0's share, so the runs differ, as runs with
    # another seed do. On this data single-process models of seeds 24/25/26 score weighted F1
    # 0.61/0.55/0.62 and agree on 67-75% of the labels; the two-process model must stay
    # within 0.1 weighted F1 of the single-process one and agree on at least 60%.
    assert a["weighted_f1"] > 0.45 and abs(a["weighted_f1"] - b["weighted_f1"]) <= 0.1
    la = [r["label"] for r in single.predict(valid)]
    lb = [r["label"] for r in parallel.predict(valid)]
    assert np.mean([x == y for x, y in zip(la, lb)]) >= 0.6


def _torchrun(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "joyful", "train", "--device", "cpu", "--quiet", *args]


def test_torchrun_trains_and_only_rank_0_reports(tmp_path):
    train, valid = _data(tmp_path)
    result = subprocess.run(
        _torchrun(tmp_path, "--train", str(train), "--valid", str(valid), "--out", str(tmp_path / "m"),
                  "--modalities", "at", "--epochs", "3", "--batch-size", "8"),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epochs_run"] == 3
    assert len((tmp_path / "m" / "history.csv").read_text().splitlines()) == 4  # one header, 3 epochs, one writer
    assert Joyful.load(tmp_path / "m").evaluate(valid)["n_utterances"] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's process in /proc")
def test_a_crashed_rank_fails_the_run_instead_of_hanging(tmp_path):
    train, valid = _data(tmp_path, n_train=60)
    run = subprocess.Popen(
        _torchrun(tmp_path, "--train", str(train), "--valid", str(valid), "--out", str(tmp_path / "m"),
                  "--modalities", "at", "--epochs", "500", "--patience", "500", "--batch-size", "8"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "m" / "history.csv").exists():  # training is under way
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        victim = next(pid for pid in _children(run.pid) if "RANK=1" in _environment(pid))
        os.kill(victim, signal.SIGKILL)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert "rank      : 1" in stderr and "SIGKILL" in stderr  # torchrun names the rank that died


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _environment(pid: int) -> list[str]:
    try:
        return (Path("/proc") / str(pid) / "environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
