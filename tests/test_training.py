"""Training through the Python API: learning, determinism, checkpoints, label-set filtering."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.errors import DataError, JoyfulError
from joyful.io.jsonl import read_jsonl, write_jsonl
from joyful.synthetic import DEFAULT_LABELS, generate_dialogues
from joyful.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    clf = Joyful(JoyfulConfig(**TINY)).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=out, progress=False)
    return clf, out


def test_learns_planted_signal_well_above_chance(trained, data_dir):
    clf, out = trained
    metrics = Joyful.load(out).evaluate(data_dir / "test.jsonl")
    chance = 1 / len(DEFAULT_LABELS)
    assert metrics["accuracy"] > chance + 0.4, metrics
    assert metrics["weighted_f1"] > 0.5
    assert set(metrics["per_class_f1"]) == set(DEFAULT_LABELS)
    assert np.asarray(metrics["confusion_matrix"]).sum() == metrics["n_utterances"]


def test_same_seed_same_result(data_dir):
    def run():
        return Joyful(JoyfulConfig(**{**TINY, "epochs": 3})).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False)

    a, b = run(), run()
    assert [r.losses for r in a.result.history] == [r.losses for r in b.result.history]
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    c = Joyful(JoyfulConfig(**{**TINY, "epochs": 3, "seed": 7})).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False)
    assert [r.losses for r in a.result.history] != [r.losses for r in c.result.history]


def test_checkpoint_records_the_run(trained):
    clf, out = trained
    state, info = load_checkpoint(out)
    meta = json.loads((out / "meta.json").read_text())
    assert info.widths == WIDTHS and info.label_set.labels == DEFAULT_LABELS
    assert meta["seed"] == TINY.get("seed", 24) and meta["joyful_version"]
    assert set(meta["data_hash"]) == {"train", "valid"} and all(len(h) == 16 for h in meta["data_hash"].values())
    assert meta["best_epoch"] == clf.result.best_epoch
    assert meta["valid_metrics"]["weighted_f1"] == clf.result.best_valid["weighted_f1"]
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,seconds,loss_all,loss_ce,loss_mf,loss_ct,loss_kd,valid_loss,valid_accuracy")
    assert len(history) == 1 + len(clf.result.history)


def test_loaded_model_predicts_like_the_trained_one(trained, data_dir):
    clf, out = trained
    assert clf.predict(data_dir / "test.jsonl") == Joyful.load(out).predict(data_dir / "test.jsonl")


def test_predict_accepts_dialogues_in_memory(trained, data_dir):
    clf, _ = trained
    ds = read_jsonl(data_dir / "test.jsonl")
    for d in ds:
        d.labels = None
    rows = clf.predict(ds.dialogues[:2])
    assert len(rows) == len(ds.dialogues[0]) + len(ds.dialogues[1])
    assert rows[0]["dialogue"] == ds.dialogues[0].id and rows[0]["index"] == 0
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-4


def test_iemocap4_drops_exc_and_fru_at_train_and_test(tmp_path):
    ds = generate_dialogues(16, widths=WIDTHS, seed=5, signal=2.5)
    write_jsonl(ds.dialogues, tmp_path / "six.jsonl")
    clf = Joyful(JoyfulConfig(**{**TINY, "epochs": 2, "label_set": "iemocap4"})).fit(
        tmp_path / "six.jsonl", tmp_path / "six.jsonl", out_dir=tmp_path / "m", progress=False
    )
    kept = sum(lab not in ("exc", "fru") for d in ds for lab in d.labels)
    metrics = Joyful.load(tmp_path / "m").evaluate(tmp_path / "six.jsonl")
    assert metrics["n_utterances"] == kept and metrics["labels"] == ["hap", "sad", "neu", "ang"]
    rows = Joyful.load(tmp_path / "m").predict(tmp_path / "six.jsonl")
    assert len(rows) == kept
    first = ds.dialogues[0]
    expected = [i for i, lab in enumerate(first.labels) if lab not in ("exc", "fru")]
    assert [r["index"] for r in rows if r["dialogue"] == first.id] == expected
    assert clf.info.label_set.dropped == ("exc", "fru")


def test_label_the_model_does_not_know_is_an_error(trained, tmp_path):
    clf, _ = trained
    ds = generate_dialogues(2, widths=WIDTHS, seed=9)
    ds.dialogues[1].labels[3] = "bored"
    write_jsonl(ds.dialogues, tmp_path / "odd.jsonl")
    with pytest.raises(DataError) as e:
        clf.evaluate(tmp_path / "odd.jsonl")
    assert "'bored'" in str(e.value) and ds.dialogues[1].id in str(e.value) and "label" in str(e.value)


def test_text_only_dialogues_are_encoded(tmp_path):
    ds = generate_dialogues(6, widths={"a": 4}, seed=3, min_length=3, max_length=5)
    for d in ds:
        d.features = {}
    write_jsonl(ds.dialogues, tmp_path / "text.jsonl")
    cfg = JoyfulConfig(**{**TINY, "epochs": 1, "modalities": "t"})
    clf = Joyful(cfg).fit(tmp_path / "text.jsonl", tmp_path / "text.jsonl", progress=False)
    assert clf.info.widths == {"t": 384}


def test_finetuned_text_encoder_is_saved_with_the_model_and_used_at_load(tmp_path):
    ds = generate_dialogues(6, widths={"a": 4}, seed=4, min_length=3, max_length=5)
    for d in ds:
        d.features = {}
        d.texts = [f"I feel {lab} today, {i}" for i, lab in enumerate(d.labels)]
    write_jsonl(ds.dialogues, tmp_path / "text.jsonl")
    cfg = JoyfulConfig(**{**TINY, "epochs": 1, "modalities": "t", "finetune_text_encoder": True, "finetune_epochs": 1,
                          "text_context": 2, "finetune_max_tokens": 32})
    clf = Joyful(cfg).fit(tmp_path / "text.jsonl", tmp_path / "text.jsonl", out_dir=tmp_path / "m", progress=False)
    assert (tmp_path / "m" / "text-encoder" / "modules.json").exists()
    loaded = Joyful.load(tmp_path / "m")
    assert loaded.text_encoder_dir == tmp_path / "m" / "text-encoder"
    assert loaded.predict(tmp_path / "text.jsonl") == clf.predict(tmp_path / "text.jsonl")


def test_fit_leaves_the_callers_dialogues_unchanged(tmp_path):
    ds = generate_dialogues(4, widths={"a": 4}, seed=3, min_length=3, max_length=5)
    for d in ds:
        d.features = {}
    Joyful(JoyfulConfig(**{**TINY, "epochs": 1, "modalities": "t"})).fit(ds, ds, progress=False)
    assert all(d.features == {} for d in ds)  # a second model with another encoder must not see stale vectors


def test_noisy_edge_evaluation_is_repeatable_and_leaves_global_rng_alone(trained, data_dir):
    clf, _ = trained
    torch.manual_seed(123)
    state = torch.get_rng_state()
    noisy = [clf.evaluate(data_dir / "test.jsonl", edge_noise=0.5, with_predictions=True) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    assert noisy[0]["y_pred"] == noisy[1]["y_pred"]
    clean = clf.evaluate(data_dir / "test.jsonl", with_predictions=True)
    assert clean["y_pred"] != noisy[0]["y_pred"]  # the random edges do change some predictions


def test_moving_average_of_weights_is_what_training_keeps(data_dir, monkeypatch):
    """ema_decay: the kept weights are e_1 = w_1, e_k = d·e_{k−1} + (1 − d)·w_k over the optimiser steps.

    The reference replays the raw run (ema_decay 0, same seed: the average never changes
    the live weights) and averages its per-step weights by hand, BatchNorm statistics too.
    """
    steps: list[dict[str, torch.Tensor]] = []
    real_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        steps.append({k: v.detach().clone() for k, v in model_ref[0].state_dict().items()})
        return out

    cfg = JoyfulConfig(**{**TINY, "epochs": 2, "batch_size": 8})
    train_set = read_jsonl(data_dir / "train.jsonl")
    model_ref: list = []
    raw = Joyful(cfg)
    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    import joyful.training.members as members_module

    real_build = members_module.build_model

    def build_and_remember(*args):
        model_ref.append(real_build(*args))
        return model_ref[-1]

    monkeypatch.setattr(members_module, "build_model", build_and_remember)
    raw.fit(train_set, progress=False)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    assert len(steps) == 2 * 6  # 48 dialogues in batches of 8, two epochs

    d = 0.8
    expected = dict(steps[0])
    for w in steps[1:]:
        expected = {k: d * expected[k] + (1 - d) * w[k] if w[k].is_floating_point() else w[k] for k in w}
    averaged = Joyful(cfg.replace(ema_decay=d)).fit(train_set, progress=False)
    got = averaged.model.state_dict()
    for name in ("classifier.0.weight", "encoder.project.weight", "encoder.norms.0.running_mean"):
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got["classifier.0.weight"], steps[-1]["classifier.0.weight"])  # not the last raw step


def test_validation_loss_is_the_cross_entropy_of_the_uncalibrated_outputs(trained, data_dir):
    clf, _ = trained
    m = clf.evaluate(data_dir / "test.jsonl", with_predictions=True)
    p = np.asarray(m["y_uncalibrated"])
    nll = -np.mean(np.log(p[np.arange(len(p)), m["y_true"]]))
    assert m["loss"] == pytest.approx(nll, rel=1e-4)


def test_early_stopping_keeps_the_epoch_of_its_criterion(data_dir):
    # no early stop (patience > epochs): the kept epoch is the history's best by the criterion,
    # and the weights left loaded score it again on the validation data. Where each criterion
    # peaks depends on the machine's arithmetic, so that they are told apart is checked below.
    for select_by, key, best in (("score", "weighted_f1", max), ("loss", "loss", min)):
        cfg = JoyfulConfig(**{**TINY, "epochs": 8, "patience": 20, "lr": 2e-2, "select_by": select_by,
                              "calibrate": False})
        clf = Joyful(cfg).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False)
        values = [r.valid[key] for r in clf.result.history]
        assert clf.result.best_epoch == values.index(best(values)) + 1
        assert clf.evaluate(data_dir / "valid.jsonl")[key] == pytest.approx(best(values), rel=1e-5)


def test_the_two_criteria_keep_different_epochs_when_they_disagree(data_dir, monkeypatch):
    """Validation scores scripted so weighted F1 peaks at epoch 2 and the loss is lowest at epoch 5."""
    import joyful.training.loop as loop

    f1, loss = [0.3, 0.6, 0.5, 0.4, 0.45, 0.2], [1.5, 1.2, 1.1, 1.0, 0.9, 1.3]
    real = loop.evaluate_encoded

    def scripted(*args, **kwargs):
        out = real(*args, **kwargs)
        epoch = scripted.calls % len(f1)
        scripted.calls += 1
        return {**out, "weighted_f1": f1[epoch], "loss": loss[epoch]}

    monkeypatch.setattr(loop, "evaluate_encoded", scripted)
    for select_by, expected in (("score", 2), ("loss", 5)):
        scripted.calls = 0
        cfg = JoyfulConfig(**{**TINY, "epochs": len(f1), "patience": 20, "select_by": select_by, "calibrate": False})
        clf = Joyful(cfg).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False)
        assert clf.result.best_epoch == expected


def test_select_by_must_be_score_or_loss():
    with pytest.raises(JoyfulError, match="select_by"):
        JoyfulConfig(select_by="f1")
