"""read_dialogues: format detection by content, split selection, and validation of every result."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from joyful.errors import DataError
from joyful.io import read_dialogues
from joyful.io.readers import detect_format


def dialogue(did, n=2, **fields):
    """A JSONL dialogue record; each field in ``fields`` is given to every utterance."""
    return {
        "dialogue": did,
        "utterances": [{"speaker": "AB"[i % 2], "text": f"t{i}", "label": "neu", **fields} for i in range(n)],
    }


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def gcn_pickle(path):
    """A minimal DialogueGCN-layout pickle with train ids [a] and test ids [b]."""
    ids = {"a": [0, 1], "b": [0]}
    obj = (
        ids,
        {"a": ["M", "F"], "b": ["M"]},
        {"a": [0, 1], "b": [2]},
        {"a": [np.ones(3), np.ones(3)], "b": [np.zeros(3)]},
        {"a": ["x", "y"], "b": ["z"]},
        ["a"],
        ["b"],
    )
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return str(path)


# --- detection by content -----------------------------------------------------------


def test_jsonl_named_pkl(tmp_path):
    path = write_jsonl(tmp_path / "features.pkl", [dialogue("a")])
    assert detect_format(path) == "jsonl"
    assert [d.id for d in read_dialogues(path)] == ["a"]


def test_pickle_named_txt(tmp_path):
    path = gcn_pickle(tmp_path / "notes.txt")
    assert detect_format(path) == "pickle"
    assert [d.id for d in read_dialogues(path)] == ["a"]


def test_protocol0_pickle_named_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(pickle.dumps(([1], [2]), protocol=0))
    assert detect_format(str(path)) == "pickle"
    with pytest.raises(DataError, match="layout not recognised"):
        read_dialogues(str(path))


def test_malicious_pickle_named_txt_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data.txt"
    path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(DataError, match=r"class os\.system, which is not allowed") as e:
        read_dialogues(str(path))
    assert e.value.source == f"{path}#train"
    assert not marker.exists()


def test_csv_named_dat_with_bom(tmp_path):
    path = tmp_path / "meld.dat"
    path.write_text(
        "\ufeffSr No.,Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\n1,Hi,Joey,joy,0,0\n", encoding="utf-8"
    )
    assert detect_format(str(path)) == "csv"
    assert read_dialogues(str(path)).dialogues[0].texts == ["Hi"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "file is empty"),
        (b"  \n\n", "file is empty"),
        (b"hello world\n", "content not recognised"),
        (b"[{}]", "one JSON array"),
    ],
)
def test_unrecognised_content(tmp_path, content, match):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as e:
        read_dialogues(str(path))
    assert e.value.source == str(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="file not found") as e:
        read_dialogues(str(tmp_path / "nope.jsonl"))
    assert e.value.source == str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        read_dialogues(str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.jsonl"
    path.write_text("{}")
    path.chmod(0)
    with pytest.raises(DataError, match="cannot read"):
        read_dialogues(str(path))


def test_truncated_pickle_file(tmp_path):
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps({"train": [np.zeros((4, 4))]}, protocol=4)[:-20])
    with pytest.raises(DataError, match="unreadable or truncated"):
        read_dialogues(str(path))


# --- splits ---------------------------------------------------------------------------


def test_split_suffix_and_role_defaults(tmp_path):
    path = gcn_pickle(tmp_path / "f.pkl")
    assert [d.id for d in read_dialogues(path)] == ["a"]
    assert [d.id for d in read_dialogues(path, role="test")] == ["b"]
    assert [d.id for d in read_dialogues(path + "#test", role="train")] == ["b"]
    assert [d.id for d in read_dialogues(path + "#TRAIN", role="test")] == ["a"]
    assert read_dialogues(path + "#test").source == path + "#test"


def test_unknown_split_and_role(tmp_path):
    path = gcn_pickle(tmp_path / "f.pkl")
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        read_dialogues(path + "#holdout")
    with pytest.raises(ValueError, match="role"):
        read_dialogues(path, role="predict")


def test_existing_path_with_hash_is_not_a_split(tmp_path):
    path = write_jsonl(tmp_path / "run#2.jsonl", [dialogue("a")])
    assert read_dialogues(path).source == path


def test_single_split_file_ignores_role(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [dialogue("a")])
    assert read_dialogues(path, role="test").source == path
    with pytest.raises(DataError, match="holds one split"):
        read_dialogues(path + "#test")


# --- validation of the result -----------------------------------------------------------


def check_error(tmp_path, records, *, dialogue=None, field=None, index=None, match=None):
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(DataError, match=match) as e:
        read_dialogues(path)
    assert e.value.source == path
    assert (e.value.dialogue, e.value.field, e.value.index) == (dialogue, field, index)
    return e.value


def test_widths_differ_across_dialogues(tmp_path):
    recs = [dialogue("a", audio=[1.0, 2.0]), dialogue("b", audio=[1.0, 2.0, 3.0])]
    check_error(tmp_path, recs, dialogue="b", field="audio", match="width 3 differs from width 2 in dialogue 'a'")


def test_empty_dialogue(tmp_path):
    check_error(tmp_path, [dialogue("a"), dialogue("b", n=0)], dialogue="b", field="utterances", match="no utterances")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e50"])
def test_nan_and_inf_features(tmp_path, value):
    path = tmp_path / "d.jsonl"
    rec = dialogue("a", n=3, visual=[0.0, 1.0])
    path.write_text(json.dumps(rec).replace("[0.0, 1.0]", f"[0.0, {value}]", 1) + "\n")
    with pytest.raises(DataError, match="NaN or infinite") as e:
        read_dialogues(str(path))
    assert (e.value.dialogue, e.value.field, e.value.index) == ("a", "visual", 0)


def test_missing_speaker(tmp_path):
    rec = dialogue("a", n=3)
    del rec["utterances"][2]["speaker"]
    check_error(tmp_path, [rec], dialogue="a", field="speaker", index=2, match="speaker is missing")


def test_duplicate_dialogue_id(tmp_path):
    check_error(tmp_path, [dialogue("a"), dialogue("a")], dialogue="a", field="dialogue", match="appears twice")


def test_modality_missing_from_one_dialogue_is_missing_there(tmp_path):
    recs = [dialogue("a", audio=[1.0]), dialogue("b")]
    a, b = read_dialogues(write_jsonl(tmp_path / "d.jsonl", recs))
    assert b.features["a"].shape == (len(b), 1) and np.isnan(b.features["a"]).all()


def test_text_features_missing_from_a_dialogue_with_text_are_left_to_encode(tmp_path):
    recs = [dialogue("a", text_features=[1.0]), dialogue("b")]
    a, b = read_dialogues(write_jsonl(tmp_path / "d.jsonl", recs))
    assert "t" not in b.features and b.texts is not None


def test_text_missing_from_one_dialogue(tmp_path):
    b = dialogue("b")
    for u in b["utterances"]:
        del u["text"]
    check_error(tmp_path, [dialogue("a"), b], dialogue="b", field="text", match="no text")
