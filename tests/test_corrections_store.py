"""The correction store: round trips, validation, corrected dialogues for fine-tuning, erasure, the CLI.

Store-level tests run on every backend (``store_fixtures.location``: SQLite, and PostgreSQL
when ``JOYFUL_TEST_POSTGRES`` is set); file-level ones on SQLite.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from joyful.cli import app
from joyful.corrections import Correction, CorrectionStore
from joyful.data.schema import Dialogue
from joyful.errors import DataError, JoyfulError
from service_fixtures import file_bytes, served_model_dir  # noqa: F401 - served_model_dir is a fixture
from store_fixtures import location, raw_rows  # noqa: F401 - location is a fixture

LABELS = ("hap", "sad", "neu")


def dialogue(did: str = "d1", n: int = 4, *, texts: bool = True, origin: list[int] | None = None) -> Dialogue:
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((n, 5)).astype(np.float32)
    audio[1] = np.nan  # no audio for utterance 1
    return Dialogue(
        id=did,
        speakers=["A", "B"] * (n // 2) + ["A"] * (n % 2),
        features={"a": audio, "t": rng.standard_normal((n, 3)).astype(np.float32)},
        texts=[f"secret words {did} {i}" for i in range(n)] if texts else None,
        labels=["hap"] + [None] * (n - 1),
        origin=origin,
    )


@pytest.fixture
def store(location):
    with CorrectionStore(location) as s:
        yield s


def test_dialogue_round_trip_keeps_nan_rows_and_drops_texts_unless_asked(store):
    d = dialogue()
    store.save_dialogue(d)
    back = store.dialogue("d1")
    assert back.id == store.dialogue_key("d1") and back.speakers == [store.speaker_key(s) for s in d.speakers]
    assert back.labels == d.labels and back.texts is None
    for m in d.features:
        assert back.features[m].dtype == np.float32
        np.testing.assert_array_equal(back.features[m], d.features[m])  # NaN == NaN here
    assert np.isnan(back.features["a"][1]).all()
    store.save_dialogue(d, keep_text=True)
    assert store.dialogue("d1").texts == d.texts
    assert store.dialogue("nope") is None


def test_features_are_numpy_files_never_pickles(store, location):
    store.save_dialogue(dialogue())
    blobs = [bytes(row[0]) for row in raw_rows(location, 'SELECT "array" FROM features')]
    assert blobs and all(b.startswith(b"\x93NUMPY") for b in blobs)
    assert all(np.load(io.BytesIO(b), allow_pickle=False).dtype == np.float32 for b in blobs)


def test_save_replaces_an_earlier_version(store, location):
    store.save_dialogue(dialogue(n=2))
    store.save_dialogue(dialogue(n=5))
    assert len(store.dialogue("d1")) == 5 and store.dialogue_ids() == [store.dialogue_key("d1")]
    assert raw_rows(location, "SELECT COUNT(*) FROM features") == [(2,)]


def test_corrections_are_listed_oldest_first_and_filtered(store):
    store.save_dialogue(dialogue("d1"))
    first = store.add_correction("d1", 2, "sad", "ann")
    store.add_correction("other", 7, "neu")  # a dialogue not stored (yet) may be corrected
    store.add_correction("d1", 2, "neu")
    assert isinstance(first, Correction) and first.created.endswith("+00:00") and "T" in first.created
    d1, other = store.dialogue_key("d1"), store.dialogue_key("other")
    assert [(c.dialogue, c.index, c.label) for c in store.corrections()] == [(d1, 2, "sad"), (other, 7, "neu"), (d1, 2, "neu")]
    assert [c.label for c in store.corrections("d1")] == ["sad", "neu"]
    assert store.corrections("d1")[0].annotator == "ann" and store.corrections("d1")[1].annotator is None


@pytest.mark.parametrize(
    ("args", "labels", "field"),
    [
        (("d1", 4, "sad"), None, "index"),  # the stored dialogue has utterances 0..3
        (("d1", -1, "sad"), None, "index"),
        (("d1", True, "sad"), None, "index"),
        (("d1", 1, "joy"), LABELS, "label"),
        (("d1", 1, ""), None, "label"),
        (("", 1, "sad"), None, "dialogue"),
    ],
)
def test_bad_corrections_are_refused_naming_the_field(tmp_path, args, labels, field):
    store = CorrectionStore(tmp_path / "store.sqlite")  # validation is the same on every backend
    store.save_dialogue(dialogue("d1"))
    with pytest.raises(DataError) as e:
        store.add_correction(*args, labels=labels)
    assert e.value.field == field
    assert store.corrections() == []


def test_index_is_a_position_when_the_stored_dialogue_lost_utterances(store):
    store.save_dialogue(dialogue("d1", n=3, origin=[0, 2, 5]), consent="train")  # e.g. an IEMOCAP-4 model dropped 1, 3, 4
    store.add_correction("d1", 5, "sad")
    with pytest.raises(DataError, match="no utterance 1"):
        store.add_correction("d1", 1, "sad")
    assert store.corrected_dialogues()[0].labels == [None, None, "sad"]


def test_corrected_dialogues_have_the_latest_correction_per_utterance_and_nothing_else(store):
    for did in ("d1", "d2", "d3"):
        store.save_dialogue(dialogue(did), consent="train")
    store.add_correction("d1", 1, "sad")
    store.add_correction("d1", 1, "neu")
    store.add_correction("d1", 3, "hap")
    store.add_correction("d3", 0, "sad")
    store.add_correction("unstored", 0, "sad")  # no features to learn from: left out
    got = {d.id: d for d in store.corrected_dialogues()}
    d1, d3 = store.dialogue_key("d1"), store.dialogue_key("d3")
    assert sorted(got) == sorted([d1, d3])
    assert got[d1].labels == [None, "neu", None, "hap"]  # the stored gold label "hap" of 0 is not a correction
    assert got[d3].labels == ["sad", None, None, None]
    np.testing.assert_array_equal(got[d1].features["a"], dialogue("d1").features["a"])


def test_a_new_version_may_not_orphan_a_correction(store):
    store.save_dialogue(dialogue("d1", n=4))
    store.add_correction("d1", 3, "sad")
    with pytest.raises(DataError, match="utterance 3 has a correction"):
        store.save_dialogue(dialogue("d1", n=2))
    assert len(store.dialogue("d1")) == 4


def test_delete_reports_rows_and_leaves_no_byte_of_the_dialogue(tmp_path):
    path = tmp_path / "store.sqlite"
    keep, gone = dialogue("kept-dialogue"), dialogue("forget-me-please")
    gone.features["t"][:] = 0.123456789  # a recognisable float32 pattern
    pattern = np.float32(0.123456789).tobytes() * 3
    with CorrectionStore(path, pseudonymise=False) as store:  # names as given, so the raw bytes can show them
        store.save_dialogue(keep, keep_text=True)
        store.save_dialogue(gone, keep_text=True)
        store.add_correction("forget-me-please", 1, "sad", "annotator-x")
        store.add_correction("kept-dialogue", 1, "sad")
        raw = file_bytes(path)
        assert b"forget-me-please" in raw and b"secret words forget-me-please" in raw and pattern in raw
        removed = store.delete_dialogue("forget-me-please")
        assert removed == {"corrections": 1, "features": 2, "dialogues": 1}
        assert store.dialogue("forget-me-please") is None and store.corrections("forget-me-please") == []
        assert store.dialogue("kept-dialogue") is not None and len(store.corrections()) == 1
        raw = file_bytes(path)
        assert b"forget-me-please" not in raw and b"secret words forget" not in raw and pattern not in raw
        assert b"annotator-x" not in raw
        assert store.delete_dialogue("forget-me-please") == {"corrections": 0, "features": 0, "dialogues": 0}


def test_store_is_private_and_persistent(tmp_path):
    path = tmp_path / "store.sqlite"
    with CorrectionStore(path) as store:
        store.save_dialogue(dialogue())
        store.add_correction("d1", 0, "sad")
    assert path.stat().st_mode & 0o077 == 0
    with CorrectionStore(path) as store:
        assert store.dialogue_ids() == [store.dialogue_key("d1")] and store.corrections()[0].label == "sad"
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA secure_delete").fetchone()[0] == 1


def test_threads_share_one_store(store):
    store.save_dialogue(dialogue("d1", n=10), consent="train")
    errors = []

    def work(k):
        try:
            for i in range(10):
                store.add_correction("d1", i, LABELS[(i + k) % 3], f"t{k}")
                store.save_dialogue(dialogue(f"t{k}", n=4))
                assert len(store.corrected_dialogues()) >= 1
        except Exception as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(store.corrections("d1")) == 40


def test_not_a_store_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(JoyfulError, match="cannot be used as a correction store .file is not a database"):
        CorrectionStore(path)
    newer = tmp_path / "newer.sqlite"
    sqlite3.connect(newer).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(JoyfulError, match="newer joyful"):
        CorrectionStore(newer)


# ---------------------------------------------------------------------- joyful correct
@pytest.fixture
def cli():
    return lambda *args: CliRunner().invoke(app, ["correct", *args])


def test_correct_command_records_a_correction(cli, tmp_path):
    path = tmp_path / "store.sqlite"
    with CorrectionStore(path) as store:
        store.save_dialogue(dialogue("d1"))
    result = cli("--store", str(path), "--dialogue", "d1", "--index", "2", "--label", "sad", "--annotator", "kim")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    with CorrectionStore(path) as store:
        assert printed["dialogue"] == store.dialogue_key("d1")
    assert printed["index"] == 2 and printed["label"] == "sad" and printed["annotator"] == "kim"
    with CorrectionStore(path) as store:
        assert [(c.index, c.label, c.annotator) for c in store.corrections()] == [(2, "sad", "kim")]


def test_correct_command_refuses_bad_input(cli, tmp_path, served_model_dir):
    path = tmp_path / "store.sqlite"
    with CorrectionStore(path) as store:
        store.save_dialogue(dialogue("d1"))
    result = cli("--store", str(tmp_path / "missing.sqlite"), "--dialogue", "d1", "--index", "0", "--label", "sad")
    assert result.exit_code == 2 and "no such correction store" in result.output
    result = cli("--store", str(path), "--dialogue", "d1", "--index", "9", "--label", "sad")
    assert result.exit_code == 2 and "no utterance 9" in result.output
    result = cli("--store", str(path), "--dialogue", "d1", "--index", "0", "--label", "joy", "--model", str(served_model_dir))
    assert result.exit_code == 2 and "unknown label 'joy'" in result.output
    result = cli("--store", str(path), "--dialogue", "d1", "--index", "0", "--label", "sad", "--model", str(served_model_dir))
    assert result.exit_code == 0, result.output


def test_correct_command_help(cli):
    out = cli("--help").output
    for option in ("--store", "--dialogue", "--index", "--label", "--annotator", "--model"):
        assert option in out

