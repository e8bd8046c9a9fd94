"""MELD's CSV annotation files."""

from __future__ import annotations

import csv

import pytest

from joyful.errors import DataError
from joyful.io import read_dialogues

HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season", "Episode"]


def write_csv(path, rows, header=HEADER, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def row(did, uid, text="Hi.", speaker="Joey", emotion="joy"):
    return [1, text, speaker, emotion, "positive", did, uid, 1, 1]


def test_groups_by_dialogue_in_utterance_order(tmp_path):
    rows = [
        row(10, 1, "second", "Ross"),
        row(2, 0, "other"),
        row(10, 0, "first, with a comma", "Rachel"),
        row(10, 3, "fourth"),
    ]
    ds = read_dialogues(write_csv(tmp_path / "train_sent_emo.csv", rows))
    assert [d.id for d in ds] == ["2", "10"]
    d = ds.dialogues[1]
    assert d.texts == ["first, with a comma", "second", "fourth"]
    assert d.speakers == ["Rachel", "Ross", "Joey"]
    assert d.labels == ["joy", "joy", "joy"] and d.features == {}


def test_mojibake_is_repaired(tmp_path):
    ds = read_dialogues(
        write_csv(tmp_path / "m.csv", [row(0, 0, "Oh my God, heâ€™s lost it. Ã©"), row(0, 1, "café ok")])
    )
    assert ds.dialogues[0].texts == ["Oh my God, he’s lost it. é", "café ok"]


def test_windows_1252_file(tmp_path):
    path = write_csv(tmp_path / "m.csv", [row(0, 0, "he’s")], encoding="cp1252")
    assert read_dialogues(path).dialogues[0].texts == ["he’s"]


def test_missing_emotion_gives_no_labels(tmp_path):
    ds = read_dialogues(write_csv(tmp_path / "m.csv", [row(0, 0, emotion=""), row(0, 1, emotion="")]))
    assert ds.dialogues[0].labels is None


def test_missing_speaker(tmp_path):
    with pytest.raises(DataError) as e:
        read_dialogues(write_csv(tmp_path / "m.csv", [row(4, 0), row(4, 1, speaker=" ")]))
    assert (e.value.dialogue, e.value.index, e.value.field) == ("4", 1, "speaker")


def test_missing_column(tmp_path):
    header = [h for h in HEADER if h != "Emotion"]
    with pytest.raises(DataError, match=r"lacks the column.*Emotion"):
        read_dialogues(write_csv(tmp_path / "m.csv", [[1, "x", "A", "neutral", 0, 0, 1, 1]], header=header))


def test_bad_ids_and_duplicates(tmp_path):
    with pytest.raises(DataError, match=r"line 2: Utterance_ID must be an integer"):
        read_dialogues(write_csv(tmp_path / "a.csv", [row(0, "x")]))
    with pytest.raises(DataError, match="utterance 0 appears twice"):
        read_dialogues(write_csv(tmp_path / "b.csv", [row(0, 0), row(0, 0)]))


def test_split_suffix_is_refused(tmp_path):
    path = write_csv(tmp_path / "m.csv", [row(0, 0)])
    with pytest.raises(DataError, match="holds one split"):
        read_dialogues(path + "#train")
