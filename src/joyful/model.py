"""The Joyful network: fusion → dialogue graph → two augmented views → GNN → classifier."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from joyful.batching import Batch
from joyful.config import JoyfulConfig
from joyful.data.tasks import Task, get_task
from joyful.nn.augment import edge_perturbation, feature_mask, global_proximity, random_edges
from joyful.nn.contrastive import contrastive_loss
from joyful.nn.distillation import distillation_loss
from joyful.nn.encoder import GraphEncoder
from joyful.nn.fusion import ConcatFusion, JointFusion
from joyful.nn.graph import num_relations, same_other_types, window_graph
from joyful.nn.missing import MissingModality
from joyful.nn.mlp import MLP


@dataclass
class JoyfulOutput:
    """Logits per node, the loss terms, and the representations the report plots."""

    logits: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    fused: Tensor | None = None
    encoded: Tensor | None = None


class JoyfulModel(nn.Module):
    """Joyful (Li et al., EMNLP 2023), batched over whole mini-batches of dialogues.

    Training: nodes ``h = [ẑ^g; ẑ^ℓ]`` from the fusion module; two views of the window
    graph, each with its augmentations (FM/EP/GP); one shared encoder gives H(1), H(2);
    ``L_all = α·L_mf + β·L_ct + L_ce`` with the classifier on ``H(1) + H(2)``; L_ce is the
    task's supervised loss (cross-entropy, per-emotion BCE, or L1 for sentiment).

    With ``classifier_skip`` the classifier reads ``[H; h]``, the graph output beside the
    fused node itself (COGMEN's public code), so context is added to the utterance's own
    evidence rather than replacing it.

    Utterances that lack a modality (NaN rows) get a learned missing-modality vector first.

    Inference: no augmentation. Both views are then the clean window graph with all
    features, so H(1) = H(2) and the classifier reads ``2·H(clean)``, the same sum it was
    trained on, computed with one encoder pass.

    With ``inference_views = K`` inference instead draws K pairs of augmented views, as in
    training, and averages the classifier's logits over them: the classifier then sees the
    kind of input it was trained on (a sum of two different views, BatchNorm statistics
    gathered from such views), not ``2·H(clean)``. The draws come from a generator seeded
    with the config's seed, so predictions are repeatable and the global RNG is untouched.
    """

    def __init__(
        self, config: JoyfulConfig, widths: dict[str, int], n_classes: int, n_speakers: int,
        task: str = "classification",
    ) -> None:
        super().__init__()
        self.config = config
        self.task: Task = get_task(task)
        """The head's kind: ``n_classes`` outputs (classes, emotions, or the one score) and its loss."""
        self.modalities = config.modality_order
        self.n_speakers = n_speakers
        self.missing = MissingModality(widths, self.modalities, config.modality_dropout)
        if config.fusion == "joint":
            self.fusion: JointFusion | ConcatFusion = JointFusion(
                widths,
                self.modalities,
                global_hidden=config.global_hidden,
                global_layers=config.global_layers,
                global_heads=config.global_heads,
                global_attention_dim=config.global_attention_dim,
                global_ff=config.global_ff,
                eta=config.eta,
                specific_dim=config.specific_dim,
                n_bases=config.n_bases,
                dropout=config.dropout,
                causal=config.causal,
            )
        else:
            self.fusion = ConcatFusion(widths, self.modalities)
        self.encoder: GraphEncoder | None = None
        if config.architecture == "joyful":
            self.encoder = GraphEncoder(
                self.fusion.out_dim,
                config.gnn_hidden,
                config.gnn_heads,
                config.gnn_layers,
                num_relations(n_speakers, config.speaker_relations),
                config.rgcn_bases,
                config.dropout,
            )
        width = self.encoder.out_dim if self.encoder is not None else self.fusion.out_dim
        if config.classifier_skip and self.encoder is not None:
            width += self.fusion.out_dim
        self.classifier = MLP(width, config.classifier_hidden, n_classes, config.dropout)
        self.inference_edge_noise = 0.0
        """Robustness study: fraction of random edges added to the graph at inference (not saved)."""
        self.inference_edge_generator: torch.Generator | None = None
        """Where those random edges are drawn from, so a study is repeatable without touching global RNG state."""
        self.temperature: float = 1.0
        """Calibration: logits are divided by it before the task's outputs (saved in meta.json, not the state dict)."""

    def _view(
        self, h: Tensor, edge_index: Tensor, edge_type: Tensor, batch: Batch, augmentations: frozenset[str],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        c = self.config
        if "FM" in augmentations:
            h = feature_mask(h, c.feature_mask_ratio, generator, rescale=c.feature_mask_rescale)
        if "EP" in augmentations:
            edge_index, edge_type = edge_perturbation(
                edge_index, edge_type, batch.lengths, batch.speaker, self.n_speakers, c.edge_perturb_ratio, generator,
                causal=c.causal,
            )
        if "GP" in augmentations:
            edge_index, edge_type = global_proximity(
                edge_index, edge_type, batch.lengths, batch.speaker, self.n_speakers, c.proximity_ratio,
                order=c.katz_order, beta_scale=c.katz_beta, threshold=c.proximity_threshold, generator=generator,
                causal=c.causal,
            )
        return self._encode(h, edge_index, edge_type)

    def _view_pair(
        self, h: Tensor, edge_index: Tensor, edge_type: Tensor, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """H(1), H(2): view 1 then view 2 of the graph, each augmented as configured, through the shared encoder."""
        view1, view2 = self.config.views()
        return (self._view(h, edge_index, edge_type, batch, view1, generator),
                self._view(h, edge_index, edge_type, batch, view2, generator))

    def _encode(self, h: Tensor, edge_index: Tensor, edge_type: Tensor) -> Tensor:
        """The graph encoder on edges typed by pair (as built and augmented), folded first if configured."""
        if self.config.speaker_relations == "same-other":
            edge_type = same_other_types(edge_type, self.n_speakers)
        return self.encoder(h, edge_index, edge_type)

    def _graph(self, batch: Batch) -> tuple[Tensor, Tensor]:
        c = self.config
        edge_index, edge_type = window_graph(batch.lengths, batch.speaker, c.window_past, c.window_future, self.n_speakers)
        if not self.training and self.inference_edge_noise > 0:
            count = int(round(self.inference_edge_noise * edge_index.shape[1]))
            noise_index, noise_type = random_edges(
                edge_index, batch.lengths, batch.speaker, self.n_speakers, count, self.inference_edge_generator,
                causal=c.causal,
            )
            edge_index, edge_type = torch.cat([edge_index, noise_index], 1), torch.cat([edge_type, noise_type])
        return edge_index, edge_type

    def forward(self, batch: Batch, class_weight: Tensor | None = None) -> JoyfulOutput:
        c = self.config
        fused = self.fusion(self.missing(batch.x), batch.batch, batch.position, batch.lengths)
        losses: dict[str, Tensor] = {"mf": fused.loss, "ct": fused.loss.new_zeros(())}
        logits: Tensor | None = None
        if self.encoder is None:  # the context-free MLP baseline
            encoded = fused.nodes
        elif self.training and c.use_gcl:
            h1, h2 = self._view_pair(fused.nodes, *self._graph(batch), batch)
            encoded = h1 + h2
            losses["ct"] = contrastive_loss(h1, h2, c.temperature)
        elif c.use_gcl and c.inference_views > 0:
            encoded, logits = self._averaged_views(batch, fused.nodes)
        else:
            encoded = self._encode(fused.nodes, *self._graph(batch))
            if c.use_gcl:
                encoded = 2 * encoded
        if logits is None:
            logits = self._logits(encoded, fused.nodes)
        losses["ce"] = self.task.loss(logits, batch.y, class_weight, c.label_smoothing)  # CE, BCE or L1, by task
        losses["kd"] = logits.new_zeros(())
        if self.training and batch.teacher_probs is not None:
            losses["kd"] = distillation_loss(logits, batch.teacher_probs, self.task.labelled(batch.y), c.distill_temperature)
        losses["all"] = c.alpha * losses["mf"] + c.beta * losses["ct"] + losses["ce"] + c.distill_weight * losses["kd"]
        return JoyfulOutput(logits, losses, fused.nodes, encoded)

    def _logits(self, encoded: Tensor, nodes: Tensor) -> Tensor:
        if self.config.classifier_skip and self.encoder is not None:  # the clean node, in training as at inference
            return self.classifier(torch.cat([encoded, nodes], dim=1))
        return self.classifier(encoded)

    def _averaged_views(self, batch: Batch, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """Inference on ``inference_views`` pairs of augmented views: their mean encoding and mean logits."""
        c = self.config
        generator = torch.Generator(device=nodes.device).manual_seed(c.seed)
        graph = self._graph(batch)
        draws = []
        for _ in range(c.inference_views):
            h1, h2 = self._view_pair(nodes, *graph, batch, generator)
            draws.append(h1 + h2)
        logits = torch.stack([self._logits(encoded, nodes) for encoded in draws]).mean(0)
        return torch.stack(draws).mean(0), logits


__all__ = ["JoyfulModel", "JoyfulOutput"]
