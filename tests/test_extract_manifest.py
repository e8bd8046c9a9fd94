"""Manifest parsing: CSV/TSV/JSONL, optional and extra columns, and errors that name file, row, dialogue and field."""

from __future__ import annotations

import json

import pytest
from media_fixtures import write_manifest

from joyful.errors import DataError
from joyful.extract.manifest import read_manifest


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "clips").mkdir()
    for name in ("a.wav", "b.mp4"):
        (tmp_path / "clips" / name).write_bytes(b"")
    return tmp_path


def rows(**changes):
    base = [
        {
            "dialogue": "d1",
            "index": "1",
            "speaker": "B",
            "text": "fine",
            "media": "clips/b.mp4",
            "start": "0.5",
            "end": "2",
            "label": "neutral",
        },
        {
            "dialogue": "d1",
            "index": "0",
            "speaker": "A",
            "text": "hi",
            "media": "clips/a.wav",
            "start": "",
            "end": "",
            "label": "",
        },
        {
            "dialogue": "d2",
            "index": "0",
            "speaker": "A",
            "text": "",
            "media": "",
            "start": "",
            "end": "",
            "label": "sad",
        },
    ]
    for key, value in changes.items():
        base[0][key] = value
    return base


def test_csv_manifest_parsed_with_defaults_and_extra_columns(folder):
    data = rows()
    for r in data:
        r["session"] = "s1"
    m = read_manifest(write_manifest(folder / "m.csv", data))
    first = m.rows[0]
    assert (first.dialogue, first.index, first.speaker, first.text) == ("d1", 1, "B", "fine")
    assert first.media == folder / "clips" / "b.mp4" and first.media_name == "clips/b.mp4"
    assert (first.start, first.end, first.label, first.row) == (0.5, 2.0, "neutral", 2)
    assert first.extra == {"session": "s1"}
    second = m.rows[1]
    assert second.start is None and second.end is None and second.label is None
    assert m.rows[2].media is None  # no recording: audio and visual will be missing
    groups = m.dialogues()
    assert list(groups) == ["d1", "d2"] and [m.rows[i].index for i in groups["d1"]] == [0, 1]


def test_optional_columns_may_be_absent_and_tsv_works(folder):
    path = folder / "m.tsv"
    path.write_text("dialogue\tindex\tspeaker\tmedia\nd1\t0\tA\tclips/a.wav\n")
    (row,) = read_manifest(path).rows
    assert row.text == "" and row.label is None and row.start is None


def test_jsonl_manifest_matches_csv(folder):
    data = rows()
    jsonl = folder / "m.jsonl"
    jsonl.write_text(
        "".join(json.dumps({**r, "index": int(r["index"]), "start": r["start"] or None}) + "\n" for r in data)
    )
    from_csv = read_manifest(write_manifest(folder / "m.csv", data)).rows
    from_jsonl = read_manifest(jsonl).rows
    assert [(r.dialogue, r.index, r.text, r.media, r.start, r.end, r.label) for r in from_csv] == [
        (r.dialogue, r.index, r.text, r.media, r.start, r.end, r.label) for r in from_jsonl
    ]


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"start": "1,5"}, "start", "'1,5' is not a number"),
        ({"start": "2", "end": "1"}, "end", "is not after start"),
        ({"end": "-1"}, "end", "non-negative"),
        ({"index": "one"}, "index", "not a whole number"),
        ({"index": "0"}, "index", "already used in row"),
        ({"speaker": " "}, "speaker", "speaker is empty"),
        ({"media": "clips/nope.wav"}, "media", "'clips/nope.wav' not found"),
        ({"media": "", "start": "1"}, "media", "start/end given but media is empty"),
    ],
)
def test_bad_rows_name_file_row_dialogue_and_field(folder, changes, field, words):
    path = write_manifest(folder / "m.csv", rows(**changes))
    with pytest.raises(DataError) as info:
        read_manifest(path)
    err = info.value
    assert err.source == str(path) and err.field == field and err.dialogue == "d1"
    assert words in str(err) and "row " in str(err)


def test_missing_required_column(folder):
    data = [{k: v for k, v in r.items() if k != "speaker"} for r in rows()]
    with pytest.raises(DataError, match="lacks the required column speaker") as info:
        read_manifest(write_manifest(folder / "m.csv", data))
    assert info.value.field == "speaker"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "empty"),
        ("dialogue,index,speaker,media\n", "no utterances"),
        ("dialogue,index,speaker,media\nd1,0,A,clips/a.wav,extra\n", "row 2: 5 fields"),
    ],
)
def test_malformed_csv(folder, content, words):
    path = folder / "m.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=words):
        read_manifest(path)


def test_malformed_jsonl(folder):
    path = folder / "m.jsonl"
    path.write_text('{"dialogue": "d1", "index": 0, "speaker": "A", "media": ""}\n[1, 2]\n')
    with pytest.raises(DataError, match="row 2: expected one JSON object"):
        read_manifest(path)


def test_unreadable_manifest(tmp_path):
    with pytest.raises(DataError, match="cannot read the manifest"):
        read_manifest(tmp_path / "absent.csv")
