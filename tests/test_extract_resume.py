"""A run killed with SIGKILL half-way resumes from its cache to the very dataset an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from media_fixtures import shared_corpus, write_manifest

from joyful.extract.runner import extract_dataset

#: The command as the CLI registers it, runnable before (and independently of) the CLI's wiring.
COMMAND = """
import typer
from joyful.cli import _guard
from joyful.extract.command import extract_command
app = typer.Typer()
app.command()(_guard(extract_command))
app()
"""


@pytest.fixture(scope="module")
def long_manifest(tmp_path_factory):
    """12 results: four overlapping segments of the face video (audio + visual) and four of a speech file."""
    corpus = shared_corpus(tmp_path_factory)
    rows = [
        {
            "dialogue": "video",
            "index": k,
            "speaker": "AB"[k % 2],
            "media": "face.mp4",
            "start": 0.2 * k,
            "end": 0.2 * k + 1.0,
        }
        for k in range(4)
    ] + [
        {"dialogue": "speech", "index": k, "speaker": "C", "media": "gb.wav", "start": 0.5 * k, "end": 0.5 * k + 1.2}
        for k in range(4)
    ]
    return write_manifest(corpus["us"].parent / "long.csv", rows)


def cached_results(cache) -> int:
    return sum(1 for _ in cache.rglob("*.npy")) if cache.exists() else 0


def test_killed_run_resumes_to_the_same_dataset(long_manifest, tmp_path):
    options = {
        "text_encoder": None,
        "audio_features": "librosa",
        "visual_features": "face",
        "fps": 2.0,
        "progress": False,
    }
    reference = tmp_path / "reference.jsonl"
    extract_dataset(long_manifest, reference, workers=1, cache_dir=tmp_path / "reference-cache", **options)

    out, cache = tmp_path / "data.jsonl", tmp_path / "data.jsonl.cache"
    args = [
        "--manifest",
        str(long_manifest),
        "--out",
        str(out),
        "--text-encoder",
        "none",
        "--fps",
        "2",
        "--workers",
        "2",
        "--quiet",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMAND, *args], start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    try:
        while cached_results(cache) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes, mid-work
        proc.communicate()
    done = cached_results(cache)
    assert 2 <= done < 12, f"the run should have been killed half-way, with {done} of 12 results cached"
    assert not out.exists()

    report = extract_dataset(long_manifest, out, workers=1, cache_dir=cache, **options)
    assert report.cached["a"] + report.cached["v"] >= done
    assert sum(report.computed.values()) + sum(report.cached.values()) == 12 and not report.failures
    got, want = out.read_bytes(), reference.read_bytes()
    # Worker-process results equal in-process ones, bit for bit. (Compared by position, not with
    # pytest's diff of two large byte strings, which takes many minutes when they differ.)
    first = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), None if len(got) == len(want) else min(len(got), len(want)))
    assert first is None, f"datasets differ from byte {first}: {got[max(0, first - 40):first + 40]!r} vs {want[max(0, first - 40):first + 40]!r}"
