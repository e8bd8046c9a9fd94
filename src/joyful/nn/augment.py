"""The three graph augmentations of paper C2: feature masking, edge perturbation, global proximity.

Each works on a whole mini-batch (PyG-style: nodes of all dialogues numbered in one
range) and never creates an edge between two dialogues. With ``causal`` (a model that
only ever sees the past), every edge they add goes from an utterance to the same or a
later one, so training never shows the classifier or the contrastive loss a context
the model cannot have at inference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from joyful.nn.graph import node_positions, relation_type
from joyful.nn.katz import katz_index, normalise_candidates


def feature_mask(
    h: Tensor, ratio: float, generator: torch.Generator | None = None, *, rescale: bool = False
) -> Tensor:
    """FM: zero the same random ``ratio`` of feature dimensions in every node of the view.

    ``rescale`` divides the kept dimensions by ``1 - ratio``, as dropout does, so a view's
    features have the clean graph's expected value: the graph encoder's BatchNorm then
    collects in training the statistics it meets at inference, where nothing is masked.
    """
    if ratio <= 0:
        return h
    keep = (torch.rand(h.shape[-1], generator=generator, device=h.device) >= ratio).to(h.dtype)
    return h * (keep / (1.0 - ratio) if rescale else keep)


def _typed(src: Tensor, dst: Tensor, speaker: Tensor, position: Tensor, n_speakers: int) -> Tensor:
    return relation_type(speaker[src], speaker[dst], position[src], position[dst], n_speakers)


def random_edges(
    edge_index: Tensor, lengths: Tensor, speaker: Tensor, n_speakers: int, count: int,
    generator: torch.Generator | None = None, *, causal: bool = False,
) -> tuple[Tensor, Tensor]:
    """``count`` random typed edges, each between two utterances of one dialogue.

    A dialogue receives new edges in proportion to the edges it has (the host dialogue is
    that of a randomly drawn existing edge); the two ends are uniform within it, so a new
    edge may be intra- or inter-speaker. ``causal`` orients each edge from the earlier
    end to the later one (an unordered pair drawn uniformly, pointing forward in time).
    """
    batch, position = node_positions(lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    device = edge_index.device
    host = batch[edge_index[1, torch.randint(edge_index.shape[1], (count,), generator=generator, device=device)]]
    span = lengths[host].to(torch.float)
    src = starts[host] + (torch.rand(count, generator=generator, device=device) * span).long()
    dst = starts[host] + (torch.rand(count, generator=generator, device=device) * span).long()
    if causal:  # both ends lie in one dialogue, so the smaller node number is the earlier utterance
        src, dst = torch.minimum(src, dst), torch.maximum(src, dst)
    return torch.stack([src, dst]), _typed(src, dst, speaker, position, n_speakers)


def edge_perturbation(
    edge_index: Tensor,
    edge_type: Tensor,
    lengths: Tensor,
    speaker: Tensor,
    n_speakers: int,
    ratio: float,
    generator: torch.Generator | None = None,
    *,
    causal: bool = False,
) -> tuple[Tensor, Tensor]:
    """EP: drop ``ratio`` of the edges and add as many :func:`random_edges` (forward in time if ``causal``)."""
    n_edges = edge_index.shape[1]
    n_change = int(round(ratio * n_edges))
    if n_change == 0:
        return edge_index, edge_type
    keep = torch.randperm(n_edges, generator=generator, device=edge_index.device)[n_change:]
    new_index, new_type = random_edges(edge_index, lengths, speaker, n_speakers, n_change, generator, causal=causal)
    return torch.cat([edge_index[:, keep], new_index], dim=1), torch.cat([edge_type[keep], new_type])


def global_proximity(
    edge_index: Tensor,
    edge_type: Tensor,
    lengths: Tensor,
    speaker: Tensor,
    n_speakers: int,
    ratio: float,
    *,
    order: int,
    beta_scale: float,
    threshold: float,
    generator: torch.Generator | None = None,
    causal: bool = False,
) -> tuple[Tensor, Tensor]:
    """GP: add ``ratio``·E edges between non-adjacent utterances of high Katz proximity.

    Candidates are pairs of one dialogue not already joined whose normalised Katz score
    (see :func:`normalise_candidates`) reaches ``threshold``; the new edges are drawn
    uniformly among them. With a fully connected graph there is no candidate and the view
    is unchanged.

    ``causal``: proximity follows edge direction (Katz over directed paths, which in a
    past-only graph never pass through a later utterance) and a new edge only joins an
    utterance to a later one; otherwise direction is ignored.
    """
    n_add = int(round(ratio * edge_index.shape[1]))
    if n_add == 0:
        return edge_index, edge_type
    batch, position = node_positions(lengths)
    b, m = lengths.numel(), int(lengths.max())
    adjacency = torch.zeros(b, m, m, device=edge_index.device)  # [dialogue, target, source]
    src, dst = edge_index
    adjacency[batch[dst], position[dst], position[src]] = 1.0
    if causal:  # only sources before the target
        allowed = torch.ones(m, m, dtype=torch.bool, device=lengths.device).tril(-1)
    else:  # proximity ignores direction
        adjacency = torch.maximum(adjacency, adjacency.transpose(1, 2))
        allowed = ~torch.eye(m, dtype=torch.bool, device=lengths.device)
    inside = torch.arange(m, device=lengths.device)[None, :] < lengths[:, None]
    candidate = inside[:, :, None] & inside[:, None, :] & (adjacency == 0) & allowed[None]
    scores = normalise_candidates(katz_index(adjacency, order, beta_scale), candidate)
    chosen = (scores >= threshold).nonzero()  # (K, 3): dialogue, target position, source position
    if chosen.shape[0] == 0:
        return edge_index, edge_type
    pick = torch.randperm(chosen.shape[0], generator=generator, device=chosen.device)[:n_add]
    d, i, j = chosen[pick].unbind(1)
    starts = torch.cumsum(lengths, 0) - lengths
    new_src, new_dst = starts[d] + j, starts[d] + i
    new_type = _typed(new_src, new_dst, speaker, position, n_speakers)
    return (
        torch.cat([edge_index, torch.stack([new_src, new_dst])], dim=1),
        torch.cat([edge_type, new_type]),
    )
