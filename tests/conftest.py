"""Shared fixtures: small generated datasets and a small, fast model configuration."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from joyful.io.jsonl import write_jsonl
from joyful.synthetic import generate_dialogues

#: A small model so a training run takes seconds; the architecture is the full one.
TINY = {
    "global_attention_dim": 16,
    "global_ff": 32,
    "specific_dim": 24,
    "n_bases": 8,
    "gnn_hidden": 16,
    "gnn_heads": 2,
    "classifier_hidden": 16,
    "lr": 3e-3,
    "batch_size": 4,
    "epochs": 20,
    "patience": 20,
}
WIDTHS = {"t": 12, "a": 6, "v": 8}


#: The ablations of :func:`grid_text` unless a test gives its own: the second only adds test-time edge noise.
GRID_ABLATIONS = """joyful = {}
noisy = { eval_edge_noise = 0.5 }"""


def grid_text(epochs: int = 2, keep_models: bool = False, *, reference: str = "joyful", ablations: str = GRID_ABLATIONS) -> str:
    """A grid file of the TINY model: its ``ablations`` (TOML lines) × two seeds on generated data."""
    base = "\n".join(f"{k} = {v!r}" for k, v in {**TINY, "epochs": epochs, "patience": epochs}.items())
    return f"""
seeds = [1, 2]
reference = "{reference}"
threads = 1
keep_models = {str(keep_models).lower()}

[data.synthetic]
n_train = 12
n_valid = 4
n_test = 4
widths = {{ t = 12, a = 6, v = 8 }}
signal = 2.5

[base]
modalities = "atv"
{base}

[ablations]
{ablations}
"""


@pytest.fixture(scope="session", autouse=True)
def compiled_audio_code(tmp_path_factory):
    """Under pytest-xdist, librosa's numba code is compiled by one worker at a time, before any test.

    Processes compiling it at once race on numba's on-disk cache and crash later ones (see
    :func:`joyful.extract.audio.warm_up`); after this, every process of the run, the
    extraction commands' included, only reads that cache.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ or importlib.util.find_spec("librosa") is None:
        return
    from joyful.extract import DEFAULT_AUDIO_FEATURES
    from joyful.extract.audio import warm_up

    with open(tmp_path_factory.getbasetemp().parent / "numba-warm-up.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        warm_up(DEFAULT_AUDIO_FEATURES)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and the suite then does not fight other work for cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """train/valid/test JSONL files with three modalities and a planted signal."""
    d = tmp_path_factory.mktemp("data")
    for name, n, seed in (("train", 48, 1), ("valid", 12, 2), ("test", 12, 3)):
        ds = generate_dialogues(n, widths=WIDTHS, seed=seed, speakers=(1, 3), signal=2.5, prefix=f"{name}-")
        write_jsonl(ds.dialogues, d / f"{name}.jsonl")
    return d


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture
def fit_seeds(monkeypatch) -> list[int]:
    """The seed of every ``Joyful.fit`` call from here on (each still trains), in call order."""
    from joyful import Joyful

    seeds: list[int] = []
    original = Joyful.fit

    def counting_fit(self, *args, **kwargs):
        seeds.append(self.config.seed)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Joyful, "fit", counting_fit)
    return seeds
