"""The multimodal fusion module (paper section B) and its "w/o MF" ablation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from joyful.nn.dialogue_transformer import DialogueTransformer
from joyful.nn.mlp import MLP
from joyful.nn.shared_basis import SharedBasisAttention
from joyful.nn.topic_smoothing import running_topic_vectors, topic_vectors


@dataclass
class FusionOutput:
    """Node features for the graph, and the fusion loss with its three parts."""

    nodes: Tensor
    loss: Tensor
    parts: dict[str, Tensor]


class JointFusion(nn.Module):
    """Global contextual branch + modality-specific branch; nodes are ``[ẑ^g; ẑ^ℓ]``.

    The squared norms ``||·||²`` of the paper are averaged over utterances and dimensions
    (mean squared error), so α means the same for any feature width. ``causal`` keeps every
    utterance's node to its past: causal attention, and each utterance smoothed towards the
    topic of the dialogue so far rather than of the whole dialogue.

    Shapes: ``x[m] (N, d_m)`` → ``nodes (N, Σ_m g_m + |M|·specific_dim)``.
    """

    def __init__(
        self,
        widths: dict[str, int],
        modalities: tuple[str, ...],
        *,
        global_hidden: int | None,
        global_layers: int,
        global_heads: int,
        global_attention_dim: int | None,
        global_ff: int | None,
        eta: float,
        specific_dim: int,
        n_bases: int,
        dropout: float,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.modalities = modalities
        self.eta = eta
        self.causal = causal
        g = {m: global_hidden or widths[m] for m in modalities}
        self.global_width = sum(g.values())
        self.global_mlps = nn.ModuleDict({m: MLP(widths[m], g[m], g[m], dropout) for m in modalities})
        self.transformer = DialogueTransformer(
            self.global_width,
            global_layers,
            global_heads,
            min(global_attention_dim or self.global_width, self.global_width),
            global_ff or self.global_width,
            dropout,
            causal=causal,
        )
        self.specific_mlps = nn.ModuleDict({m: MLP(widths[m], specific_dim, specific_dim, dropout) for m in modalities})
        self.basis = SharedBasisAttention(modalities, specific_dim, n_bases)
        self.out_dim = self.global_width + len(modalities) * specific_dim

    def forward(self, x: dict[str, Tensor], batch: Tensor, position: Tensor, lengths: Tensor) -> FusionOutput:
        # B1: global contextual representation
        z_g = torch.cat([self.global_mlps[m](x[m]) for m in self.modalities], dim=-1)
        z_g_hat = self.transformer(z_g, batch)
        if self.causal:
            topic = running_topic_vectors(z_g_hat, batch, position, lengths, self.eta)
        else:
            topic = topic_vectors(z_g_hat, batch, position, lengths, self.eta)[batch]
        j_smooth = F.mse_loss(z_g_hat, topic)
        j_g_rec = F.mse_loss(z_g_hat, z_g)
        # B2: modality-specific representation on the shared basis
        z_l = {m: self.specific_mlps[m](x[m]) for m in self.modalities}
        z_l_hat, _ = self.basis(z_l)
        z_l_cat = torch.cat([z_l[m] for m in self.modalities], dim=-1)
        z_l_hat_cat = torch.cat([z_l_hat[m] for m in self.modalities], dim=-1)
        j_l_rec = F.mse_loss(z_l_hat_cat, z_l_cat)
        parts = {"smooth": j_smooth, "global_rec": j_g_rec, "specific_rec": j_l_rec}
        return FusionOutput(torch.cat([z_g_hat, z_l_hat_cat], dim=-1), j_smooth + j_g_rec + j_l_rec, parts)


class ConcatFusion(nn.Module):
    """Ablation "w/o MF": the raw modality vectors concatenated, no fusion loss."""

    def __init__(self, widths: dict[str, int], modalities: tuple[str, ...]) -> None:
        super().__init__()
        self.modalities = modalities
        self.out_dim = sum(widths[m] for m in modalities)

    def forward(self, x: dict[str, Tensor], batch: Tensor, position: Tensor, lengths: Tensor) -> FusionOutput:
        nodes = torch.cat([x[m] for m in self.modalities], dim=-1)
        return FusionOutput(nodes, nodes.new_zeros(()), {})
