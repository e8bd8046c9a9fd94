"""The speaker-aware dialogue graph (paper C1), built for a whole mini-batch at once."""

from __future__ import annotations

import torch
from torch import Tensor


def num_relations(n_speakers: int, speaker_relations: str = "pairs") -> int:
    """2·P² relation types: (speaker of source, speaker of target, past/future); 4 for ``same-other``."""
    return 4 if speaker_relations == "same-other" else 2 * n_speakers * n_speakers


def same_other_types(edge_type: Tensor, n_speakers: int) -> Tensor:
    """Pair-typed relations (:func:`relation_type`) folded to 4: same or other speaker × past/future.

    Speaker slots are numbered by order of appearance in each dialogue, so "speaker 0 → speaker
    1" means "the one who spoke first → the other"; with MELD's up to 9 speakers the 2·P²
    pair types are also mostly rare. Folding keeps what is comparable across dialogues:
    whether an utterance answers someone else or continues its own speaker's turn.
    """
    pair, future = edge_type // 2, edge_type % 2
    other = (pair // n_speakers != pair % n_speakers).long()
    return other * 2 + future


def relation_type(src_speaker: Tensor, dst_speaker: Tensor, src_pos: Tensor, dst_pos: Tensor, n_speakers: int) -> Tensor:
    """Relation of edge j → i: ``(s_j·P + s_i)·2 + d`` with d = 0 if j is not after i (past), 1 if after.

    Distinguishes intra- from inter-speaker dependencies and their direction, as in
    DialogueGCN. A self-loop (j = i) counts as past.
    """
    future = (src_pos > dst_pos).long()
    return (src_speaker * n_speakers + dst_speaker) * 2 + future


def window_graph(
    lengths: Tensor, speaker: Tensor, past: int, future: int, n_speakers: int
) -> tuple[Tensor, Tensor]:
    """Edges j → i for every utterance j within ``past`` before to ``future`` after i, same dialogue.

    ``-1`` means unbounded ("ALL"). Nodes are numbered dialogue after dialogue, as in a
    PyG batch. Built by broadcasting offsets over all nodes, with no Python loop over
    utterances or dialogues.

    Shapes: ``lengths (B,)``, ``speaker (N,)`` → ``edge_index (2, E)``, ``edge_type (E,)``.
    """
    device = lengths.device
    batch, position = node_positions(lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    longest = int(lengths.max()) if lengths.numel() else 0
    lo = longest - 1 if past < 0 else past
    hi = longest - 1 if future < 0 else future
    offsets = torch.arange(-lo, hi + 1, device=device)
    src_pos = position[:, None] + offsets[None, :]  # (N, W)
    valid = (src_pos >= 0) & (src_pos < lengths[batch][:, None])
    dst = torch.arange(batch.numel(), device=device)[:, None].expand_as(src_pos)[valid]
    src = (starts[batch][:, None] + src_pos)[valid]
    edge_index = torch.stack([src, dst])
    edge_type = relation_type(speaker[src], speaker[dst], position[src], position[dst], n_speakers)
    return edge_index, edge_type


def node_positions(lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Dialogue index and position within the dialogue of every node, from dialogue lengths."""
    batch = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    return batch, torch.arange(batch.numel(), device=lengths.device) - starts[batch]
