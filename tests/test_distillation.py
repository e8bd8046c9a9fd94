"""Distillation: the loss term against NumPy, the teacher's targets, the student following its
teacher, the refusals, and a grid whose cell learns from another cell's kept models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY, WIDTHS, grid_text
from joyful.api import Joyful
from joyful.batching import collate, encode_dialogues
from joyful.benchmark.gridfile import load_grid
from joyful.cli import app
from joyful.config import JoyfulConfig
from joyful.errors import JoyfulError
from joyful.data.labels import IEMOCAP6
from joyful.io.jsonl import write_jsonl
from joyful.model import JoyfulModel
from joyful.nn.distillation import distillation_loss
from joyful.synthetic import DEFAULT_LABELS, generate_dialogues
from joyful.training.inference import predict_logits


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_distillation_loss_is_t_squared_kl_over_the_known_rows():
    rng = np.random.default_rng(0)
    logits, teacher = rng.normal(size=(5, 4)), _softmax(rng.normal(size=(5, 4)) / 2.0)
    known = np.array([True, False, True, True, False])
    for t in (1.0, 2.5):
        q = _softmax(logits[known] / t)
        expected = t * t * np.mean(np.sum(teacher[known] * (np.log(teacher[known]) - np.log(q)), axis=1))
        got = distillation_loss(torch.tensor(logits), torch.tensor(teacher), torch.tensor(known), t)
        assert float(got) == pytest.approx(expected, rel=1e-6)
    same = distillation_loss(torch.tensor(np.log(teacher)), torch.tensor(teacher), torch.ones(5, dtype=torch.bool), 1.0)
    assert abs(float(same)) < 1e-6, "a student that already says what the teacher says has nothing to learn"
    none = distillation_loss(torch.tensor(logits, requires_grad=True), torch.tensor(teacher), torch.zeros(5, dtype=torch.bool), 1.0)
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_the_model_adds_the_weighted_term_in_training_only():
    data = generate_dialogues(4, widths=WIDTHS, seed=3, speakers=(2, 2))
    cfg = JoyfulConfig(**{**TINY, "distill_weight": 0.7, "distill_temperature": 2.0})
    encoded = encode_dialogues(data, cfg.modality_order, IEMOCAP6)
    model = JoyfulModel(cfg, WIDTHS, len(DEFAULT_LABELS), n_speakers=2)
    batch = collate(encoded, 2)
    rng = np.random.default_rng(1)
    batch.teacher_probs = torch.tensor(_softmax(rng.normal(size=(batch.n_nodes, len(DEFAULT_LABELS)))), dtype=torch.float32)
    model.train()
    torch.manual_seed(0)
    out = model(batch)
    known = (batch.y >= 0).numpy()
    q = _softmax(out.logits.detach().double().numpy()[known] / 2.0)
    p = batch.teacher_probs.double().numpy()[known]
    expected_kd = 4.0 * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    assert float(out.losses["kd"].detach()) == pytest.approx(expected_kd, rel=1e-5)
    total = cfg.alpha * out.losses["mf"] + cfg.beta * out.losses["ct"] + out.losses["ce"] + 0.7 * out.losses["kd"]
    assert float(out.losses["all"].detach()) == pytest.approx(float(total.detach()), rel=1e-6)
    model.eval()
    assert float(model(batch).losses["kd"]) == 0.0, "validation and test losses never read a teacher"


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two small teachers with different seeds on generated data, and the files they learnt from."""
    d = tmp_path_factory.mktemp("distil")
    for name, n, seed in (("train", 24, 11), ("valid", 8, 12)):
        write_jsonl(generate_dialogues(n, widths=WIDTHS, seed=seed, speakers=(1, 3), signal=2.5).dialogues, d / f"{name}.jsonl")
    fitted = [
        Joyful(JoyfulConfig(**{**TINY, "epochs": 6, "seed": s})).fit(d / "train.jsonl", d / "valid.jsonl", progress=False)
        for s in (1, 2)
    ]
    return d, fitted


def test_the_targets_are_the_teachers_mean_probabilities_at_the_temperature(teachers, monkeypatch):
    d, fitted = teachers
    seen = {}
    import joyful.api as api

    real = api.with_teacher_probabilities

    def spy(encoded, data, ts, temperature, progress=False):
        seen["out"] = real(encoded, data, ts, temperature, progress)
        return seen["out"]

    monkeypatch.setattr(api, "with_teacher_probabilities", spy)
    Joyful(JoyfulConfig(**{**TINY, "epochs": 1, "distill_temperature": 3.0})).fit(
        d / "train.jsonl", d / "valid.jsonl", teacher=fitted, progress=False
    )
    for k, dialogue in enumerate(seen["out"]):
        zs = []
        for t in fitted:
            enc = t._encode(t.prepare(d / "train.jsonl", role="train", label_set=t.info.label_set))
            zs.append(predict_logits(t.model, [enc[k]], 4)[0].astype(np.float64))
        expected = np.mean([_softmax(z / 3.0) for z in zs], axis=0)
        np.testing.assert_allclose(dialogue.teacher_probs.numpy(), expected, atol=1e-6)


def test_a_heavily_distilled_student_follows_its_teacher_not_the_labels(teachers, tmp_path):
    """The teacher learnt shifted labels (class c stands for class c+1); a student weighting the
    teacher 30 times its labels must predict mostly what the teacher predicts, a student without
    a teacher mostly the true labels. Miswired targets (unaligned, unused) break this."""
    d, _ = teachers
    names = list(IEMOCAP6.labels)
    rows = [json.loads(line) for line in (d / "train.jsonl").read_text().splitlines()]
    for r in rows:
        for u in r["utterances"]:
            u["label"] = names[(names.index(u["label"]) + 1) % len(names)]
    shifted = tmp_path / "shifted.jsonl"
    shifted.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {**TINY, "epochs": 15, "patience": 15}
    teacher = Joyful(JoyfulConfig(**{**cfg, "seed": 5})).fit(shifted, None, progress=False)

    def agreement(model: Joyful, reference: Joyful) -> float:
        a = [r["label"] for r in model.predict(d / "train.jsonl")]
        b = [r["label"] for r in reference.predict(d / "train.jsonl")]
        return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))

    student = Joyful(JoyfulConfig(**{**cfg, "seed": 6, "distill_weight": 30.0})).fit(
        d / "train.jsonl", None, teacher=teacher, progress=False
    )
    plain = Joyful(JoyfulConfig(**{**cfg, "seed": 6})).fit(d / "train.jsonl", None, progress=False)
    assert agreement(student, teacher) > 0.6 > agreement(plain, teacher)
    assert student.info.extra["teachers"] == [{"seed": 5, "members": 1, "data_hash": teacher.info.extra["data_hash"]}]


def test_teachers_that_cannot_teach_are_refused(teachers, tmp_path):
    d, fitted = teachers
    other_labels = Joyful(JoyfulConfig(**{**TINY, "epochs": 1, "label_set": "iemocap4"}))
    other_labels.fit(d / "train.jsonl", None, progress=False)
    with pytest.raises(JoyfulError, match="a teacher must have the student's labels"):
        Joyful(JoyfulConfig(**{**TINY, "epochs": 1})).fit(d / "train.jsonl", None, teacher=other_labels, progress=False)
    with pytest.raises(JoyfulError, match="context-lr"):
        Joyful(JoyfulConfig(**{**TINY, "architecture": "context-lr", "fusion": "concat", "use_gcl": False})).fit(
            d / "train.jsonl", None, teacher=fitted[0], progress=False
        )
    with pytest.raises(JoyfulError, match="distill_temperature"):
        JoyfulConfig(distill_temperature=0.0)
    with pytest.raises(JoyfulError, match="distill_weight"):
        JoyfulConfig(distill_weight=-1.0)


def test_train_command_distils_from_a_saved_model(teachers, tmp_path):
    d, fitted = teachers
    fitted[0].save(tmp_path / "teacher")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "epochs": 2}))
    result = CliRunner().invoke(app, [
        "train", "--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl"), "--out", str(tmp_path / "student"),
        "--config", str(config), "--teacher", str(tmp_path / "teacher"), "--distill-weight", "2", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "student" / "meta.json").read_text())
    assert meta["teachers"][0]["seed"] == fitted[0].info.extra["seed"]
    assert meta["config"]["distill_weight"] == 2.0
    history = (tmp_path / "student" / "history.csv").read_text().splitlines()
    kd = [float(row.split(",")[history[0].split(",").index("loss_kd")]) for row in history[1:]]
    assert all(v > 0 for v in kd)


def _grid(tmp_path, keep_models: bool = True, teacher: str = "plain"):
    path = tmp_path / "grid.toml"
    path.write_text(grid_text(keep_models=keep_models, reference="plain", ablations=(
        f'taught = {{ teacher = "{teacher}", distill_weight = 2.0 }}\nplain = {{}}'
    )))
    return path


def test_a_grid_cell_learns_from_every_seed_of_its_teacher_cell(tmp_path):
    grid = _grid(tmp_path)
    result = CliRunner().invoke(app, ["benchmark", "--config", str(grid), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    # listed first, trained last: the teacher's models of both seeds exist before any student starts
    order = [line.split(":")[0] for line in result.output.splitlines() if "weighted F1" in line]
    assert order == ["plain seed 1", "plain seed 2", "taught seed 1", "taught seed 2"], result.output
    for seed in (1, 2):
        record = json.loads((tmp_path / "out" / "runs" / "taught" / f"seed-{seed}" / "result.json").read_text())
        assert record["teacher"] == "plain" and record["teacher_runs"] == ["runs/plain/seed-1", "runs/plain/seed-2"]
        assert record["config"]["distill_weight"] == 2.0
        assert all(row["loss_kd"] > 0 for row in record["history"])
        plain = json.loads((tmp_path / "out" / "runs" / "plain" / f"seed-{seed}" / "result.json").read_text())
        assert plain["teacher"] is None and all(row["loss_kd"] == 0 for row in plain["history"])
    assert "taught" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize(
    ("keep_models", "teacher", "message"),
    [(False, "plain", "set keep_models = true"), (True, "nobody", "teacher 'nobody' must name another ablation"),
     (True, "taught", "teacher 'taught' must name another ablation")],
)
def test_grid_teachers_are_checked_before_training(tmp_path, keep_models, teacher, message):
    with pytest.raises(JoyfulError, match=message):
        load_grid(_grid(tmp_path, keep_models, teacher))


def test_teacher_ensemble_is_the_ensemble_then_the_student_distilled_from_it(teachers, tmp_path):
    """One call equals the two steps done by hand: a seed ensemble of K, then a student taught by it."""
    d, _ = teachers
    cfg = {**TINY, "epochs": 3, "seed": 7}
    taught = Joyful(JoyfulConfig(**{**cfg, "teacher_ensemble": 2})).fit(
        d / "train.jsonl", d / "valid.jsonl", out_dir=tmp_path / "one-call", progress=False
    )
    by_hand_teacher = Joyful(JoyfulConfig(**{**cfg, "ensemble": 2})).fit(d / "train.jsonl", d / "valid.jsonl", progress=False)
    by_hand = Joyful(JoyfulConfig(**cfg)).fit(d / "train.jsonl", d / "valid.jsonl", teacher=by_hand_teacher, progress=False)
    probabilities = [
        np.array([list(r["probabilities"].values()) for r in m.predict(d / "valid.jsonl")]) for m in (taught, by_hand)
    ]
    np.testing.assert_array_equal(*probabilities)
    assert taught.info.extra["teachers"] == [{"seed": 7, "members": 2, "data_hash": by_hand_teacher.info.extra["data_hash"]}]
    kept = Joyful.load(tmp_path / "one-call" / "teacher", device="cpu")
    assert kept.info.extra["ensemble_members"] == 2 and kept.config.teacher_ensemble == 0
    np.testing.assert_array_equal(
        [list(r["probabilities"].values()) for r in kept.predict(d / "valid.jsonl")],
        [list(r["probabilities"].values()) for r in by_hand_teacher.predict(d / "valid.jsonl")],
    )
    assert all(r.row()["loss_kd"] > 0 for r in taught.result.history)


def test_teacher_ensemble_is_refused_where_it_cannot_teach(teachers):
    d, fitted = teachers
    with pytest.raises(JoyfulError, match="not both"):
        Joyful(JoyfulConfig(**{**TINY, "teacher_ensemble": 2})).fit(d / "train.jsonl", None, teacher=fitted[0], progress=False)
    with pytest.raises(JoyfulError, match="teacher_ensemble"):
        JoyfulConfig(architecture="context-lr", fusion="concat", use_gcl=False, teacher_ensemble=2)
    with pytest.raises(JoyfulError, match="teacher_ensemble"):
        JoyfulConfig(teacher_ensemble=-1)


def test_train_command_trains_its_teacher_ensemble_first(teachers, tmp_path):
    d, _ = teachers
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "epochs": 1}))
    result = CliRunner().invoke(app, [
        "train", "--train", str(d / "train.jsonl"), "--valid", str(d / "valid.jsonl"), "--out", str(tmp_path / "m"),
        "--config", str(config), "--teacher-ensemble", "2", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["config"]["teacher_ensemble"] == 2 and meta["teachers"][0]["members"] == 2
    assert json.loads((tmp_path / "m" / "teacher" / "meta.json").read_text())["config"]["ensemble"] == 2
