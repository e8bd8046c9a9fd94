"""Loading pickles without letting them run code.

A pickle can name any importable callable and have it called (``os.system`` included),
so the readers never use ``pickle.load``. This unpickler resolves only the few globals
the COGMEN / Joyful / DialogueGCN / MMGCN pickles need, and maps the authors'
``Sample`` class to :class:`joyful.io.sample.Sample`.
"""

from __future__ import annotations

import _compat_pickle
import collections
import pickle
from typing import IO, Any

import numpy as np

# numpy 2's module names; numpy 1.26 ships them too, for loading numpy 2 pickles
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric

from joyful.errors import DataError
from joyful.io.sample import Sample


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, restricted to latin-1."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return text.encode("latin-1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """Array and scalar reconstruction, under the numpy 1 and numpy 2 module names."""
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):
        out[(f"{pkg}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        out[(f"{pkg}.multiarray", "scalar")] = _multiarray.scalar
        out[(f"{pkg}.numeric", "_frombuffer")] = _numeric._frombuffer  # protocol 5
    return out


#: Modules under which the authors' code defines ``Sample``: COGMEN's package, the
#: official Joyful package (same layout), and scripts run beside ``Sample.py``.
SAMPLE_MODULES: tuple[str, ...] = ("cogmen.Sample", "cogmen", "joyful.Sample", "joyful", "Sample", "__main__")

#: Every global a pickle may name, after mapping Python 2 names to Python 3 ones.
ALLOWED: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    **{(m, "Sample"): Sample for m in SAMPLE_MODULES},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("_codecs", "encode"): _latin1_encode,
    # plain value types, e.g. a defaultdict's factory or a Python 2 set
    **{("builtins", t.__name__): t for t in (list, dict, tuple, set, frozenset, int, float, str, bytes, bool)},
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` only returns entries of :data:`ALLOWED`."""

    def __init__(self, fileobj: IO[bytes], source: str) -> None:
        # latin-1 is how Python 2 pickles (DialogueGCN's) must be read for numpy arrays
        super().__init__(fileobj, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        key = _compat_pickle.NAME_MAPPING.get((module, name))
        if key is None:
            key = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        if key in ALLOWED:
            return ALLOWED[key]
        raise DataError(
            self.source,
            f"pickle holds class {module}.{name}, which is not allowed: only numpy arrays, "
            "plain containers and COGMEN/Joyful Sample objects are loaded, because a pickle "
            "naming other classes can run arbitrary code",
        )


def safe_load(fileobj: IO[bytes], source: str) -> Any:
    """Unpickle ``fileobj`` with :class:`SafeUnpickler`; every failure is a :class:`DataError`."""
    try:
        return SafeUnpickler(fileobj, source).load()
    except DataError:
        raise
    except Exception as e:  # pickle reports corruption as almost any exception type
        raise DataError(source, f"pickle is unreadable or truncated ({type(e).__name__}: {e})") from e


__all__: list[str] = ["ALLOWED", "SAMPLE_MODULES", "SafeUnpickler", "safe_load"]
