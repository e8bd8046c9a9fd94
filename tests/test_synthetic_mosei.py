"""The CMU-MOSEI-shaped generator: shapes, label kinds, and a signal that a linear model can find."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score

from joyful.errors import JoyfulError
from joyful.synthetic_mosei import generate_mosei

EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")  # CMU-MOSEI's, in its label order


def features(ds, modalities="tav") -> np.ndarray:
    return np.vstack([np.hstack([d.features[m] for m in modalities]) for d in ds])


def labels(ds) -> list:
    return [lab for d in ds for lab in d.labels]


def test_default_widths_are_mosei_and_overridable():
    ds = generate_mosei(3, seed=0)
    ds.validate()
    assert ds.widths() == {"a": 74, "v": 35, "t": 768}
    assert generate_mosei(2, widths={"t": 20, "a": 5}, seed=0).widths() == {"t": 20, "a": 5}
    assert all(x.dtype == np.float32 for d in ds for x in d.features.values())


def test_one_speaker_per_video_and_segment_counts():
    ds = generate_mosei(30, min_segments=2, max_segments=5, seed=4, prefix="train-")
    assert len({d.id for d in ds}) == 30 and all(d.id.startswith("train-") for d in ds)
    for d in ds:
        assert set(d.speakers) == {d.id}
        assert 2 <= len(d) <= 5 and len(d.texts) == len(d.labels) == len(d)
    assert {len(d) for d in ds} == {2, 3, 4, 5}


def test_multilabel_labels_are_tuples_of_emotions_in_order():
    found = labels(generate_mosei(60, seed=1))
    assert all(isinstance(lab, tuple) for lab in found)
    for lab in found:
        assert list(lab) == [e for e in EMOTIONS if e in lab]  # known names, no repeats, MOSEI order
    present = np.array([[e in lab for e in EMOTIONS] for lab in found]).mean(axis=0)
    assert np.all(present > 0.05) and np.all(present < 0.7), present  # every emotion occurs, none always
    assert 0 < np.mean([lab == () for lab in found]) < 0.5  # some segments show no emotion


def test_regression_labels_are_sentiment_in_thirds():
    found = np.array(labels(generate_mosei(60, task="regression", seed=1)))
    assert all(type(x) is float for x in found.tolist())
    assert found.min() >= -3 and found.max() <= 3
    assert np.allclose(found * 3, np.round(found * 3))
    assert (found < 0).mean() > 0.2 and (found > 0).mean() > 0.2 and len(set(found.tolist())) > 10


def test_classification_is_refused():
    with pytest.raises(JoyfulError, match="multilabel or regression"):
        generate_mosei(2, task="classification")


def test_mood_persists_along_a_video_so_context_helps():
    ds = generate_mosei(80, task="regression", seed=2)
    pairs = np.array([(d.labels[i], d.labels[i + 1]) for d in ds for i in range(len(d) - 1)])
    assert np.corrcoef(pairs.T)[0, 1] > 0.5
    # across videos there is no such link: the first segments of neighbouring videos are unrelated
    firsts = np.array([d.labels[0] for d in ds])
    assert abs(np.corrcoef(firsts[:-1], firsts[1:])[0, 1]) < 0.3


def test_sentiment_is_learnable_across_seeds_and_text_is_strongest():
    train = generate_mosei(120, task="regression", seed=10)
    test = generate_mosei(40, task="regression", seed=11)
    y, y_test = np.array(labels(train)), np.array(labels(test))
    constant = np.abs(y_test - np.median(y)).mean()
    mae = {}
    for modalities in ("tav", "t", "v"):
        model = Ridge(alpha=100.0).fit(features(train, modalities), y)
        mae[modalities] = np.abs(np.clip(model.predict(features(test, modalities)), -3, 3) - y_test).mean()
    assert mae["tav"] < 0.7 * constant, (mae, constant)
    assert mae["t"] < mae["v"] < constant, (mae, constant)


def test_emotions_are_learnable_across_seeds():
    train, test = generate_mosei(120, seed=20), generate_mosei(40, seed=21)
    y = np.array([[e in lab for e in EMOTIONS] for lab in labels(train)])
    y_test = np.array([[e in lab for e in EMOTIONS] for lab in labels(test)])
    x, x_test = features(train), features(test)
    predicted = np.column_stack([LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000).fit(x, y[:, k]).predict(x_test) for k in range(6)])
    learnt = f1_score(y_test, predicted, average=None)
    # the best constant decision for F1 is "always present": F1 = 2p / (1 + p) for prevalence p
    constant = 2 * y_test.mean(axis=0) / (1 + y_test.mean(axis=0))
    assert np.all(learnt > constant + 0.1), (learnt, constant)


def test_same_seed_same_data_other_seed_other_data():
    def snapshot(seed):
        ds = generate_mosei(5, task="regression", seed=seed)
        return [d.id for d in ds], [d.labels for d in ds], np.vstack([d.features["t"] for d in ds])

    a, b, c = snapshot(7), snapshot(7), snapshot(8)
    assert a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2])
    assert a[1] != c[1] and (a[2].shape != c[2].shape or not np.allclose(a[2], c[2]))
