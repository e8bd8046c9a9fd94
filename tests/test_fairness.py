"""Per-group scores, the gap's permutation test, attributes in JSONL, and `evaluate --ci --groups` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from joyful import Joyful, JoyfulConfig
from joyful.analysis.fairness import _permuted_codes, group_summary, read_group_map, utterance_groups
from joyful.analysis.intervals import Scored, labelled_utterances
from joyful.data.schema import Dialogue, DialogueSet
from joyful.errors import DataError, JoyfulError
from joyful.io.jsonl import read_jsonl, write_jsonl
from joyful.synthetic import generate_dialogues
from tests.test_cli import joyful

LABELS = ("hap", "sad", "neu")


def _two_speakers(correct_f: float, correct_m: float, n_dialogues: int = 30, length: int = 16, seed: int = 0):
    """Dialogues of an F and an M speaker taking turns; each speaker's utterances right with the given chance."""
    rng = np.random.default_rng(seed)
    speakers = np.tile(["F", "M"], n_dialogues * length // 2)
    y = rng.integers(0, len(LABELS), len(speakers))
    right = rng.random(len(y)) < np.where(speakers == "F", correct_f, correct_m)
    pred = np.where(right, y, (y + 1 + rng.integers(0, 2, len(y))) % len(LABELS))
    s = Scored("classification", y, pred, np.repeat(np.arange(n_dialogues), length), LABELS)
    return s, list(speakers)


def test_per_group_scores_and_gap_by_hand():
    s, speakers = _two_speakers(0.8, 0.5)
    out = group_summary(s, speakers, speakers, key="speaker", n_permutations=200)
    by_hand = {}
    for g in ("F", "M"):
        m = np.array(speakers) == g
        by_hand[g] = f1_score(s.y_true[m], s.y_pred[m], labels=range(3), average="weighted")
        assert out["per_group"][g]["weighted_f1"] == pytest.approx(by_hand[g])
        assert out["per_group"][g]["accuracy"] == pytest.approx((s.y_true[m] == s.y_pred[m]).mean())
        assert out["per_group"][g]["n_utterances"] == m.sum() and out["per_group"][g]["n_dialogues"] == 30
    assert out["gap"] == pytest.approx(by_hand["F"] - by_hand["M"])
    assert out["p_value"] == pytest.approx(1 / 201)  # no permutation comes near a 30-point gap
    assert out["left_out"] == 0


def test_exchangeable_groups_give_a_large_p_value():
    s, speakers = _two_speakers(0.6, 0.6, seed=3)
    out = group_summary(s, speakers, speakers, key="speaker")
    assert out["p_value"] > 0.2
    assert group_summary(s, speakers, speakers, key="speaker") == out  # fixed seed


def test_small_groups_and_utterances_without_a_group():
    s, speakers = _two_speakers(0.8, 0.5)
    groups = [g if i >= 12 else None for i, g in enumerate(speakers)]
    groups[12:15] = ["X"] * 3  # a group of 3 utterances is shown but not compared
    out = group_summary(s, groups, speakers, key="speaker", n_permutations=50)
    assert out["left_out"] == 12 and out["per_group"]["X"]["n_utterances"] == 3
    f, m = out["per_group"]["F"]["weighted_f1"], out["per_group"]["M"]["weighted_f1"]
    assert out["gap"] == pytest.approx(abs(f - m))
    alone = group_summary(s, ["F"] * len(speakers), speakers, key="speaker")
    assert alone["gap"] is None and alone["p_value"] is None


def test_permutations_keep_the_units_of_the_attribute():
    s, speakers = _two_speakers(0.7, 0.7, n_dialogues=6, length=4)
    code = (np.array(speakers) == "M").astype(np.int64)
    shuffled = _permuted_codes(s, code, speakers, 100, seed=0)
    for k in range(6):  # speakers swap within their dialogue: each keeps one group for all its turns
        rows = shuffled[:, s.dialogue == k]
        assert (rows[:, 0::2] == rows[:, [0]]).all() and (rows[:, 1::2] == 1 - rows[:, [0]]).all()
    assert 20 < shuffled[:, 0].sum() < 80  # and the swap happens
    per_dialogue = np.array([0, 0, 1, 1, 1, 0])[s.dialogue]
    shuffled = _permuted_codes(s, per_dialogue, speakers, 100, seed=0)
    blocks = shuffled.reshape(100, 6, 4)
    assert (blocks == blocks[:, :, :1]).all() and (blocks[:, :, 0].sum(1) == 3).all()  # dialogues permuted whole


def _set(*dialogues: Dialogue) -> DialogueSet:
    return DialogueSet(list(dialogues), "x.jsonl")


def test_groups_from_attributes_speakers_and_a_map(tmp_path):
    d = Dialogue("d1", ["A", "B", "A"], labels=["hap", None, "sad"],
                 attributes=[{"gender": "F"}, {"gender": "M"}, {}])
    ds = _set(d, Dialogue("d2", ["A"], labels=["neu"]))
    assert labelled_utterances(ds) == [(0, 0), (0, 2), (1, 0)]
    assert utterance_groups(ds, "gender") == ["F", None, None]
    assert utterance_groups(ds, "speaker") == ["A", "A", "A"]
    with pytest.raises(JoyfulError, match="no utterance has the attribute 'age'.*gender"):
        utterance_groups(ds, "age")
    plain = tmp_path / "map.csv"
    plain.write_text("speaker,gender\nA,F\nB,M\n")
    assert utterance_groups(ds, "gender", read_group_map(plain, "gender")) == ["F", "F", "F"]
    per_dialogue = tmp_path / "map2.csv"
    per_dialogue.write_text("dialogue,speaker,gender\nd1,A,F\nd2,A,M\n")
    assert utterance_groups(ds, "gender", read_group_map(per_dialogue, "gender")) == ["F", "F", "M"]
    with pytest.raises(JoyfulError, match="no column 'age'"):
        read_group_map(plain, "age")


def test_jsonl_attributes_round_trip_and_subset(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({
        "dialogue": "d1", "attributes": {"site": "north", "gender": "F"},
        "utterances": [{"speaker": "A", "label": "hap"},
                       {"speaker": "B", "label": "sad", "attributes": {"gender": "M"}}],
    }) + "\n" + json.dumps({"dialogue": "d2", "utterances": [{"speaker": "A", "label": "neu"}]}) + "\n")
    first, second = read_jsonl(path).dialogues
    assert first.attributes == [{"site": "north", "gender": "F"}, {"site": "north", "gender": "M"}]
    assert second.attributes is None
    write_jsonl([first, second], tmp_path / "b.jsonl")
    again = read_jsonl(tmp_path / "b.jsonl").dialogues
    assert [d.attributes for d in again] == [first.attributes, None]
    assert json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])["attributes"] == {"site": "north"}
    assert first.subset(np.array([False, True])).attributes == [{"site": "north", "gender": "M"}]


@pytest.mark.parametrize(("dialogue_attrs", "utterance_attrs", "message"), [
    ({"age": 41}, None, r"x\.jsonl: dialogue 'd1': field 'attributes': attribute 'age' must be a string"),
    (None, {"gender": None}, r"dialogue 'd1': utterance 0: field 'attributes': attribute 'gender' must be a string"),
    (None, ["F"], r"utterance 0: field 'attributes': attributes must be an object"),
])
def test_jsonl_refuses_attributes_that_are_not_strings(tmp_path, dialogue_attrs, utterance_attrs, message):
    record = {"dialogue": "d1", "utterances": [{"speaker": "A", "label": "hap"}]}
    if dialogue_attrs is not None:
        record["attributes"] = dialogue_attrs
    if utterance_attrs is not None:
        record["utterances"][0]["attributes"] = utterance_attrs
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message):
        read_jsonl(path)


def test_evaluate_json_with_intervals_and_speaker_groups(tmp_path):
    """A context-lr model on generated data; per-group figures checked against its predictions and scikit-learn."""
    for name, n, seed in (("train", 30, 1), ("test", 16, 3)):
        ds = generate_dialogues(n, widths={"t": 12}, seed=seed, speakers=(2, 2), signal=2.5, prefix=f"{name}-")
        write_jsonl(ds.dialogues, tmp_path / f"{name}.jsonl")
    model, test = tmp_path / "model", str(tmp_path / "test.jsonl")
    config = JoyfulConfig.preset("context-lr", modalities="t", device="cpu")
    clf = Joyful(config).fit(str(tmp_path / "train.jsonl"), str(tmp_path / "train.jsonl"), out_dir=model, progress=False)
    out = json.loads(joyful("evaluate", "--model", str(model), "--data", test, "--json", "--ci", "--resamples", "300",
                            "--groups", "speaker", "--device", "cpu").stdout)
    for name in ("accuracy", "weighted_f1", "macro_f1"):
        low, high = out["ci"][name]
        assert low <= out[name] <= high
    assert set(out["ci"]) >= {f"f1_{c}" for c in out["labels"]}
    rows = clf.predict(test)
    truth = [u["label"] for line in open(test) for u in json.loads(line)["utterances"]]
    groups = out["groups"]
    assert groups["key"] == "speaker" and set(groups["per_group"]) == {"S0", "S1"} and groups["left_out"] == 0
    for g, scores in groups["per_group"].items():
        mine = [(t, r["label"]) for t, r in zip(truth, rows, strict=True) if r["speaker"] == g]
        expected = f1_score(*zip(*mine), labels=out["labels"], average="weighted", zero_division=0)
        assert scores["weighted_f1"] == pytest.approx(expected) and scores["n_utterances"] == len(mine)
    assert 0 < groups["p_value"] <= 1
    bad = joyful("evaluate", "--model", str(model), "--data", test, "--groups", "gender", "--device", "cpu", check=False)
    assert bad.returncode == 2 and "no utterance has the attribute 'gender'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
