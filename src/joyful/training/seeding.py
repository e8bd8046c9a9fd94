"""One place that makes a run repeatable: bit for bit on the CPU, as far as CUDA allows on a GPU."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import torch


def seed_everything(seed: int, device: torch.device | None = None) -> torch.Generator:
    """Seed Python, NumPy and PyTorch, ask PyTorch for deterministic kernels, return a batch-order generator.

    On CUDA the scatter-adds of message passing have no deterministic kernel; PyTorch would
    warn on every call (thousands per epoch), so each such warning is shown once. cuBLAS
    needs a fixed workspace to be repeatable, set here unless the user chose one.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device is not None and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        warnings.filterwarnings("once", message=r".*does not have a deterministic implementation.*")
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)
