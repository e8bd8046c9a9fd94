"""COGMEN / official Joyful pickles, written with a stand-in for the authors' Sample class."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest

from joyful.data.labels import IEMOCAP6
from joyful.errors import DataError
from joyful.io import read_dialogues


@pytest.fixture
def author_sample(monkeypatch):
    """A class pickled as ``cogmen.Sample.Sample``, like the authors' preprocessing writes."""
    cls = type("Sample", (), {"__module__": "cogmen.Sample"})
    mod = types.ModuleType("cogmen.Sample")
    mod.Sample = cls
    monkeypatch.setitem(sys.modules, "cogmen", types.ModuleType("cogmen"))
    monkeypatch.setitem(sys.modules, "cogmen.Sample", mod)

    def make(vid, n, *, sbert=True, **overrides):
        rng = np.random.default_rng(len(vid) + n)
        s = cls()
        s.vid = vid
        s.speaker = ["M", "F"] * (n // 2) + ["M"] * (n % 2)
        s.label = [i % 6 for i in range(n)]
        s.text = [rng.standard_normal(100).astype(np.float32) for _ in range(n)]
        s.audio = [rng.standard_normal(100).astype(np.float32) for _ in range(n)]
        s.visual = [rng.standard_normal(512).astype(np.float32) for _ in range(n)]
        s.sentence = [f"utterance {i} of {vid}" for i in range(n)]
        if sbert:
            s.sbert_sentence_embeddings = rng.standard_normal((n, 768)).astype(np.float32)
        s.__dict__.update(overrides)
        return s

    return make


def write(path, data, protocol=4):
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return str(path)


@pytest.fixture
def cogmen_pkl(tmp_path, author_sample):
    data = {
        "train": [author_sample("Ses01F_impro01", 5), author_sample("Ses01F_impro02", 4)],
        "dev": [author_sample("Ses02M_script01", 3)],
        "test": [author_sample("Ses05F_impro01", 6)],
    }
    return write(tmp_path / "data_iemocap.pkl", data), data


def test_reads_train_with_sbert_as_text_features(cogmen_pkl):
    path, data = cogmen_pkl
    ds = read_dialogues(path, int_label_names=IEMOCAP6.labels)
    assert [d.id for d in ds] == ["Ses01F_impro01", "Ses01F_impro02"]
    d = ds.dialogues[0]
    assert d.speakers == ["M", "F", "M", "F", "M"]
    assert d.labels == ["hap", "sad", "neu", "ang", "exc"]
    assert d.texts[0] == "utterance 0 of Ses01F_impro01"
    assert ds.widths() == {"t": 768, "a": 100, "v": 512}
    np.testing.assert_array_equal(d.features["t"], data["train"][0].sbert_sentence_embeddings)
    np.testing.assert_array_equal(d.features["a"], np.stack(data["train"][0].audio))
    assert all(x.dtype == np.float32 for x in d.features.values())
    assert ds.source == f"{path}#train"


def test_role_and_suffix_choose_the_split(cogmen_pkl):
    path, _ = cogmen_pkl
    assert [d.id for d in read_dialogues(path, role="valid")] == ["Ses02M_script01"]
    assert [d.id for d in read_dialogues(path, role="test")] == ["Ses05F_impro01"]
    assert [d.id for d in read_dialogues(path + "#test", role="train")] == ["Ses05F_impro01"]
    assert read_dialogues(path + "#valid").source == path + "#valid"
    assert len(read_dialogues(path + "#dev")) == 1


def test_integer_labels_without_names_stay_numbers(cogmen_pkl):
    assert read_dialogues(cogmen_pkl[0]).dialogues[0].labels == ["0", "1", "2", "3", "4"]


def test_text_vectors_used_without_sbert(tmp_path, author_sample):
    path = write(tmp_path / "d.pkl", {"train": [author_sample("a", 3, sbert=False)], "test": []})
    assert read_dialogues(path).widths() == {"t": 100, "a": 100, "v": 512}


def test_speakers_that_are_not_letters(tmp_path, author_sample):
    s = author_sample("a", 3, speaker=[0, np.int64(1), 0])
    path = write(tmp_path / "d.pkl", {"train": [s]})
    assert read_dialogues(path).dialogues[0].speakers == ["0", "1", "0"]


def test_label_outside_names(tmp_path, author_sample):
    path = write(tmp_path / "d.pkl", {"train": [author_sample("a", 6)]})
    with pytest.raises(DataError) as e:
        read_dialogues(path, int_label_names=("hap", "sad", "neu", "ang"))
    assert e.value.dialogue == "a" and e.value.index == 4 and e.value.field == "label"


def test_missing_split(tmp_path, author_sample):
    path = write(tmp_path / "d.pkl", {"train": [author_sample("a", 2)], "test": []})
    with pytest.raises(DataError, match="no 'dev' split"):
        read_dialogues(path, role="valid")
    with pytest.raises(DataError, match="no dialogues found"):
        read_dialogues(path + "#test")


def test_ragged_vectors_name_dialogue_and_utterance(tmp_path, author_sample):
    s = author_sample("a", 3)
    s.audio[2] = np.zeros(99, np.float32)
    with pytest.raises(DataError) as e:
        read_dialogues(write(tmp_path / "d.pkl", {"train": [s]}))
    assert (e.value.dialogue, e.value.field, e.value.index) == ("a", "audio", 2)
    assert "#train" in e.value.source


def test_nan_in_pickle_is_reported_with_split(tmp_path, author_sample):
    s = author_sample("a", 3)
    s.visual[1][7] = np.nan
    with pytest.raises(DataError) as e:
        read_dialogues(write(tmp_path / "d.pkl", {"train": [s]}))
    assert str(e.value).startswith(f"{tmp_path / 'd.pkl'}#train: dialogue 'a': utterance 1: field 'visual'")


def test_entry_that_is_not_a_sample(tmp_path):
    path = write(tmp_path / "d.pkl", {"train": [{"vid": "a"}]})
    with pytest.raises(DataError, match="not a COGMEN Sample"):
        read_dialogues(path)
