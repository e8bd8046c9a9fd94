"""Modality-specific representation on a shared basis (paper B2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SharedBasisAttention(nn.Module):
    """Re-express each modality's vector as a mixture of q shared basis vectors.

    For modality m: ``z̃_m = W_m z_m``, ``B̃ = B W_b``, ``S_m[i,k] = softmax_k cos(z̃_m(i), b̃_k)``
    and ``ẑ_m(i) = Σ_k S_m[i,k] b̃_k``. Because every modality is written in the same basis,
    the three representations live in one space and become comparable; that is the point of
    the shared basis.

    Shapes: each ``z[m]`` ``(N, d)`` → ``ẑ[m]`` ``(N, d)``; ``S[m]`` ``(N, q)``.
    """

    def __init__(self, modalities: tuple[str, ...], dim: int, n_bases: int) -> None:
        super().__init__()
        self.basis = nn.Parameter(torch.empty(n_bases, dim))
        nn.init.xavier_uniform_(self.basis)
        self.w_b = nn.Linear(dim, dim, bias=False)
        self.w = nn.ModuleDict({m: nn.Linear(dim, dim, bias=False) for m in modalities})

    def projected_basis(self) -> Tensor:
        """``B̃ = B W_b`` as a ``(q, d)`` tensor."""
        return self.basis @ self.w_b.weight.T

    def forward(self, z: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        basis = self.projected_basis()
        unit_basis = F.normalize(basis, dim=-1)
        out: dict[str, Tensor] = {}
        attention: dict[str, Tensor] = {}
        for m, zm in z.items():
            sim = F.normalize(self.w[m](zm), dim=-1) @ unit_basis.T  # cosine, (N, q)
            attention[m] = torch.softmax(sim, dim=-1)
            out[m] = attention[m] @ basis
        return out, attention
