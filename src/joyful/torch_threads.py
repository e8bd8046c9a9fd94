"""A scoped PyTorch thread count.

PyTorch's intra-op thread count is global to the process, and CPU kernels sum in an order
that depends on it, so a result can differ in its last bits between thread counts. Work that
must repeat bitwise (text embeddings kept in a shared cache) or that shares cores with other
processes (a grid's runs) sets the count for its own duration only, so a library caller's
own setting survives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` intra-op threads (unchanged if None), then restore the caller's count."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
