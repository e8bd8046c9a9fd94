"""The real text-only data shipped beside the repository (skipped where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from joyful.data.labels import IEMOCAP6, MELD7
from joyful.io import read_dialogues

SHARED = Path(os.environ.get("JOYFUL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def shared(relative: str) -> str:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return str(path)


def test_iemocap_text_train():
    ds = read_dialogues(shared("iemocap-text/train.jsonl"))
    assert len(ds) == 108
    assert set(ds.labels_found()) <= set(IEMOCAP6.labels)
    assert all(d.texts is not None and d.labels is not None and not d.features for d in ds)


def test_iemocap_text_valid():
    assert len(read_dialogues(shared("iemocap-text/valid.jsonl"), role="valid")) == 12


@pytest.mark.parametrize("name", ["train_sent_emo.csv", "dev_sent_emo.csv"])
def test_meld_csv(name):
    ds = read_dialogues(shared(f"meld/{name}"))
    assert len(ds) > 100
    assert set(ds.labels_found()) == set(MELD7.labels)
    assert all(d.texts and len(d.texts) == len(d) for d in ds)
