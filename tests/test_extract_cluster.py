"""Extraction on Dask: byte-identical to a local run, resumable after a kill, clear errors without a cluster.

The recordings are made by PyAV (test_extract_decode's generators): face videos with a
voice, and a WAV, so the ffmpeg program is not needed.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from media_fixtures import write_manifest
from test_extract_decode import face_frames, voice, write_media, write_wav
from typer.testing import CliRunner

from joyful.errors import JoyfulError
from joyful.extract.runner import extract_dataset

distributed = pytest.importorskip("distributed")

#: The command as the CLI registers it (wrapped in _guard, so errors are one line and exit status 2).
COMMAND = """
import typer
from joyful.cli import _guard
from joyful.extract.command import extract_command
app = typer.Typer()
app.command()(_guard(extract_command))
app()
"""
OPTIONS = {"text_encoder": None, "audio_features": "librosa", "visual_features": "face", "fps": 2.0, "progress": False}
RESULTS = 12


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """12 results: four overlapping segments of a face video (audio + visual), a second video, two of a WAV."""
    folder = tmp_path_factory.mktemp("cluster-media")
    rate = 22_050
    write_media(folder / "face.mp4", frames=face_frames(2.0), audio=voice(2.0, rate)[None], rate=rate)
    write_media(folder / "face2.mp4", frames=face_frames(1.5, drift=-2), audio=voice(1.5, rate, 200)[None], rate=rate)
    write_wav(folder / "voice.wav", voice(2.5, rate, pitch=180), rate)
    rows = [
        {"dialogue": "v", "index": k, "speaker": "AB"[k % 2], "media": "face.mp4", "start": 0.2 * k, "end": 0.2 * k + 1}
        for k in range(4)
    ]
    rows.append({"dialogue": "w", "index": 0, "speaker": "A", "media": "face2.mp4"})
    rows += [
        {"dialogue": "s", "index": k, "speaker": "C", "media": "voice.wav", "start": 0.8 * k, "end": 0.8 * k + 1.5}
        for k in range(2)
    ]
    return write_manifest(folder / "manifest.csv", rows)


@pytest.fixture(scope="module")
def local_run(manifest, tmp_path_factory):
    """The reference: the local engine with two worker processes."""
    out = tmp_path_factory.mktemp("local") / "data.jsonl"
    report = extract_dataset(manifest, out, workers=2, engine="local", cache_dir=f"{out}.cache", **OPTIONS)
    assert sum(report.computed.values()) == RESULTS and not report.failures
    return out, report


def cached_results(cache) -> dict[str, int]:
    """Every finished result in ``cache``, by path, with its inode (a rewritten result gets a new one)."""
    return {str(p): p.stat().st_ino for p in cache.rglob("*.npy")} if cache.exists() else {}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", COMMAND, *args]


def test_dask_local_cluster_writes_the_local_runs_dataset_byte_for_byte(manifest, local_run, tmp_path):
    out, cache = tmp_path / "dask.jsonl", tmp_path / "dask-cache"
    args = ["--manifest", str(manifest), "--out", str(out), "--cache", str(cache), "--text-encoder", "none"]
    proc = subprocess.run(
        cli(*args, "--fps", "2", "--engine", "dask", "--workers", "2", "--quiet"), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["computed"] == local_run[1].computed and summary["failed"] == 0
    assert filecmp.cmp(local_run[0], out, shallow=False)
    assert len(cached_results(cache)) == RESULTS  # written by the Dask workers, not by the main process


def test_killed_dask_run_resumes_from_the_cache_on_a_running_scheduler(manifest, local_run, tmp_path):
    out, cache = tmp_path / "data.jsonl", tmp_path / "data.jsonl.cache"
    args = ["--manifest", str(manifest), "--out", str(out), "--text-encoder", "none", "--fps", "2", "--quiet"]
    proc = subprocess.Popen(
        cli(*args, "--engine", "dask", "--workers", "2"),
        start_new_session=True,  # its own process group: the run, its LocalCluster and the workers
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    try:
        while len(cached_results(cache)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # mid-work, with no chance to clean up
        _, stderr = proc.communicate()
    time.sleep(0.5)  # nothing of the killed run may still be writing
    before = cached_results(cache)
    assert 2 <= len(before) < RESULTS, f"the run should have been killed half-way ({len(before)} cached): {stderr!r}"
    assert not out.exists()

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        report = extract_dataset(
            manifest, out, workers=2, engine="dask", scheduler=cluster.scheduler_address, cache_dir=cache, **OPTIONS
        )
    assert sum(report.cached.values()) >= len(before)
    assert sum(report.computed.values()) + sum(report.cached.values()) == RESULTS and not report.failures
    after = cached_results(cache)
    assert {p: after[p] for p in before} == before  # the killed run's results were used, not recomputed
    assert filecmp.cmp(local_run[0], out, shallow=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_app():
    import typer

    from joyful.cli import _guard
    from joyful.extract.command import extract_command

    app = typer.Typer()
    app.command("extract")(_guard(extract_command))
    app.command("other")(lambda: None)  # two commands, so "extract" stays a subcommand as in the real CLI
    return app


def test_an_unreachable_scheduler_is_one_line_naming_it(manifest, tmp_path):
    import dask

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    args = ["extract", "--manifest", str(manifest), "--out", str(tmp_path / "x.jsonl"), "--text-encoder", "none"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = CliRunner().invoke(command_app(), [*args, "--engine", "dask", "--scheduler", address, "--quiet"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"joyful: error: cannot reach the Dask scheduler {address} (")
    assert not (tmp_path / "x.jsonl").exists()


def test_a_scheduler_without_workers_is_an_error_not_a_hang(manifest, tmp_path):
    import dask

    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(JoyfulError) as error:
            extract_dataset(
                manifest, tmp_path / "x.jsonl", engine="dask", scheduler=address, cache_dir=tmp_path / "c", **OPTIONS
            )
    assert str(error.value) == (
        f"the Dask scheduler {address} has no workers after 1 s (start them with: dask worker {address} --nthreads 1)"
    )


def test_without_dask_the_error_says_what_to_install(manifest, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: importing it fails
    with pytest.raises(JoyfulError, match=r"^--engine dask needs Dask distributed: pip install 'joyful\[cluster\]'$"):
        extract_dataset(manifest, tmp_path / "x.jsonl", engine="dask", cache_dir=tmp_path / "cache", **OPTIONS)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"engine": "spark"}, "--engine must be one of local, dask, got 'spark'"),
        ({"scheduler": "tcp://h:8786"}, "--scheduler tcp://h:8786 needs --engine dask"),
    ],
)
def test_bad_engine_settings(manifest, tmp_path, options, words):
    with pytest.raises(JoyfulError, match=words):
        extract_dataset(manifest, tmp_path / "x.jsonl", cache_dir=tmp_path / "cache", **OPTIONS, **options)
