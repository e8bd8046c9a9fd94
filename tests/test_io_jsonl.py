"""The project's JSONL dialogue format: reading, its rules, and the writer's round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from joyful.data.schema import Dialogue
from joyful.errors import DataError
from joyful.io import read_dialogues, write_jsonl
from joyful.io.jsonl import read_jsonl


def utt(speaker="A", text="hi", label="neu", **extra):
    u = {"speaker": speaker, "text": text, "label": label}
    u.update(extra)
    return {k: v for k, v in u.items() if v is not ...}


def write_lines(path, records, *, blank_between=False):
    lines = [json.dumps(r) for r in records]
    path.write_text(("\n\n" if blank_between else "\n").join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_minimal_text_file(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"dialogue": "d1", "utterances": [utt("A"), utt("B", "yo", "hap")]}])
    ds = read_dialogues(path)
    d = ds.dialogues[0]
    assert (d.id, d.speakers, d.texts, d.labels, d.features) == ("d1", ["A", "B"], ["hi", "yo"], ["neu", "hap"], {})
    assert ds.source == path


def test_features_become_float32_arrays(tmp_path):
    u = [utt(text_features=[1, 2.5], audio=[0.0, 1.0, 2.0], visual=[3.0]) for _ in range(3)]
    d = read_dialogues(write_lines(tmp_path / "d.jsonl", [{"dialogue": 7, "utterances": u}])).dialogues[0]
    assert d.id == "7"
    assert {m: x.shape for m, x in d.features.items()} == {"t": (3, 2), "a": (3, 3), "v": (3, 1)}
    assert all(x.dtype == np.float32 for x in d.features.values())


def test_labels_and_text_are_optional(tmp_path):
    recs = [
        {"dialogue": "a", "utterances": [utt(label=None, text=...), utt(label=..., text=...)]},
        {"dialogue": "b", "utterances": [utt(label="ang", text=...), utt(label=None, text=...)]},
    ]
    a, b = read_dialogues(write_lines(tmp_path / "d.jsonl", recs)).dialogues
    assert a.labels is None and a.texts is None
    assert b.labels == ["ang", None]


def test_blank_lines_and_extra_keys_are_ignored(tmp_path):
    recs = [{"dialogue": f"d{i}", "meta": 1, "utterances": [utt(start=1.5, emotion_score=[1, 2])]} for i in range(3)]
    assert len(read_dialogues(write_lines(tmp_path / "d.jsonl", recs, blank_between=True))) == 3


def test_modality_absent_or_null_on_some_utterances_is_missing_there(tmp_path):
    u = [utt(audio=[1.0, 2.0]), utt(), utt(audio=None), utt(audio=[3.0, 4.0])]
    (d,) = read_dialogues(write_lines(tmp_path / "d.jsonl", [{"dialogue": "x", "utterances": u}]))
    a = d.features["a"]
    assert a.shape == (4, 2)
    assert np.isnan(a[1:3]).all() and a[[0, 3]].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_missing_rows_round_trip_as_null(tmp_path):
    a = np.array([[1.0, 2.0], [np.nan, np.nan]], dtype=np.float32)
    write_jsonl([Dialogue("x", ["A", "B"], {"a": a})], tmp_path / "d.jsonl")
    line = json.loads((tmp_path / "d.jsonl").read_text())
    assert [u["audio"] for u in line["utterances"]] == [[1.0, 2.0], None]
    (back,) = read_dialogues(tmp_path / "d.jsonl")
    np.testing.assert_array_equal(back.features["a"], a)


def test_partly_nan_vector_is_corrupt_not_missing(tmp_path):
    a = np.array([[1.0, np.nan], [1.0, 2.0]], dtype=np.float32)
    with pytest.raises(DataError) as e:
        Dialogue("x", ["A", "B"], {"a": a}).validate("mem")
    assert (e.value.index, e.value.field) == (0, "audio")


def test_dialogue_without_a_modality_others_have_gets_it_missing(tmp_path):
    recs = [
        {"dialogue": "x", "utterances": [utt(visual=[1.0, 2.0, 3.0])]},
        {"dialogue": "y", "utterances": [utt(), utt()]},
    ]
    x, y = read_dialogues(write_lines(tmp_path / "d.jsonl", recs))
    assert y.features["v"].shape == (2, 3) and np.isnan(y.features["v"]).all()


def test_text_on_some_utterances_only(tmp_path):
    u = [utt(), utt(text=None)]
    with pytest.raises(DataError) as e:
        read_dialogues(write_lines(tmp_path / "d.jsonl", [{"dialogue": "x", "utterances": u}]))
    assert (e.value.index, e.value.field) == (1, "text")


def test_width_differs_within_a_dialogue(tmp_path):
    u = [utt(visual=[1.0, 2.0]), utt(visual=[1.0, 2.0]), utt(visual=[1.0])]
    with pytest.raises(DataError) as e:
        read_dialogues(write_lines(tmp_path / "d.jsonl", [{"dialogue": "x", "utterances": u}]))
    assert (e.value.dialogue, e.value.index, e.value.field) == ("x", 2, "visual")
    assert "width 1" in e.value.problem


@pytest.mark.parametrize("bad", [["1.0", 2.0], [None, 1.0], [[1.0], 2.0], [[1.0], [2.0]], "1 2", {"x": 1}])
def test_vector_values_must_be_numbers(tmp_path, bad):
    u = [utt(text_features=[0.5, 0.5]), utt(text_features=bad)]
    with pytest.raises(DataError) as e:
        read_dialogues(write_lines(tmp_path / "d.jsonl", [{"dialogue": "x", "utterances": u}]))
    assert e.value.field == "text_features" and e.value.index == 1


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"dialogue": "a", "utterances": [utt()]}) + "\n\n{not json}\n")
    with pytest.raises(DataError, match=r"line 3: not valid JSON"):
        read_dialogues(str(path))


def test_truncated_file(tmp_path):
    text = "\n".join(json.dumps({"dialogue": f"d{i}", "utterances": [utt()]}) for i in range(3))
    path = tmp_path / "d.jsonl"
    path.write_text(text[:-10])
    with pytest.raises(DataError, match=r"line 3: not valid JSON"):
        read_dialogues(str(path))


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('"a"', 'expected an object with "dialogue"'),
        ('{"dialogue": "a"}', 'expected an object with "dialogue"'),
        ('{"dialogue": null, "utterances": []}', "dialogue id must be"),
        ('{"dialogue": "a", "utterances": {}}', "utterances must be a list"),
        ('{"dialogue": "a", "utterances": ["hi"]}', "utterance must be an object"),
        ('{"dialogue": "a", "utterances": [{"speaker": ["A"]}]}', "speaker must be a string"),
        ('{"dialogue": "a", "utterances": [{"speaker": "A", "label": true}]}', "label must be a string"),
        ('{"dialogue": "a", "utterances": [{"speaker": "A", "label": {"x": 1}}]}', "label must be a string"),
        ('{"dialogue": "a", "utterances": [{"speaker": "A", "text": 3}]}', "text must be a string"),
    ],
)
def test_structure_errors(tmp_path, line, match):
    path = tmp_path / "d.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=match):
        read_jsonl(path)


def test_boolean_vectors_are_refused(tmp_path):
    u = [utt(audio=[True, False]), utt(audio=[False, False])]
    with pytest.raises(DataError, match="not a number"):
        read_dialogues(write_lines(tmp_path / "d.jsonl", [{"dialogue": "x", "utterances": u}]))


def test_not_utf8(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"dialogue": "a", "utterances": [{"speaker": "\xff"}]}\n')
    with pytest.raises(DataError, match="line 1: not UTF-8"):
        read_dialogues(str(path))


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    dialogues = [
        Dialogue(
            id="d1",
            speakers=["A", "B", "A"],
            features={
                "t": rng.standard_normal((3, 5)).astype(np.float32),
                "a": rng.standard_normal((3, 2)).astype(np.float32),
            },
            texts=["héllo", "’quote’", ""],
            labels=["neu", None, "ang"],
        ),
        Dialogue(
            id="d2",
            speakers=["C"],
            features={"t": np.ones((1, 5), np.float32), "a": np.zeros((1, 2), np.float32)},
            texts=["x"],
        ),
    ]
    path = tmp_path / "out" / "rt.jsonl"
    write_jsonl(dialogues, path)
    back = read_jsonl(path)
    assert [p.name for p in path.parent.iterdir()] == ["rt.jsonl"]  # no temporary left behind
    for a, b in zip(dialogues, back.dialogues, strict=True):
        assert (a.id, a.speakers, a.texts, a.labels) == (b.id, b.speakers, b.texts, b.labels)
        assert a.features.keys() == b.features.keys()
        for m in a.features:
            np.testing.assert_array_equal(a.features[m], b.features[m])
    assert back.data_hash() == type(back)(dialogues, "x").data_hash()


def test_writer_refuses_unknown_modality(tmp_path):
    d = Dialogue(id="d", speakers=["A"], features={"pose": np.ones((1, 2), np.float32)})
    with pytest.raises(ValueError, match="pose"):
        write_jsonl([d], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


# --- multi-label and regression labels ------------------------------------------------------


def labelled(path, labels):
    """A one-dialogue file whose utterances carry ``labels`` exactly as given (JSON values)."""
    return write_lines(path, [{"dialogue": "d", "utterances": [{"speaker": "A", "label": x} for x in labels]}])


def test_list_labels_become_tuples(tmp_path):
    (d,) = read_dialogues(labelled(tmp_path / "d.jsonl", [["happy", "sad"], [], None, ["fear"]]))
    assert d.labels == [("happy", "sad"), (), None, ("fear",)]


def test_number_labels_become_floats(tmp_path):
    (d,) = read_dialogues(labelled(tmp_path / "d.jsonl", [-2.4, 0.0, 1.8, None]))
    assert d.labels == [-2.4, 0.0, 1.8, None]
    assert all(type(x) is float for x in d.labels[:3])


def test_integer_labels_stay_class_names_unless_decimals_or_regression(tmp_path):
    path = labelled(tmp_path / "d.jsonl", [0, 2, 1])
    assert read_dialogues(path).dialogues[0].labels == ["0", "2", "1"]
    assert read_dialogues(path, task="classification").dialogues[0].labels == ["0", "2", "1"]
    assert read_dialogues(path, task="regression").dialogues[0].labels == [0.0, 2.0, 1.0]
    # a sentiment file written by hand: "3" beside "-0.6" is the score 3, in any dialogue of the file
    recs = [{"dialogue": "a", "utterances": [{"speaker": "A", "label": 3}]},
            {"dialogue": "b", "utterances": [{"speaker": "A", "label": -0.6}]}]
    a, b = read_dialogues(write_lines(tmp_path / "s.jsonl", recs))
    assert (a.labels, b.labels) == ([3.0], [-0.6])


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_or_infinite_number_label_is_refused(tmp_path, literal):
    path = tmp_path / "d.jsonl"
    path.write_text('{"dialogue": "d", "utterances": [{"speaker": "A", "label": 1.0}, '
                    f'{{"speaker": "A", "label": {literal}}}]}}\n')
    with pytest.raises(DataError, match="NaN or infinite") as e:
        read_dialogues(str(path))
    assert (e.value.dialogue, e.value.index, e.value.field) == ("d", 1, "label")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("label", "match"),
    [(["sad", "sad"], "'sad' appears twice"), (["sad", 1], "must hold strings"), (["sad", None], "must hold strings"),
     ([["sad"]], "must hold strings"), (False, "label must be a string")],
)
def test_bad_list_or_boolean_labels(tmp_path, label, match):
    with pytest.raises(DataError, match=match) as e:
        read_dialogues(labelled(tmp_path / "d.jsonl", ["x", label] if not isinstance(label, list) else [[], label]))
    assert (e.value.dialogue, e.value.index, e.value.field) == ("d", 1, "label")


def test_round_trip_of_multilabel_and_regression_labels(tmp_path):
    dialogues = [
        Dialogue("m", ["A", "A", "A"], texts=["a", "b", "c"], labels=[("happy", "fear"), (), None]),
        Dialogue("r", ["B", "B"], texts=["x", "y"], labels=[2.0, -0.4]),
    ]
    write_jsonl(dialogues, tmp_path / "rt.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "rt.jsonl").read_text().splitlines()]
    assert [u["label"] for u in lines[0]["utterances"]] == [["happy", "fear"], [], None]
    assert [u["label"] for u in lines[1]["utterances"]] == [2.0, -0.4]
    m, r = read_jsonl(tmp_path / "rt.jsonl")
    assert m.labels == [("happy", "fear"), (), None]
    assert r.labels == [2.0, -0.4] and all(type(x) is float for x in r.labels)
