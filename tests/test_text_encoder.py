"""Tests of offline text encoding and its disk cache.

The bundled MiniLM model is loaded once per module; every encoder in these tests gets
that one model through a patched loader, which also records what the model is asked to
encode, so the tests can tell a cache hit from a recomputation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from joyful.data import text_encoder as te
from joyful.data.schema import Dialogue, DialogueSet
from joyful.data.text_encoder import DEFAULT_TEXT_ENCODER, MINILM_ID, TextEncoder
from joyful.data.text_features import ensure_text_features
from joyful.errors import DataError, JoyfulError


class _Spy:
    """Stands in for a loaded model, recording the texts it encodes."""

    def __init__(self, model: Any, log: list[str], fail_on_call: int | None = None) -> None:
        self._model, self._log, self._fail_on_call, self._calls = model, log, fail_on_call, 0

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        self._calls += 1
        if self._calls == self._fail_on_call:
            raise KeyboardInterrupt
        self._log.extend(texts)
        return self._model.encode(texts, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._model, attr)


@pytest.fixture(scope="module")
def minilm() -> Any:
    """The one real model load of this module, through the real loader."""
    return te._load_model(str(te._bundled_minilm()), DEFAULT_TEXT_ENCODER, "cpu")


@dataclass
class Recorder:
    """What the patched loader saw: encoder names that loaded a model, and texts encoded."""

    loads: list[str] = field(default_factory=list)
    encoded: list[str] = field(default_factory=list)


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch, minilm: Any) -> Recorder:
    """Serve the shared model to every encoder, recording loads and encoded texts."""
    recorder = Recorder()

    def load(source: str, name: str, device: str) -> _Spy:
        recorder.loads.append(name)
        return _Spy(minilm, recorder.encoded)

    monkeypatch.setattr(te, "_load_model", load)
    return recorder


def _encoder(cache_dir: Path, name: str = DEFAULT_TEXT_ENCODER, **kwargs: Any) -> TextEncoder:
    return TextEncoder(name, cache_dir=cache_dir, show_progress=False, **kwargs)


def test_encode_gives_normalised_vectors_that_reflect_meaning(tmp_path, rec):
    enc = _encoder(tmp_path)
    pair = enc.encode(["I am so happy today.", "I feel really glad today."])
    assert pair.shape == (2, 384) and pair.dtype == np.float32
    unrelated = enc.encode(["The train leaves the station at noon."])[0]
    assert float(pair[0] @ pair[1]) > float(pair[0] @ unrelated) + 0.2
    np.testing.assert_allclose(np.linalg.norm(pair, axis=1), 1.0, atol=1e-5)
    assert enc.encode([]).shape == (0, 384)
    assert enc.encode([""]).shape == (1, 384)


def test_second_run_reads_the_cache_and_encodes_only_new_texts(tmp_path, rec):
    texts = ["hello there", "how are you?", ""]
    first = _encoder(tmp_path).encode(texts)
    assert rec.loads == [DEFAULT_TEXT_ENCODER] and sorted(rec.encoded) == sorted(texts)

    again = _encoder(tmp_path)
    np.testing.assert_array_equal(again.encode(texts[::-1] + texts), np.concatenate([first[::-1], first]))
    assert len(rec.loads) == 1, "a fully cached call must not load the model"

    again.encode(["hello there", "something new", "something new"])
    assert len(rec.loads) == 2 and rec.encoded[len(texts) :] == ["something new"]


def test_cache_is_keyed_by_model_identity(tmp_path, rec):
    texts = ["one sentence", "another sentence"]
    _encoder(tmp_path).encode(texts)
    for alias in ("all-MiniLM-L6-v2", MINILM_ID):
        enc = _encoder(tmp_path, alias)
        assert enc.cache_key == MINILM_ID and enc.name == alias
        enc.encode(texts)
    assert len(rec.loads) == 1, "aliases of one model share its vectors"

    by_path = _encoder(tmp_path, str(te._bundled_minilm()))
    assert by_path.cache_key != MINILM_ID
    by_path.encode(texts)
    assert len(rec.loads) == 2 and sorted(rec.encoded[2:]) == sorted(texts)


def test_directory_cache_key_is_stable_and_follows_its_files(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    key = _encoder(tmp_path, str(model_dir)).cache_key
    assert key == _encoder(tmp_path, str(model_dir)).cache_key
    assert key.startswith(str(model_dir.resolve()))
    (model_dir / "config.json").write_text('{"changed": true}')
    assert _encoder(tmp_path, str(model_dir)).cache_key != key


def test_dim_is_known_without_loading_the_model(tmp_path, rec):
    assert _encoder(tmp_path).dim == 384 and not rec.loads
    by_path = str(te._bundled_minilm())
    assert _encoder(tmp_path, by_path).dim == 384 and len(rec.loads) == 1
    assert _encoder(tmp_path, by_path).dim == 384 and len(rec.loads) == 1, "the width is remembered in the cache"


def test_interrupted_run_keeps_finished_batches(tmp_path, minilm, monkeypatch):
    texts = ["a b c d", "a b c", "a b", "a"]  # two commits of two texts each
    monkeypatch.setattr(te, "_load_model", lambda *args: _Spy(minilm, [], fail_on_call=2))
    with pytest.raises(KeyboardInterrupt):
        _encoder(tmp_path, commit_every=2).encode(texts)
    monkeypatch.undo()

    fresh: list[str] = []
    monkeypatch.setattr(te, "_load_model", lambda *args: _Spy(minilm, fresh))
    _encoder(tmp_path, commit_every=2).encode(texts)
    assert fresh == ["a b", "a"]


def test_a_texts_vector_does_not_depend_on_the_texts_encoded_with_it(tmp_path, rec, minilm):
    """Features must not depend on what the cache held: the same text, encoded alone into one
    cache and beside much longer texts into another, gets bitwise the same vector, which is the
    model's vector for that text in a forward pass of its own (no padding)."""
    text = "Okay."
    long = ["This is a much longer sentence that forces a padded batch on every shorter text. " * 3, "And another."]
    alone = _encoder(tmp_path / "a").encode([text])[0]
    crowded = _encoder(tmp_path / "b", commit_every=3).encode([long[0], text, long[1]])[1]
    np.testing.assert_array_equal(alone, crowded)
    np.testing.assert_array_equal(alone, minilm.encode([text], convert_to_numpy=True)[0])
    # The property the batched encoding broke: padding beside a long text moves the vector.
    padded = minilm.encode([long[0], text], batch_size=2, convert_to_numpy=True)[1]
    assert not np.array_equal(alone, padded), "this model's padding should be visible in the last bits"


def test_a_texts_vector_does_not_depend_on_the_callers_thread_count(tmp_path, rec, minilm):
    """Grid workers run with one thread and a user's shell with several; the cache must hold the
    same vectors whichever encoded first. Short texts (5-11 tokens) are where MiniLM's CPU kernels
    sum differently with two threads than with one."""
    import torch

    texts = ["Next.", "Yes, me.", "What do you mean?", "Okay, fine.", "I don't know.", "Are you serious?"]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        reference = minilm.encode(texts, batch_size=1, convert_to_numpy=True)
        torch.set_num_threads(2)
        two_threads = minilm.encode(texts, batch_size=1, convert_to_numpy=True)
        got = _encoder(tmp_path).encode(texts)
        assert torch.get_num_threads() == 2, "the caller's thread count is restored"
    finally:
        torch.set_num_threads(previous)
    np.testing.assert_array_equal(got, reference)
    if (os.cpu_count() or 1) >= 2:
        assert not np.array_equal(reference, two_threads), "two threads should move some of these vectors"


def test_the_vector_returned_is_the_one_the_cache_kept(tmp_path, rec):
    """Two runs sharing a cache must use one vector per text: if another writer stored a vector
    first, the encoder returns that one, not its own."""
    enc = _encoder(tmp_path)
    enc.encode(["warm up"])  # creates the cache and its table
    planted = np.full(384, 0.5, dtype=np.float32)
    real_encode = enc._encode_missing

    def racing_writer(db, texts, digests):
        db.execute(
            f"INSERT INTO {te.CACHE_TABLE} VALUES (?, ?, ?)", (enc.cache_key, digests["raced"], planted.tobytes())
        )
        return real_encode(db, texts, digests)

    enc._encode_missing = racing_writer  # type: ignore[method-assign]
    np.testing.assert_array_equal(enc.encode(["raced"])[0], planted)


def test_ensure_text_features_fills_missing_text_features_in_one_call(tmp_path, rec, monkeypatch):
    enc = _encoder(tmp_path)
    own = enc.encode(["kept", "as is"])  # d2 brings the encoder's own vectors, so texts elsewhere may be encoded
    data = DialogueSet(
        [
            Dialogue("d1", ["A", "B", "A"], texts=["Hi!", "", "Go away."]),
            Dialogue("d2", ["A", "B"], features={"t": own}, texts=["kept", "as is"]),
            Dialogue("d3", ["A"], features={"a": np.zeros((1, 3), dtype=np.float32)}),
            Dialogue("d4", ["B", "A"], texts=["Hi!", "Fine."]),
        ],
        source="mem",
    )
    calls: list[list[str]] = []
    real_encode = enc.encode
    monkeypatch.setattr(enc, "encode", lambda texts: calls.append(list(texts)) or real_encode(texts))

    assert ensure_text_features(data, enc) is data
    # First the check of the supplied vectors, then every text without a vector in one call (empty ones skipped).
    assert calls == [["kept", "as is"], ["Hi!", "Go away.", "Hi!", "Fine."]]
    d1, d2, d3, d4 = data.dialogues
    assert d1.features["t"].shape == (3, 384) and d4.features["t"].shape == (2, 384)
    np.testing.assert_array_equal(d1.features["t"][0], d4.features["t"][0])
    assert np.isnan(d1.features["t"][1]).all()  # nothing said: text missing
    assert d2.features["t"] is own and "t" not in d3.features
    data.validate()


def test_ensure_text_features_refuses_texts_beside_another_models_vectors(tmp_path):
    enc = _encoder(tmp_path)
    data = DialogueSet(
        [
            Dialogue("d1", ["A", "B"], texts=["Hi!", "Go away."]),
            Dialogue("d2", ["A", "B"], features={"t": np.ones((2, 384), dtype=np.float32)}, texts=["kept", "as is"]),
        ],
        source="mem",
    )
    with pytest.raises(DataError, match="differ from the text encoder's vector") as e:
        ensure_text_features(data, enc)
    assert (e.value.dialogue, e.value.index, e.value.field) == ("d1", 0, "text_features")
    assert "t" not in data.dialogues[0].features


@pytest.mark.parametrize("name", ["no-such-encoder-xyz", "/no/such/model/dir"])
def test_unloadable_encoder_is_a_one_line_joyful_error(tmp_path, name):
    enc = _encoder(tmp_path, name)
    with pytest.raises(JoyfulError) as info:
        enc.encode(["hello"])
    message = str(info.value)
    assert name in message and "\n" not in message and "Hugging Face cache" in message


def test_default_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("JOYFUL_CACHE_DIR", str(tmp_path / "joyful"))
    assert TextEncoder().cache_path == tmp_path / "joyful" / te.CACHE_FILE
    monkeypatch.delenv("JOYFUL_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert TextEncoder().cache_path == tmp_path / ".cache" / "joyful" / te.CACHE_FILE


def test_encoder_without_persistent_cache_writes_nothing_to_disk(tmp_path):
    enc = TextEncoder(cache_dir=tmp_path, show_progress=False, persistent_cache=False)
    vectors = enc.encode(["a private sentence", "another one"])
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()
    assert not any(tmp_path.iterdir())
