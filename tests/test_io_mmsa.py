"""MMSA feature pickles (aligned_50.pkl / unaligned_50.pkl layout): grouping, averaging, labels, refusals."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from joyful.cli import app
from joyful.errors import DataError
from joyful.io import read_dialogues
from joyful.io.readers import detect_format

P = 99.0  # padding: a value no valid step holds, so an average that used it would show
INF = np.inf


def split(*, emotions: str | None = None) -> dict:
    """Five clips of two videos, out of order; the expected averages are written out in the tests."""
    audio = np.array([
        [[1, 2], [3, 4], [P, P], [P, P]],        # vidA$_$10, length 2
        [[5, 6], [P, P], [P, P], [P, P]],        # vidB$_$1, length 1
        [[0, 0], [2, 2], [4, 4], [-INF, 6]],     # vidA$_$2, length 4; -inf is read as 0
        [[P, P], [P, P], [P, P], [P, P]],        # vidA$_$1, length 0: missing
        [[1, 1], [1, 1], [4, 7], [P, P]],        # vidB$_$3, length 3
    ], dtype=np.float32)
    vision = np.array([[[1], [2], [3]], [[7], [P], [P]], [[2], [4], [P]], [[5], [P], [P]], [[P], [P], [P]]],
                      dtype=np.float32)
    text = np.array([
        [[1, 1], [3, 3], [8, 8]],  # the mask ends before the third step, which is not zero
        [[2, 4], [0, 0], [0, 0]],
        [[1, 0], [0, 1], [0, 0]],
        [[6, 6], [0, 0], [0, 0]],
        [[3, 1], [0, 0], [0, 0]],
    ], dtype=np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]])
    text_bert = np.stack([mask * 101, mask, np.zeros_like(mask)], axis=1)  # ids, attention mask, segments
    part = {
        "id": np.array(["vidA$_$10", "vidB$_$1", "vidA$_$2", "vidA$_$1", "vidB$_$3"]),
        "raw_text": np.array(["ten", "b one", "two", "one", "b three"], dtype=object),
        "text": text,
        "text_bert": text_bert,
        "audio": audio,
        "vision": vision,
        "audio_lengths": [2, 1, 4, 0, 3],
        "vision_lengths": np.array([3, 1, 2, 1, 0]),
        "regression_labels": np.array([0.5, -1.25, 2.0, -3.0, 0.0], dtype=np.float32),
        "annotations": np.array(["Positive", "Negative", "Positive", "Negative", "Neutral"]),
        "classification_labels": np.array([2, 0, 2, 0, 1]),
    }
    scores = np.array([[1, 0, 0, 0, 0, 0], [0, 2, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0, 0.3],
                       [0, 0, 0, 1, 1, 0]], dtype=np.float32)
    if emotions == "all_labels":
        part["regression_labels"] = np.column_stack([part["regression_labels"], scores])
    elif emotions is not None:
        part[emotions] = scores
    return part


def write(path, train: dict, **more) -> str:
    obj = {"train": train, "valid": more.get("valid", train), "test": more.get("test", train)}
    path.write_bytes(pickle.dumps(obj, protocol=more.get("protocol", 4)))
    return str(path)


def nan_equal(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=0, atol=1e-6)


def test_grouping_clip_order_averages_and_sentiment(tmp_path):
    path = write(tmp_path / "unaligned_50.pkl", split())
    assert detect_format(path) == "pickle"
    ds = read_dialogues(path)
    assert ds.source == f"{path}#train"
    a, b = ds.dialogues
    assert (a.id, b.id) == ("vidA", "vidB")  # videos in order of first appearance
    assert a.speakers == ["vidA"] * 3 and b.speakers == ["vidB"] * 2
    assert a.texts == ["one", "two", "ten"] and b.texts == ["b one", "b three"]  # numeric clip order 1, 2, 10
    assert a.labels == [-3.0, 2.0, 0.5] and b.labels == [-1.25, 0.0]
    assert all(type(x) is float for x in a.labels + b.labels)
    nan_equal(a.features["a"], [[np.nan, np.nan], [1.5, 3.0], [2.0, 3.0]])
    nan_equal(b.features["a"], [[5.0, 6.0], [2.0, 3.0]])
    nan_equal(a.features["v"], [[5.0], [3.0], [2.0]])
    nan_equal(b.features["v"], [[7.0], [np.nan]])
    nan_equal(a.features["t"], [[6.0, 6.0], [0.5, 0.5], [2.0, 2.0]])
    nan_equal(b.features["t"], [[2.0, 4.0], [3.0, 1.0]])
    assert all(x.dtype == np.float32 for d in ds for x in d.features.values())


def test_text_without_text_bert_averages_the_steps_that_are_not_zero(tmp_path):
    part = split()
    del part["text_bert"]
    (a, _) = read_dialogues(write(tmp_path / "x.pkl", part))
    nan_equal(a.features["t"], [[6.0, 6.0], [0.5, 0.5], [4.0, 4.0]])  # ten: (1+3+8)/3


def test_sequence_without_lengths_averages_the_steps_that_are_not_zero(tmp_path):
    part = split()
    del part["vision_lengths"]
    part["vision"] = np.array([[[1], [0], [3]], [[7], [0], [0]], [[0], [0], [0]], [[5], [5], [0]], [[2], [0], [4]]],
                              dtype=np.float32)
    a, b = read_dialogues(write(tmp_path / "x.pkl", part))
    nan_equal(a.features["v"], [[5.0], [np.nan], [2.0]])
    nan_equal(b.features["v"], [[7.0], [3.0]])


def test_string_clip_ids_sort_as_strings_and_splits_are_chosen(tmp_path):
    valid = split()
    valid["id"] = np.array(["v$_$b", "w$_$x", "v$_$a", "v$_$c", "w$_$a"])
    test = split()
    test["id"] = np.array([f"t{i}$_${i}" for i in range(5)])
    path = write(tmp_path / "x.pkl", split(), valid=valid, test=test)
    for spec, role in ((f"{path}#valid", "train"), (f"{path}#dev", "train"), (path, "valid")):
        v, w = read_dialogues(spec, role=role)
        assert (v.id, w.id, v.texts, w.texts) == ("v", "w", ["two", "ten", "one"], ["b three", "b one"])
    assert read_dialogues(f"{path}#valid").source == f"{path}#valid"
    assert [d.id for d in read_dialogues(f"{path}#test")] == [f"t{i}" for i in range(5)]


def test_all_labels_need_a_task(tmp_path):
    path = write(tmp_path / "x.pkl", split(emotions="all_labels"))
    with pytest.raises(DataError, match=r"--task multilabel or --task regression") as e:
        read_dialogues(path)
    assert "\n" not in str(e.value) and e.value.source == f"{path}#train"
    a, b = read_dialogues(path, task="multilabel")
    assert a.labels == [("happy", "fear"), (), ("happy",)]
    assert b.labels == [("sad", "anger"), ("surprise", "disgust")]
    a, b = read_dialogues(path, task="regression")
    assert a.labels == [-3.0, 2.0, 0.5] and b.labels == [-1.25, 0.0]


@pytest.mark.parametrize("key", ["emotion_labels", "annotations", "classification_labels"])
def test_emotion_scores_beside_sentiment(tmp_path, key):
    path = write(tmp_path / "x.pkl", split(emotions=key))
    with pytest.raises(DataError, match="choose --task"):
        read_dialogues(path, task="auto")
    a, _ = read_dialogues(path, task="multilabel")
    assert a.labels == [("happy", "fear"), (), ("happy",)]


def test_tasks_the_file_cannot_serve(tmp_path):
    path = write(tmp_path / "x.pkl", split())
    with pytest.raises(DataError, match=r"multilabel task: its labels serve regression \(sentiment\) only"):
        read_dialogues(path, task="multilabel")
    with pytest.raises(DataError, match=r"classification task: its labels serve regression \(sentiment\) only"):
        read_dialogues(path, task="classification")
    both = write(tmp_path / "y.pkl", split(emotions="all_labels"))
    with pytest.raises(DataError, match=r"serve regression \(sentiment\) and multilabel \(emotions\)"):
        read_dialogues(both, task="classification")


def test_text_vectors_missing_where_text_is_given_drop_the_texts(tmp_path):
    part = split()
    part["text_bert"][4, 1] = 0  # vidB$_$3 has text but no text step
    with pytest.warns(UserWarning, match=r"dialogue 'vidB': utterance 1 has text but no text features"):
        ds = read_dialogues(write(tmp_path / "x.pkl", part))
    assert all(d.texts is None for d in ds)
    nan_equal(ds.dialogues[1].features["t"], [[2.0, 4.0], [np.nan, np.nan]])


def test_only_text_bert_leaves_the_texts_to_encode(tmp_path):
    part = split()
    del part["text"]
    a, _ = read_dialogues(write(tmp_path / "x.pkl", part))
    assert "t" not in a.features and a.texts == ["one", "two", "ten"]


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_hostile_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    part = split()
    part["audio"] = Exploit()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": part, "valid": part, "test": part}))
    with pytest.raises(DataError, match=r"class posix\.system, which is not allowed|class os\.system") as e:
        read_dialogues(str(path))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "pwned").exists()


def bad(tmp_path, **changes):
    part = split()
    for key, value in changes.items():
        part[key] = value
    with pytest.raises(DataError) as e:
        read_dialogues(write(tmp_path / "bad.pkl", part))
    assert e.value.source == f"{tmp_path / 'bad.pkl'}#train"
    assert "\n" not in str(e.value)
    return e.value


def test_bad_shapes_name_the_video_and_field(tmp_path):
    e = bad(tmp_path, audio=split()["audio"][:4])  # no row for clip vidB$_$3
    assert (e.dialogue, e.index, e.field) == ("vidB", 1, "audio") and "5 clips" in e.problem
    e = bad(tmp_path, vision=np.zeros(5, dtype=np.float32))
    assert (e.dialogue, e.field) == ("vidA", "vision") and "(clips, time steps, width)" in e.problem
    e = bad(tmp_path, audio_lengths=[2, 1, 4, 0, 5])  # 5 steps of 4
    assert (e.dialogue, e.index, e.field) == ("vidB", 1, "audio_lengths")
    e = bad(tmp_path, vision_lengths=[3, 1.5, 2, 1, 0])
    assert (e.dialogue, e.index, e.field) == ("vidB", 0, "vision_lengths")
    e = bad(tmp_path, regression_labels=np.zeros((5, 3)))
    assert (e.dialogue, e.field) == ("vidA", "regression_labels")
    e = bad(tmp_path, raw_text=["a", "b"])
    assert (e.dialogue, e.field) == ("vidA", "raw_text")
    e = bad(tmp_path, id=np.array(["vidA$_$1", "vidB$_$1", "vidA", "vidA$_$3", "vidB$_$3"]))
    assert e.field == "id" and "id 2" in e.problem
    e = bad(tmp_path, id=np.array(["vidA$_$1", "vidB$_$1", "vidA$_$2", "vidA$_$1", "vidB$_$3"]))
    assert (e.dialogue, e.field) == ("vidA", "id") and "appears twice" in e.problem
    e = bad(tmp_path, emotion_labels=np.zeros((5, 4)))
    assert e.field == "emotion_labels"


def test_corrupt_values_are_refused(tmp_path):
    audio = split()["audio"].copy()
    audio[2, 1, 0] = np.nan
    e = bad(tmp_path, audio=audio)
    assert (e.dialogue, e.index, e.field) == ("vidA", 1, "audio")
    vision = split()["vision"].copy()
    vision[4, 0, 0] = np.nan  # vidB$_$3 has no valid vision step: padding is never read
    part = split()
    part["vision"] = vision
    read_dialogues(write(tmp_path / "ok.pkl", part))
    vision[0, 1, 0] = -np.inf  # -inf counts as 0 in audio only
    assert bad(tmp_path, vision=vision).field == "vision"
    e = bad(tmp_path, regression_labels=np.array([0.5, np.nan, 2.0, -3.0, 0.0]))
    assert (e.dialogue, e.index, e.field) == ("vidB", 0, "regression_labels")


def test_cli_reports_a_bad_shape_on_one_line_with_status_2(tmp_path):
    part = split()
    part["audio"] = part["audio"][:4]
    path = write(tmp_path / "bad.pkl", part)
    result = CliRunner().invoke(app, ["train", "--train", path, "--valid", path, "--out", str(tmp_path / "m"), "--quiet"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.count("\n") == 0 and "Traceback" not in result.output
    assert f"{path}#train" in message and "'vidB'" in message and "'audio'" in message
    assert not (tmp_path / "m").exists()
