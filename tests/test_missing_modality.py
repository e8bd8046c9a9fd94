"""Missing modalities: NaN rows in, learned stand-ins in the model, predictions for every utterance."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.batching import collate, encode_dialogues
from joyful.data.labels import LabelSet
from joyful.data.schema import Dialogue
from joyful.errors import DataError
from joyful.io.jsonl import write_jsonl
from joyful.model import JoyfulModel
from joyful.nn.missing import MissingModality
from joyful.synthetic import DEFAULT_LABELS, generate_dialogues


def hide(ds, modality: str, fraction: float, seed: int):
    """Mark ``fraction`` of the utterances as lacking ``modality`` (NaN rows)."""
    rng = np.random.default_rng(seed)
    for d in ds:
        d.features[modality][rng.random(len(d)) < fraction] = np.nan
    return ds


def test_stand_in_replaces_only_missing_rows_and_gets_gradient():
    layer = MissingModality({"a": 3}, ("a",))
    with torch.no_grad():
        layer.embedding["a"].copy_(torch.tensor([7.0, 8.0, 9.0]))
    x = torch.tensor([[1.0, 2.0, 3.0], [float("nan")] * 3])
    out = layer({"a": x})["a"]
    assert out.tolist() == [[1.0, 2.0, 3.0], [7.0, 8.0, 9.0]]
    out.sum().backward()
    assert layer.embedding["a"].grad.tolist() == [1.0, 1.0, 1.0]


def test_modality_dropout_hides_present_rows_only_while_training():
    layer = MissingModality({"a": 2}, ("a",), dropout=0.5)
    x = torch.ones(1000, 2)
    hidden = (layer.train()({"a": x})["a"] == 0).all(-1).float().mean()
    assert 0.4 < hidden < 0.6
    assert torch.equal(layer.eval()({"a": x})["a"], x)


def test_model_gives_finite_logits_and_losses_with_missing_rows():
    labels = LabelSet("six", DEFAULT_LABELS)
    ds = hide(generate_dialogues(3, widths=WIDTHS, seed=1), "v", 0.5, 0)
    for d in ds:  # one utterance with nothing at all
        d.features["a"][0] = np.nan
        d.features["t"][0] = np.nan
        d.features["v"][0] = np.nan
    batch = collate(encode_dialogues(ds, ("v", "a", "t"), labels), 3)
    cfg = JoyfulConfig(**TINY)
    model = JoyfulModel(cfg, WIDTHS, len(DEFAULT_LABELS), 3).train()
    out = model(batch)
    assert torch.isfinite(out.logits).all() and all(torch.isfinite(v) for v in out.losses.values())
    out.losses["all"].backward()
    assert model.missing.embedding["v"].grad.abs().sum() > 0


@pytest.fixture(scope="module")
def trained_with_gaps(tmp_path_factory):
    """A model trained on data where 40% of utterances have no visual and 20% no audio."""
    d = tmp_path_factory.mktemp("gaps")
    for name, n, seed in (("train", 48, 1), ("valid", 12, 2), ("test", 12, 3)):
        ds = generate_dialogues(n, widths=WIDTHS, seed=seed, speakers=(1, 3), signal=2.5, prefix=f"{name}-")
        hide(hide(ds, "v", 0.4, seed), "a", 0.2, seed + 10)
        write_jsonl(ds.dialogues, d / f"{name}.jsonl")
    clf = Joyful(JoyfulConfig(**TINY)).fit(d / "train.jsonl", d / "valid.jsonl", progress=False)
    return clf, d


def test_learns_with_missing_modalities(trained_with_gaps):
    clf, d = trained_with_gaps
    metrics = clf.evaluate(d / "test.jsonl")
    assert metrics["accuracy"] > 1 / len(DEFAULT_LABELS) + 0.3, metrics
    assert clf.model.missing.embedding["v"].abs().sum() > 0  # the stand-in was learned


def test_every_utterance_gets_a_prediction_without_video_or_audio(trained_with_gaps):
    clf, _ = trained_with_gaps
    ds = generate_dialogues(2, widths=WIDTHS, seed=9, signal=2.5)
    no_video = Dialogue("no-video", ds.dialogues[0].speakers, {m: ds.dialogues[0].features[m] for m in "at"})
    audio_gaps = hide(generate_dialogues(1, widths=WIDTHS, seed=11, prefix="gaps-"), "a", 1.0, 0).dialogues[0]
    with pytest.warns(UserWarning, match="visual"):
        rows = clf.predict([no_video])
    assert len(rows) == len(no_video) and all(r["label"] in DEFAULT_LABELS for r in rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a modality missing on some utterances only is not worth a warning
        rows = clf.predict([audio_gaps, ds.dialogues[1]])
    assert len(rows) == len(audio_gaps) + len(ds.dialogues[1])
    assert all(np.isfinite(list(r["probabilities"].values())).all() for r in rows)


def test_missing_modality_changes_the_prediction_input(trained_with_gaps):
    """Hiding the visual must be seen by the model (not silently zero-filled into the same output)."""
    clf, _ = trained_with_gaps
    d = generate_dialogues(1, widths=WIDTHS, seed=12, signal=2.5).dialogues[0]
    full = clf.predict([d])
    hidden = Dialogue(d.id, d.speakers, {**d.features, "v": np.full_like(d.features["v"], np.nan)})
    with pytest.warns(UserWarning):
        partial = clf.predict([hidden])
    assert [r["probabilities"] for r in full] != [r["probabilities"] for r in partial]


def test_training_data_without_any_value_of_a_modality_is_refused(tmp_path):
    ds = hide(generate_dialogues(6, widths=WIDTHS, seed=1), "v", 1.0, 0)
    write_jsonl(ds.dialogues, tmp_path / "train.jsonl")
    with pytest.raises(DataError, match="no utterance has visual vectors") as e:
        Joyful(JoyfulConfig(**{**TINY, "epochs": 1})).fit(tmp_path / "train.jsonl", progress=False)
    assert e.value.field == "visual"


def test_empty_text_is_a_missing_text(tmp_path):
    from joyful.data.schema import DialogueSet
    from joyful.data.text_features import ensure_text_features

    class Fake:
        name = "fake"

        def encode(self, texts):
            return np.ones((len(texts), 4), dtype=np.float32)

    d = Dialogue("x", ["A", "B", "A"], texts=["hello", "  ", "bye"])
    ensure_text_features(DialogueSet([d], "mem"), Fake())
    assert np.isnan(d.features["t"][1]).all() and np.isfinite(d.features["t"][[0, 2]]).all()
