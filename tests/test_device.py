"""Devices and precision: what exists is used, what does not is refused in one line, outputs stay sane."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY
from joyful import Joyful, JoyfulConfig
from joyful.batching import collate, encode_dialogues
from joyful.benchmark.gridfile import Cell
from joyful.benchmark.run import check_resumable
from joyful.data.labels import resolve_label_set
from joyful.data.text_encoder import CACHE_TABLE
from joyful.errors import JoyfulError
from joyful.synthetic import generate_dialogues
from joyful.training.device import check_precision, resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def test_auto_is_cuda_when_present_else_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_missing_cuda_device_is_refused(name):
    with pytest.raises(JoyfulError, match="no CUDA device"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["gpu0", "tpu"])
def test_an_unknown_device_is_refused(name):
    with pytest.raises(JoyfulError, match="auto, cpu, cuda, cuda:N, mps"):
        resolve_device(name)


def test_fp16_needs_cuda_and_unknown_precisions_are_refused():
    with pytest.raises(JoyfulError, match="fp16.*CUDA"):
        check_precision("fp16", torch.device("cpu"))
    with pytest.raises(JoyfulError, match="precision"):
        JoyfulConfig(precision="fp8")


def test_batch_moves_every_tensor():
    ds = generate_dialogues(3, widths={"a": 4, "t": 5}, seed=1, min_length=2, max_length=4)
    encoded = encode_dialogues(ds, ("a", "t"), resolve_label_set("auto", ds))
    moved = collate(encoded, 2).to("meta")
    tensors = [*moved.x.values(), moved.speaker, moved.y, moved.lengths, moved.batch, moved.position]
    assert all(t.device.type == "meta" for t in tensors)
    assert moved.ids == [d.id for d in ds]


@no_cuda
def test_cli_refuses_a_missing_device_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "joyful.cli", "train", "--train", "x.jsonl", "--out", str(tmp_path / "m"), "--device", "cuda:1"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "joyful: error: device 'cuda:1': this machine has no CUDA device PyTorch can use (use --device cpu or auto)"
    ]
    assert not (tmp_path / "m").exists()


def test_bf16_inference_is_mixed_precision_and_close_to_fp32(tmp_path):
    ds = generate_dialogues(8, widths={"a": 6, "t": 8}, seed=2, signal=2.0)
    Joyful(JoyfulConfig(**{**TINY, "epochs": 2, "modalities": "at", "device": "cpu"})).fit(
        ds, ds, out_dir=tmp_path / "m", progress=False
    )
    full = Joyful.load(tmp_path / "m", device="cpu")
    half = Joyful.load(tmp_path / "m", device="cpu", precision="bf16")
    p32 = np.array([list(r["probabilities"].values()) for r in full.predict(ds)])
    p16 = np.array([list(r["probabilities"].values()) for r in half.predict(ds)])
    difference = np.abs(p32 - p16).max()
    assert 0 < difference < 0.05  # bf16 keeps 8 bits of mantissa: different, but not wrong
    np.testing.assert_allclose(p16.sum(1), 1, atol=1e-5)


def test_a_run_made_on_another_device_or_before_new_fields_still_counts_as_finished(tmp_path):
    cell = Cell("c", "default", None, None, {**JoyfulConfig(modalities="t").to_dict()}, 0.0)
    stored = cell.config(1).to_dict()
    stored["device"] = "cuda:3"
    del stored["finetune_folds"]  # a field added after the run was made, at its default
    record = {"config": stored, "eval_edge_noise": 0.0, "fold": None, "inputs": {}, "text_embeddings": CACHE_TABLE}
    check_resumable(record, cell, 1, {}, tmp_path)
    record["config"] = {**stored, "lr": 0.5}
    with pytest.raises(JoyfulError, match="differs from the grid file in lr"):
        check_resumable(record, cell, 1, {}, tmp_path)


def test_a_text_run_on_embeddings_from_before_the_reproducible_cache_is_not_resumed(tmp_path):
    """Same files, same config: only the embeddings' scheme tells an old run from a new one."""
    for modalities, refused in (("t", True), ("av", False)):
        cell = Cell("c", "default", None, None, JoyfulConfig(modalities=modalities).to_dict(), 0.0)
        record = {"config": cell.config(1).to_dict(), "eval_edge_noise": 0.0, "fold": None, "inputs": {}}
        if refused:
            with pytest.raises(JoyfulError, match="differs from the grid file in text embeddings"):
                check_resumable(record, cell, 1, {}, tmp_path)
        else:
            check_resumable(record, cell, 1, {}, tmp_path)  # no text: the scheme does not matter
        check_resumable({**record, "text_embeddings": CACHE_TABLE}, cell, 1, {}, tmp_path)
