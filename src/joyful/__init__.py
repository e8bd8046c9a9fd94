"""joyful: multimodal emotion recognition in conversation with the Joyful model (EMNLP 2023).

The public names are imported on first use, so that ``joyful --help`` and light-weight
modules do not pay PyTorch's import time.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Joyful": "joyful.api",
    "JoyfulConfig": "joyful.config",
    "Dialogue": "joyful.data.schema",
    "DialogueSet": "joyful.data.schema",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'joyful' has no attribute {name!r}")
