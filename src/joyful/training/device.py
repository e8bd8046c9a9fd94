"""Which device a run computes on, and in which precision.

Models are saved on the CPU (``torch.load(map_location="cpu")``) and moved to the device
asked for when loaded, so a checkpoint trained on a GPU serves from a laptop and back.
The device is chosen per run, never assumed: ``auto`` is CUDA when PyTorch sees a CUDA
device, else the CPU (Apple's ``mps`` only when asked for by name, since not every
operator PyTorch Geometric needs exists there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from joyful.config import PRECISIONS
from joyful.errors import JoyfulError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``name`` as a :class:`torch.device` that exists on this machine, or a one-line error."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise JoyfulError(f"device {name!r}: not a device; use one of {', '.join(DEVICES)}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise JoyfulError(f"device {name!r}: this machine has no CUDA device PyTorch can use (use --device cpu or auto)")
        if device.index is not None and device.index >= count:
            raise JoyfulError(f"device {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise JoyfulError(f"device {name!r}: Apple's Metal (MPS) backend is not available on this machine")
        return device
    raise JoyfulError(f"device {name!r}: not supported; use one of {', '.join(DEVICES)}")


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot train in (fp16 needs CUDA's loss scaling)."""
    if precision not in PRECISIONS:
        raise JoyfulError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise JoyfulError(f"precision 'fp16' needs a CUDA device, not {device.type} (bf16 works on the CPU too)")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for the forward pass and the loss (``fp32``: nothing changes)."""
    dtype = _DTYPES.get(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s parameters (or buffers) live; the CPU for a module without either."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")
