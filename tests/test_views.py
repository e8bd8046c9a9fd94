"""The two augmented views (paper C2) as the model builds them, GP at the default window, and
where the augmentations' random draws come from.

References are independent of the code under test: the window graph and the Katz index are
recomputed here from their definitions (NumPy), and the model's calls are observed through
recording wrappers that pass the real results through unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from joyful.batching import EncodedDialogue, collate
from joyful.config import JoyfulConfig
from joyful.model import JoyfulModel
from joyful.nn.augment import edge_perturbation, feature_mask, global_proximity, random_edges
from joyful.nn.graph import window_graph
from test_equations import Recorder, encoder_inputs, ref_edges, triples

T = torch.tensor
WIDTHS = {"t": 6, "a": 3, "v": 5}
TINY = dict(global_attention_dim=8, global_ff=16, global_layers=1, global_heads=2, specific_dim=4, gnn_hidden=4,
            gnn_heads=2, n_bases=3, classifier_hidden=6, dropout=0.0)


def model_of(**over) -> JoyfulModel:
    """A tiny model with the default graph and augmentation settings (window 6/6, FM+EP / FM+GP)."""
    return JoyfulModel(JoyfulConfig(**{**TINY, **over}), WIDTHS, 3, 2)


def batch_of(lengths=(30, 12, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    ds = [EncodedDialogue(f"d{k}", {m: torch.randn(n, w, generator=g) for m, w in WIDTHS.items()},
                          torch.randint(2, (n,), generator=g), torch.randint(3, (n,), generator=g), 2)
          for k, n in enumerate(lengths)]
    return collate(ds, 2)


def dialogue_and_position(lengths):
    dialogue = np.repeat(np.arange(len(lengths)), lengths)
    position = np.concatenate([np.arange(n) for n in lengths])
    return dialogue, position


# ----------------------------------------------------------------------------- which view gets which augmentation


def test_default_views_are_fm_ep_and_fm_gp():
    cfg = JoyfulConfig()
    assert cfg.views() == (frozenset({"FM", "EP"}), frozenset({"FM", "GP"}))
    assert (cfg.window_past, cfg.window_future) == (6, 6)  # the paper's best window


@pytest.mark.parametrize("view1,view2", [("FM+EP", "FM+GP"), ("FM+GP", "FM+EP"), ("EP", "GP")])
def test_each_view_gets_its_own_edge_augmentation(monkeypatch, view1, view2):
    torch.manual_seed(0)
    model = model_of(view1=view1, view2=view2).train()
    batch = batch_of()
    lengths, speakers = batch.lengths.tolist(), batch.speaker.tolist()
    clean = ref_edges(lengths, speakers, 6, 6, 2)
    rec = Recorder(monkeypatch, model)
    out = rec.forward(batch)
    assert len(rec.named("EP")) == 1 and len(rec.named("GP")) == 1, "each edge augmentation runs once per step"
    (_, ep_args, _, ep_out), = rec.named("EP")
    (_, gp_args, _, gp_out), = rec.named("GP")
    # on the clean window graph, so neither is stacked on the other's output
    assert set(triples(ep_args[0], ep_args[1])) == clean
    assert set(triples(gp_args[0], gp_args[1])) == clean
    call1, call2 = rec.view_calls()
    assert call1 is not call2 and len(rec.named("ENC")) == 2
    ep_view, gp_view = (call1, call2) if view1.endswith("EP") else (call2, call1)
    # the EP view's encoder receives EP's edges, the GP view's GP's edges, each as returned
    for call, (ei, et) in ((ep_view, ep_out), (gp_view, gp_out)):
        _, got_ei, got_et = encoder_inputs(call)
        assert torch.equal(got_ei, ei) and torch.equal(got_et, et)
    # what the encoders saw, by the definitions: EP keeps the edge count, drops some clean edges
    E = len(clean)
    _, ep_ei, ep_et = encoder_inputs(ep_view)
    ep_edges = triples(ep_ei, ep_et)
    assert len(ep_edges) == E and not clean <= set(ep_edges)
    assert len(set(ep_edges) & clean) >= E - round(0.2 * E)
    # GP keeps every clean edge and adds edges only between non-adjacent utterances (> 6 apart)
    _, gp_ei, gp_et = encoder_inputs(gp_view)
    gp_edges = triples(gp_ei, gp_et)
    added = gp_edges[E:]
    assert set(gp_edges[:E]) == clean and added
    dialogue, position = dialogue_and_position(lengths)
    assert all(dialogue[s] == dialogue[d] and abs(position[s] - position[d]) > 6 for s, d, _ in added)
    # FM: once per view that lists it, each view with its own mask; no FM → the fused nodes as they are
    fm = rec.named("FM")
    with_fm = [call for call, v in ((call1, view1), (call2, view2)) if "FM" in v]
    assert len(fm) == len(with_fm)
    for call, v in ((call1, view1), (call2, view2)):
        h = encoder_inputs(call)[0]
        if "FM" in v:
            keep = ~(h == 0).all(0)
            assert 0 < int(keep.sum()) < h.shape[1]
            assert torch.equal(h, out.fused * keep)
        else:
            assert torch.equal(h, out.fused)
    if len(with_fm) == 2:
        m1, m2 = ((encoder_inputs(c)[0] == 0).all(0) for c in with_fm)
        assert not torch.equal(m1, m2), "both views got the same feature mask"


@pytest.mark.parametrize("training,use_gcl", [(False, True), (False, False), (True, False)])
def test_no_augmentation_outside_gcl_training(monkeypatch, training, use_gcl):
    model = model_of(use_gcl=use_gcl).train(training)
    batch = batch_of()
    rec = Recorder(monkeypatch, model)
    out = rec.forward(batch)
    assert not rec.named("FM") and not rec.named("EP") and not rec.named("GP") and not rec.named("CT")
    (call,) = rec.named("ENC")
    h, ei, et = encoder_inputs(call)
    assert torch.equal(h, out.fused)
    assert set(triples(ei, et)) == ref_edges(batch.lengths.tolist(), batch.speaker.tolist(), 6, 6, 2)


# ----------------------------------------------------------------------------- GP at the default window


def np_katz_normalised(n, past, future, order, beta_scale):
    """Normalised Katz scores of one dialogue's window graph, and its candidate mask, in NumPy.

    Adjacency from the definition (|i − j| within the window, self-loops included, direction
    ignored); β = beta_scale / max degree; K = Σ_{k=1..order} β^k A^k; candidates are the
    non-adjacent pairs i ≠ j, min–max scaled over the candidates.
    """
    d = np.subtract.outer(np.arange(n), np.arange(n))  # i − j
    a = ((d <= past) & (-d <= future)).astype(float)
    a = np.maximum(a, a.T)
    beta = beta_scale / max(a.sum(1).max(), 1.0)
    k = sum(beta**p * np.linalg.matrix_power(a, p) for p in range(1, order + 1))
    cand = (a == 0) & ~np.eye(n, dtype=bool)
    score = np.full((n, n), -1.0)
    if cand.any():
        lo, hi = k[cand].min(), k[cand].max()
        score[cand] = (k[cand] - lo) / (hi - lo) if hi > lo else 1.0
    return score, cand


def gp_default(lengths, seed, n_speakers=3):
    cfg = JoyfulConfig()
    g = torch.Generator().manual_seed(100 + seed)
    speaker = torch.randint(n_speakers, (sum(lengths),), generator=g)
    ei, et = window_graph(T(lengths), speaker, cfg.window_past, cfg.window_future, n_speakers)
    out = global_proximity(ei, et, T(lengths), speaker, n_speakers, cfg.proximity_ratio, order=cfg.katz_order,
                           beta_scale=cfg.katz_beta, threshold=cfg.proximity_threshold,
                           generator=torch.Generator().manual_seed(seed))
    return cfg, speaker, (ei, et), out


@pytest.mark.parametrize("seed", range(3))
def test_global_proximity_at_default_window(seed):
    lengths = [40, 5, 23, 60, 9]
    cfg, speaker, (ei, et), (out_ei, out_et) = gp_default(lengths, seed)
    E = ei.shape[1]
    # the window graph by the definition: |i − j| ≤ 6 within a dialogue, self-loops included
    assert set(zip(ei[0].tolist(), ei[1].tolist())) == {(s, d) for s, d, _ in ref_edges(lengths, [0] * 137, 6, 6, 1)}
    assert torch.equal(out_ei[:, :E], ei) and torch.equal(out_et[:E], et), "GP must keep every edge"
    new = list(zip(out_ei[0, E:].tolist(), out_ei[1, E:].tolist()))
    # Candidates by the NumPy Katz: normalised score ≥ 0.5. At window 6, order 4, β = 0.5/13,
    # these are the pairs 7–10 apart in the 23-, 40- and 60-utterance dialogues (closer ones
    # are adjacent; farther ones score lower), 7 apart in the 9-utterance one, none in the 5.
    starts = np.cumsum([0] + lengths[:-1])
    allowed, score_of = set(), {}
    for k, (s0, n) in enumerate(zip(starts, lengths)):
        score, cand = np_katz_normalised(n, cfg.window_past, cfg.window_future, cfg.katz_order, cfg.katz_beta)
        for i, j in zip(*np.nonzero(cand)):
            score_of[(s0 + j, s0 + i)] = score[i, j]  # edge j → i
            if score[i, j] >= cfg.proximity_threshold:
                allowed.add((s0 + j, s0 + i))
                assert 7 <= abs(i - j) <= (10 if n > 9 else 7)
    n_add = round(cfg.proximity_ratio * E)
    assert len(allowed) > n_add  # enough candidates here, so exactly round(ratio·E) are added
    assert len(new) == n_add == len(set(new))
    assert set(new) <= allowed
    # the added pairs are among the highest-scoring candidates: none scores below any unadded
    # candidate under the threshold, and every one is non-adjacent (> 6 apart) in one dialogue
    below = [v for e, v in score_of.items() if v < cfg.proximity_threshold]
    assert min(score_of[e] for e in new) >= cfg.proximity_threshold > max(below)
    dialogue, position = dialogue_and_position(lengths)
    assert all(dialogue[s] == dialogue[d] and abs(position[s] - position[d]) > 6 for s, d in new)
    assert not any(dialogue[s] == 1 for s, _ in new)  # the 5-utterance dialogue has no non-adjacent pair
    # relation types of the new edges, by the definition
    spk = speaker.tolist()
    for (s, d), t in zip(new, out_et[E:].tolist()):
        assert t == (spk[s] * 3 + spk[d]) * 2 + int(position[s] > position[d])


def test_global_proximity_default_window_draws_vary_with_the_generator():
    lengths = [40, 5, 23, 60, 9]
    outs = [set(zip(*[x.tolist() for x in gp_default(lengths, s)[3][0]])) for s in range(3)]
    assert outs[0] != outs[1] and outs[1] != outs[2]
    again = set(zip(*[x.tolist() for x in gp_default(lengths, 0)[3][0]]))
    assert again == outs[0]


def test_global_proximity_default_window_short_dialogues():
    # Dialogues of 5, 9 and 8 utterances: only 9 and 8 have non-adjacent pairs (7 or 8 apart):
    # 9 → (0,7), (1,8), (0,8) each way; the 8-apart pair scores 0 (below 0.5) → 4 candidates;
    # 8 → (0,7) each way → 2. round(0.2·E) = round(0.2·(25+75+62)) = 32 > 6, so GP adds all 6.
    lengths = [5, 9, 8]
    _, _, (ei, _), (out_ei, _) = gp_default(lengths, 0)
    E = ei.shape[1]
    assert E == 25 + 75 + 62
    new = set(zip(out_ei[0, E:].tolist(), out_ei[1, E:].tolist()))
    s9, s8 = 5, 14
    assert new == {(s9 + 0, s9 + 7), (s9 + 7, s9 + 0), (s9 + 1, s9 + 8), (s9 + 8, s9 + 1), (s8, s8 + 7), (s8 + 7, s8)}
    # and a batch of only ≤ 7-utterance dialogues gets nothing at the default window
    _, _, (ei, et), (out_ei, out_et) = gp_default([7, 3, 6], 0)
    assert torch.equal(out_ei, ei) and torch.equal(out_et, et)


# ----------------------------------------------------------------------------- where the random draws come from


def _graph():
    lengths = T([30, 12])
    speaker = torch.arange(42) % 2
    ei, et = window_graph(lengths, speaker, 1, 1, 2)
    return lengths, speaker, ei, et


AUGMENT = {
    "FM": lambda g: (feature_mask(torch.randn(6, 500, generator=torch.Generator().manual_seed(9)) + 5, 0.2, g),),
    "EP": lambda g: edge_perturbation(*_graph()[2:], *_graph()[:2], 2, 0.2, g),
    "GP": lambda g: global_proximity(*_graph()[2:], *_graph()[:2], 2, 0.2, order=4, beta_scale=0.5, threshold=0.5,
                                     generator=g),
    "random_edges": lambda g: random_edges(_graph()[2], *_graph()[:2], 2, 25, g),
}


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", list(AUGMENT))
def test_augmentation_draws_come_from_the_generator_passed_in(name):
    aug = AUGMENT[name]
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = aug(torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state), "the global generator was used"
    torch.manual_seed(2)  # a different global state changes nothing
    assert _same(first, aug(torch.Generator().manual_seed(5)))
    assert not _same(first, aug(torch.Generator().manual_seed(6))), "the generator's seed has no effect"


@pytest.mark.parametrize("name", list(AUGMENT))
def test_augmentation_without_generator_follows_the_global_seed(name):
    # what the model relies on (it passes no generator): torch.manual_seed fixes the draws
    aug = AUGMENT[name]
    torch.manual_seed(3)
    a = aug(None)
    torch.manual_seed(3)
    assert _same(a, aug(None))
    torch.manual_seed(4)
    assert not _same(a, aug(None))
