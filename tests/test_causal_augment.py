"""A causal model's augmented views never show it the future it lacks at inference.

The clean causal graph has only edges j → i with j not after i; edge perturbation and
global proximity must keep it so. Checked on the edges each augmentation returns, on the
edges the encoder actually receives for both views in a training step, and against an
independent NumPy Katz score over directed paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY
from joyful.batching import collate, encode_dialogues
from joyful.config import JoyfulConfig
from joyful.data.labels import resolve_label_set
from joyful.model import JoyfulModel
from joyful.nn.augment import edge_perturbation, global_proximity, random_edges
from joyful.nn.graph import window_graph
from joyful.synthetic import generate_dialogues

LENGTHS = torch.tensor([23, 4, 31, 12])
N_SPEAKERS = 3


def _batch_graph(past: int = 6):
    lengths = LENGTHS
    speaker = torch.randint(0, N_SPEAKERS, (int(lengths.sum()),), generator=torch.Generator().manual_seed(1))
    edge_index, edge_type = window_graph(lengths, speaker, past, 0, N_SPEAKERS)
    return lengths, speaker, edge_index, edge_type


def _dialogue_and_position(lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Written out independently of the code under test: node k's dialogue and position."""
    dialogue, position = [], []
    for d, n in enumerate(lengths.tolist()):
        dialogue += [d] * n
        position += list(range(n))
    return np.array(dialogue), np.array(position)


def _assert_forward_in_time(edge_index: torch.Tensor, lengths: torch.Tensor) -> None:
    dialogue, position = _dialogue_and_position(lengths)
    src, dst = edge_index.numpy()
    assert (dialogue[src] == dialogue[dst]).all(), "an edge joins two dialogues"
    later = position[src] > position[dst]
    assert not later.any(), f"{int(later.sum())} edges point from a later utterance to an earlier one"


@pytest.mark.parametrize("seed", range(5))
def test_edge_perturbation_adds_only_forward_edges_when_causal(seed):
    lengths, speaker, edge_index, edge_type = _batch_graph()
    g = torch.Generator().manual_seed(seed)
    new_index, _ = edge_perturbation(edge_index, edge_type, lengths, speaker, N_SPEAKERS, 0.5, g, causal=True)
    _assert_forward_in_time(new_index, lengths)
    # The full-context version does draw backward edges here: the check above can fail.
    g = torch.Generator().manual_seed(seed)
    free, _ = edge_perturbation(edge_index, edge_type, lengths, speaker, N_SPEAKERS, 0.5, g)
    dialogue, position = _dialogue_and_position(lengths)
    assert (position[free[0].numpy()] > position[free[1].numpy()]).any()


def test_random_edges_when_causal_are_typed_as_past():
    lengths, speaker, edge_index, _ = _batch_graph()
    index, etype = random_edges(edge_index, lengths, speaker, N_SPEAKERS, 500, torch.Generator().manual_seed(3), causal=True)
    _assert_forward_in_time(index, lengths)
    assert (etype % 2 == 0).all()  # relation type's last bit is "source after target"


def _directed_katz(n: int, edges: list[tuple[int, int]], order: int, beta_scale: float) -> np.ndarray:
    """Katz over directed paths source → target, from scratch: K[i, j] scores paths j ⇝ i."""
    a = np.zeros((n, n))
    for j, i in edges:
        a[i, j] = 1.0
    beta = beta_scale / max(a.sum(1).max(), 1.0)
    total, power = np.zeros_like(a), np.eye(n)
    for _ in range(order):
        power = power @ (beta * a)
        total += power
    return total


@pytest.mark.parametrize("seed", range(3))
def test_global_proximity_when_causal_adds_forward_edges_of_high_directed_katz(seed):
    cfg = JoyfulConfig(causal=True, window_future=0)
    lengths, speaker, edge_index, edge_type = _batch_graph(cfg.window_past)
    out, _ = global_proximity(
        edge_index, edge_type, lengths, speaker, N_SPEAKERS, cfg.proximity_ratio, order=cfg.katz_order,
        beta_scale=cfg.katz_beta, threshold=cfg.proximity_threshold, generator=torch.Generator().manual_seed(seed),
        causal=True,
    )
    added = out[:, edge_index.shape[1]:]
    assert added.shape[1] == round(cfg.proximity_ratio * edge_index.shape[1])
    _assert_forward_in_time(out, lengths)
    # Every added edge is a non-adjacent pair whose min–max scaled directed Katz score reaches the threshold.
    starts = np.concatenate([[0], np.cumsum(lengths.numpy())[:-1]])
    dialogue, position = _dialogue_and_position(lengths)
    clean = set(map(tuple, edge_index.T.tolist()))
    for d, n in enumerate(lengths.tolist()):
        s = starts[d]
        local = [(j - s, i - s) for j, i in clean if s <= i < s + n]
        k = _directed_katz(n, local, cfg.katz_order, cfg.katz_beta)
        adjacent = {(i, j) for j, i in local}
        cands = [(i, j) for i in range(n) for j in range(i) if (i, j) not in adjacent]
        if not cands:
            continue
        vals = np.array([k[i, j] for i, j in cands])
        lo, hi = vals.min(), vals.max()
        for src, dst in added.T.tolist():
            if dialogue[src] != d:
                continue
            i, j = position[dst], position[src]
            assert (i, j) in cands
            scaled = 1.0 if hi == lo else (k[i, j] - lo) / (hi - lo)
            assert scaled >= cfg.proximity_threshold - 1e-6


def test_both_training_views_of_a_causal_model_see_only_the_past(monkeypatch, tmp_path):
    cfg = JoyfulConfig(**{**TINY, "causal": True, "window_future": 0, "edge_perturb_ratio": 0.5, "proximity_ratio": 0.5})
    ds = generate_dialogues(6, widths={"t": 8, "a": 4, "v": 4}, seed=4, min_length=15, max_length=30)
    labels = resolve_label_set(cfg.label_set, ds)
    encoded = encode_dialogues(labels.apply(ds), cfg.modality_order, labels)
    batch = collate(encoded, 4)
    model = JoyfulModel(cfg, {m: int(encoded[0].features[m].shape[1]) for m in cfg.modality_order}, len(labels.labels), 4)
    seen: list[torch.Tensor] = []
    encode = model.encoder.forward

    def recording(h, edge_index, edge_type):
        seen.append(edge_index)
        return encode(h, edge_index, edge_type)

    monkeypatch.setattr(model.encoder, "forward", recording)
    model.train()
    for _ in range(3):
        model(batch)
    assert len(seen) == 6  # two views per step
    clean = window_graph(batch.lengths, batch.speaker, cfg.window_past, 0, 4)[0]
    for edges in seen:
        assert edges.shape[1] > 0 and not torch.equal(edges, clean)  # augmented, not the clean graph
        _assert_forward_in_time(edges, batch.lengths)


def test_noisy_edge_evaluation_of_a_causal_model_stays_causal():
    cfg = JoyfulConfig(**{**TINY, "causal": True, "window_future": 0})
    ds = generate_dialogues(4, widths={"t": 8, "a": 4, "v": 4}, seed=5, min_length=10, max_length=20)
    labels = resolve_label_set(cfg.label_set, ds)
    encoded = encode_dialogues(labels.apply(ds), cfg.modality_order, labels)
    batch = collate(encoded, 4)
    model = JoyfulModel(cfg, {m: int(encoded[0].features[m].shape[1]) for m in cfg.modality_order}, len(labels.labels), 4)
    model.eval()
    model.inference_edge_noise = 1.0
    model.inference_edge_generator = torch.Generator().manual_seed(0)
    edge_index, _ = model._graph(batch)
    _assert_forward_in_time(edge_index, batch.lengths)
