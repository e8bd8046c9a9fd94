"""Each equation of the model (SPEC.md sections B, C, D) against small cases worked out by hand.

Expected values are literals derived in the comments, or come from a direct NumPy/Python
formula over 2–6 nodes; none calls the torch code under test to produce its own reference.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from joyful.batching import IGNORE_INDEX, EncodedDialogue, collate
from joyful.config import JoyfulConfig
from joyful.model import JoyfulModel
from joyful.nn.augment import edge_perturbation, feature_mask, global_proximity
from joyful.nn.contrastive import contrastive_loss, inter_view_loss, intra_view_loss
from joyful.nn.fusion import JointFusion
from joyful.nn.graph import node_positions, num_relations, relation_type, window_graph
from joyful.nn.katz import katz_index, normalise_candidates
from joyful.nn.shared_basis import SharedBasisAttention
from joyful.nn.topic_smoothing import topic_vectors

T = torch.tensor


def _arr(x):
    return np.asarray(x.detach() if torch.is_tensor(x) else x, dtype=np.float64)


def close(actual, expected, atol=1e-5):
    np.testing.assert_allclose(_arr(actual), _arr(expected), rtol=1e-5, atol=atol)


# ----------------------------------------------------------------------------- B2: shared basis


def basis_module(w_m, w_b, basis, modalities=("t",)):
    mod = SharedBasisAttention(modalities, 2, 2)
    with torch.no_grad():
        mod.basis.copy_(T(basis, dtype=torch.float32))
        mod.w_b.weight.copy_(T(w_b, dtype=torch.float32))
        for m in modalities:
            mod.w[m].weight.copy_(T(w_m[m] if isinstance(w_m, dict) else w_m, dtype=torch.float32))
    return mod


def test_basis_attention_identity_maps():
    # B = I (b1 = e1, b2 = e2), W_m = W_b = I.
    # z = (3, 4): unit (0.6, 0.8) -> cosines (0.6, 0.8) -> S = softmax = (1, e^0.2)/(1 + e^0.2)
    #   = (0.450166, 0.549834); ẑ = S1·b1 + S2·b2 = (0.450166, 0.549834).
    # z = (-1, 0): cosines (-1, 0) -> S = (e^-1, 1)/(1 + e^-1) = (0.268941, 0.731059).
    eye = [[1.0, 0.0], [0.0, 1.0]]
    mod = basis_module(eye, eye, eye)
    out, att = mod({"t": T([[3.0, 4.0], [-1.0, 0.0]])})
    close(att["t"], [[0.450166, 0.549834], [0.268941, 0.731059]])
    close(out["t"], [[0.450166, 0.549834], [0.268941, 0.731059]])
    close(att["t"].sum(-1), [1.0, 1.0])


def test_basis_attention_scale_invariant_in_z():
    # cosine similarity: z and 10·z get the same attention
    eye = [[1.0, 0.0], [0.0, 1.0]]
    mod = basis_module(eye, eye, eye)
    _, a1 = mod({"t": T([[3.0, 4.0]])})
    _, a2 = mod({"t": T([[30.0, 40.0]])})
    close(a1["t"], a2["t"])


def test_basis_attention_applies_w_b():
    # B̃ = B W_b (paper, row vectors). nn.Linear stores weight = W_b^T, so with
    # weight = [[1, 1], [0, 2]] we have W_b = [[1, 0], [1, 2]] and, B = I, B̃ = W_b:
    # b̃1 = (1, 0), b̃2 = (1, 2).
    # z = (3, 4) -> unit (0.6, 0.8); cos(z, b̃1) = 0.6, cos(z, b̃2) = (0.6 + 1.6)/sqrt(5) = 0.983870.
    # S = softmax(0.6, 0.983870); ẑ = S1·(1, 0) + S2·(1, 2) = (1, 2·S2)  (the basis is not normalised).
    eye = [[1.0, 0.0], [0.0, 1.0]]
    mod = basis_module(eye, [[1.0, 1.0], [0.0, 2.0]], eye)
    close(mod.projected_basis(), [[1.0, 0.0], [1.0, 2.0]])
    out, att = mod({"t": T([[3.0, 4.0]])})
    c2 = 2.2 / math.sqrt(5.0)
    s2 = math.exp(c2) / (math.exp(0.6) + math.exp(c2))
    close(att["t"], [[1 - s2, s2]])
    close(out["t"], [[1.0, 2 * s2]])
    # and with a non-identity B as well: B = [[2, 0], [0, 1]] -> B̃ = B W_b = [[2, 0], [1, 2]]
    mod = basis_module(eye, [[1.0, 1.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, 1.0]])
    close(mod.projected_basis(), [[2.0, 0.0], [1.0, 2.0]])


def test_basis_attention_applies_w_m_per_modality():
    # W_t = I, W_a = swap: z = (3, 4) is seen as (3, 4) by t and (4, 3) by a, so the two
    # modalities get mirrored attention over the shared basis B = I.
    eye = [[1.0, 0.0], [0.0, 1.0]]
    swap = [[0.0, 1.0], [1.0, 0.0]]
    mod = basis_module({"t": eye, "a": swap}, eye, eye, modalities=("a", "t"))
    out, att = mod({"t": T([[3.0, 4.0]]), "a": T([[3.0, 4.0]])})
    close(att["t"], [[0.450166, 0.549834]])
    close(att["a"], [[0.549834, 0.450166]])
    close(out["a"], [[0.549834, 0.450166]])


# ----------------------------------------------------------------------------- B1: topic smoothing


def weighted_mean(rows, eta):
    w = [math.exp(eta * i) for i in range(len(rows))]
    return [sum(wi * r[k] for wi, r in zip(w, rows)) / sum(w) for k in range(len(rows[0]))]


@pytest.mark.parametrize("eta", [0.2, 1.0, 0.0])
def test_topic_vector_single_dialogue(eta):
    z = [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]
    lengths = T([3])
    batch, position = node_positions(lengths)
    got = topic_vectors(T(z), batch, position, lengths, eta)
    close(got, [weighted_mean(z, eta)])


def test_topic_vector_literal_eta_02():
    # weights 1, e^0.2, e^0.4 = 1, 1.221403, 1.491825; total 3.713228
    # dim 0: (1·1 + 1.491825·2)/3.713228 = 3.983649/3.713228 = 1.072827
    # dim 1: (1.221403 + 1.491825·2)/3.713228 = 4.205053/3.713228 = 1.132452
    lengths = T([3])
    batch, position = node_positions(lengths)
    got = topic_vectors(T([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]), batch, position, lengths, 0.2)
    close(got, [[1.072827, 1.132452]])


def test_topic_vector_dialogues_do_not_mix():
    d1 = [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]
    d2 = [[5.0, -1.0], [-3.0, 7.0]]
    lengths = T([3, 2])
    batch, position = node_positions(lengths)
    got = topic_vectors(T(d1 + d2), batch, position, lengths, 0.2)
    close(got, [weighted_mean(d1, 0.2), weighted_mean(d2, 0.2)])


def test_topic_vector_long_dialogue_stays_finite():
    # exp(0.2·499) overflows float32 if not rebased: the weighted mean of a constant is the constant
    lengths = T([500])
    batch, position = node_positions(lengths)
    got = topic_vectors(torch.full((500, 3), 2.5), batch, position, lengths, 0.2)
    close(got, [[2.5, 2.5, 2.5]])


# ----------------------------------------------------------------------------- C3: contrastive losses


def np_cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def ref_inter(h1, h2, tau):
    n = len(h1)
    return [-math.log(math.exp(np_cos(h1[i], h2[i]) / tau) / sum(math.exp(np_cos(h1[i], h2[j]) / tau) for j in range(n)))
            for i in range(n)]


def ref_intra(h1, h2, tau):
    n = len(h1)
    out = []
    for i in range(n):
        pos = math.exp(np_cos(h1[i], h2[i]) / tau)
        neg = sum(math.exp(np_cos(h1[i], h1[j]) / tau) for j in range(n) if j != i)
        out.append(-math.log(pos / (pos + neg)))
    return out


def test_contrastive_two_nodes_literal():
    # h1 = (e1, e2), h2 = (e1, e1), τ = 1.
    # inter(0): sims to h2 = (1, 1)   -> -log(e/(e+e)) = log 2 = 0.693147
    # inter(1): sims to h2 = (0, 0)   -> log 2
    # intra(0): pos = cos(e1,e1) = 1, neg cos(e1,e2) = 0 -> -log(e/(e+1)) = log(1+e^-1) = 0.313262
    # intra(1): pos = cos(e2,e1) = 0, neg cos(e2,e1) = 0 -> log 2
    # L_ct = (1/2m) Σ (inter + intra) = (3·0.693147 + 0.313262)/4 = 0.598176
    h1 = T([[1.0, 0.0], [0.0, 1.0]])
    h2 = T([[1.0, 0.0], [1.0, 0.0]])
    close(inter_view_loss(h1, h2, 1.0), [0.693147, 0.693147])
    close(intra_view_loss(h1, h2, 1.0), [0.313262, 0.693147])
    close(contrastive_loss(h1, h2, 1.0), 0.598176)


@pytest.mark.parametrize("tau", [0.2, 0.5, 1.0])
def test_contrastive_three_nodes_against_formula(tau):
    h1 = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [-2.0, 0.3, 0.7]])
    h2 = np.array([[0.9, 2.2, -0.1], [0.0, -1.0, 2.0], [1.0, 1.0, 1.0]])
    a, b = torch.from_numpy(h1).float(), torch.from_numpy(h2).float()
    inter, intra = ref_inter(h1, h2, tau), ref_intra(h1, h2, tau)
    close(inter_view_loss(a, b, tau), inter, atol=1e-4)
    close(intra_view_loss(a, b, tau), intra, atol=1e-4)
    close(contrastive_loss(a, b, tau), (sum(inter) + sum(intra)) / (2 * 3), atol=1e-4)
    # cosine similarity: rescaling the vectors changes nothing
    close(contrastive_loss(7 * a, 0.1 * b, tau), (sum(inter) + sum(intra)) / 6, atol=1e-4)


def test_intra_denominator_replaces_self_similarity():
    # The naive Σ_j over the same view would include exp(s(h1_i, h1_i)/τ) = exp(1/τ);
    # the implementation puts the positive there instead: exp(pos/τ) + Σ_{j≠i} exp(s(h1_i,h1_j)/τ).
    h1 = np.array([[1.0, 0.0], [0.6, 0.8]])
    h2 = np.array([[0.0, 1.0], [0.6, 0.8]])
    tau = 0.5
    # node 0: pos = cos(e1, e2) = 0, neg = cos(e1, (.6,.8)) = 0.6
    #   -log(e^0 / (e^0 + e^1.2)) = log(1 + e^1.2) = 1.463282
    # node 1: pos = 1, neg = 0.6 -> -log(e^2 / (e^2 + e^1.2)) = log(1 + e^-0.8) = 0.371101
    got = intra_view_loss(torch.from_numpy(h1).float(), torch.from_numpy(h2).float(), tau)
    close(got, [1.463282, 0.371101])
    naive0 = -math.log(1.0 / (math.exp(2.0) + math.exp(1.2)))  # with the self term
    assert abs(float(got[0]) - naive0) > 0.5
    assert (got >= 0).all()


# ----------------------------------------------------------------------------- C2: Katz index


PATH4 = np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=float)


def test_katz_path_graph_literal_order2():
    # Path 0-1-2-3, max degree 2, beta_scale 0.5 -> β = 0.25.
    # A² = [[1,0,1,0],[0,2,0,1],[1,0,2,0],[0,1,0,1]];  K = 0.25·A + 0.0625·A²
    expected = [
        [0.0625, 0.25, 0.0625, 0.0],
        [0.25, 0.125, 0.25, 0.0625],
        [0.0625, 0.25, 0.125, 0.25],
        [0.0, 0.0625, 0.25, 0.0625],
    ]
    got = katz_index(torch.from_numpy(PATH4).float()[None], order=2, beta_scale=0.5)
    close(got[0], expected)


@pytest.mark.parametrize("order", [1, 3, 4])
def test_katz_path_graph_against_formula(order):
    beta = 0.5 / 2
    expected = sum(beta**k * np.linalg.matrix_power(PATH4, k) for k in range(1, order + 1))
    got = katz_index(torch.from_numpy(PATH4).float()[None], order=order, beta_scale=0.5)
    close(got[0], expected)
    # order 3: the end-to-end pair (0, 3) is reached by the single 3-step path: β³ = 1/64
    if order == 3:
        close(got[0, 0, 3], 1 / 64)


def test_katz_beta_per_graph_in_batch():
    # graph 1: the path (max degree 2, β = 0.25); graph 2: triangle on 3 of 4 nodes (max degree 2)
    # plus a pendant edge 2-3 making node 2 of degree 3 -> β = 0.5/3.
    g2 = np.array([[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 0]], dtype=float)
    adj = torch.from_numpy(np.stack([PATH4, g2])).float()
    got = katz_index(adj, order=3, beta_scale=0.5)
    for g, a, beta in ((0, PATH4, 0.25), (1, g2, 0.5 / 3)):
        close(got[g], sum(beta**k * np.linalg.matrix_power(a, k) for k in range(1, 4)))


def test_normalise_candidates_min_max_and_minus_one():
    scores = T([[[0.0, 0.8, 0.2], [0.8, 0.0, 0.5], [0.2, 0.5, 0.0]],
                [[9.0, 3.0, 3.0], [3.0, 9.0, 1.0], [3.0, 1.0, 9.0]]])
    cand = T([[[False, False, True], [False, False, True], [True, True, False]],
              [[False, True, False], [True, False, False], [False, False, False]]])
    # graph 0: candidates 0.2, 0.5, 0.2, 0.5 -> min 0.2, max 0.5 -> 0.2 ↦ 0, 0.5 ↦ 1
    # graph 1: candidates all 3.0 (no spread) -> 1
    expected = [[[-1, -1, 0], [-1, -1, 1], [0, 1, -1]],
                [[-1, 1, -1], [1, -1, -1], [-1, -1, -1]]]
    close(normalise_candidates(scores, cand), expected)
    # three distinct levels: 1, 2, 4 -> 0, 1/3, 1
    s = T([[[0.0, 1.0, 2.0, 4.0]]])
    c = T([[[False, True, True, True]]])
    close(normalise_candidates(s, c), [[[-1, 0, 1 / 3, 1]]])
    # no candidate at all -> every entry -1
    close(normalise_candidates(s, torch.zeros_like(c)), [[[-1, -1, -1, -1]]])


# ----------------------------------------------------------------------------- C1: relation typing


def ref_edges(lengths, speakers, past, future, P):
    """Edges j -> i of the window graph as a set of (src, dst, type), by the definition."""
    out, start = set(), 0
    for n in lengths:
        for i in range(n):
            for j in range(n):
                if (past < 0 or j >= i - past) and (future < 0 or j <= i + future):
                    si, sj = speakers[start + i], speakers[start + j]
                    out.add((start + j, start + i, (sj * P + si) * 2 + (1 if j > i else 0)))
        start += n
    return out


def edges_of(lengths, speakers, past, future, P):
    ei, et = window_graph(T(lengths), T(speakers), past, future, P)
    triples = list(zip(ei[0].tolist(), ei[1].tolist(), et.tolist()))
    assert len(triples) == len(set(triples)), "duplicate edges"
    return set(triples)


def test_window_graph_two_speakers_literal():
    # speakers [A, B, A], P = 2, past = future = 1; type = (s_src·2 + s_dst)·2 + [src after dst]
    #   0->0 (A,A,past) 0 | 1->0 (B,A,fut) 5 | 0->1 (A,B,past) 2 | 1->1 (B,B,past) 6
    #   2->1 (A,B,fut) 3  | 1->2 (B,A,past) 4 | 2->2 (A,A,past) 0
    expected = {(0, 0, 0), (1, 0, 5), (0, 1, 2), (1, 1, 6), (2, 1, 3), (1, 2, 4), (2, 2, 0)}
    assert edges_of([3], [0, 1, 0], 1, 1, 2) == expected


def test_window_graph_two_speakers_all():
    # past = -1, future = 1 on 4 utterances [A, B, B, A]: every earlier utterance plus the next one
    got = edges_of([4], [0, 1, 1, 0], -1, 1, 2)
    assert {(s, d) for s, d, _ in got} == {(j, i) for i in range(4) for j in range(4) if j <= i + 1}
    assert got == ref_edges([4], [0, 1, 1, 0], -1, 1, 2)
    # (3 -> 0) is not there (2 steps in the future); (0 -> 3) is, typed (A,A,past) = 0
    assert (0, 3, 0) in got and not any(s == 3 and d == 0 for s, d, _ in got)


def test_window_graph_three_speakers_literal():
    # speakers [0, 1, 2], P = 3, past = future = 1; type = (s_src·3 + s_dst)·2 + fut
    #   0->0: 0 | 1->0: (3+0)·2+1 = 7 | 0->1: (0+1)·2 = 2 | 1->1: (3+1)·2 = 8 | 2->1: (6+1)·2+1 = 15
    #   1->2: (3+2)·2 = 10 | 2->2: (6+2)·2 = 16
    expected = {(0, 0, 0), (1, 0, 7), (0, 1, 2), (1, 1, 8), (2, 1, 15), (1, 2, 10), (2, 2, 16)}
    assert edges_of([3], [0, 1, 2], 1, 1, 3) == expected


@pytest.mark.parametrize("past,future", [(1, 1), (-1, -1), (2, 0), (0, 0), (0, 2), (-1, 0), (3, -1)])
@pytest.mark.parametrize("P,speakers", [(2, [0, 1, 1, 0, 1, 0, 1, 1]), (3, [0, 1, 2, 2, 0, 1, 2, 0])])
def test_window_graph_batch_against_definition(past, future, P, speakers):
    # a batch of two dialogues (lengths 5 and 3); nodes numbered dialogue after dialogue
    lengths = [5, 3]
    got = edges_of(lengths, speakers, past, future, P)
    assert got == ref_edges(lengths, speakers, past, future, P)
    dialogue = [0] * 5 + [1] * 3
    assert all(dialogue[s] == dialogue[d] for s, d, _ in got), "edge across dialogues"
    assert all(0 <= t < num_relations(P) for _, _, t in got)
    # self-loops are present and typed as past
    for i in range(8):
        assert (i, i, (speakers[i] * P + speakers[i]) * 2) in got


def test_window_graph_sizes():
    # past = future = 1 on a path of n: n self-loops + 2(n-1) neighbours
    assert len(edges_of([6], [0] * 6, 1, 1, 1)) == 6 + 10
    # fully connected on 5 and 3: 25 + 9
    assert len(edges_of([5, 3], [0] * 8, -1, -1, 1)) == 34
    # window larger than the dialogue behaves like "all"
    assert edges_of([4], [0, 1, 0, 1], 10, 10, 2) == edges_of([4], [0, 1, 0, 1], -1, -1, 2)


@pytest.mark.parametrize("P", [1, 2, 3, 4])
def test_relation_types_are_a_bijection(P):
    combos = list(itertools.product(range(P), range(P), (0, 1)))  # src speaker, dst speaker, future?
    src_spk = T([c[0] for c in combos])
    dst_spk = T([c[1] for c in combos])
    # future: source at position 1, target at 0; past: source at 0, target at 1
    src_pos = T([1 if c[2] else 0 for c in combos])
    dst_pos = T([0 if c[2] else 1 for c in combos])
    types = relation_type(src_spk, dst_spk, src_pos, dst_pos, P)
    assert sorted(types.tolist()) == list(range(2 * P * P)) == list(range(num_relations(P)))
    # a self-loop (same position) is typed as past
    assert relation_type(T([0]), T([0]), T([3]), T([3]), P).item() == 0


# ----------------------------------------------------------------------------- C2: augmentations


def test_feature_mask_zeroes_whole_columns():
    h = torch.randn(30, 2000) + 5.0  # no accidental zeros
    g = torch.Generator().manual_seed(7)
    out = feature_mask(h, 0.2, generator=g)
    zero_cols = (out == 0).all(0)
    kept = ~zero_cols
    assert ((out == 0).any(0) == zero_cols).all(), "a column is partly masked"
    assert torch.equal(out[:, kept], h[:, kept])
    assert 0.17 < zero_cols.float().mean().item() < 0.23
    # same seed, same mask; no masking at ratio 0
    assert torch.equal(out, feature_mask(h, 0.2, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(feature_mask(h, 0.0), h)


def _graph_case():
    lengths = [5, 7, 3]
    speakers = [0, 1, 0, 1, 1, 0, 0, 1, 2, 1, 0, 2, 1, 0, 1]
    P = 3
    ei, et = window_graph(T(lengths), T(speakers), 2, 2, P)
    return lengths, speakers, P, ei, et


def _type(speakers, positions, s, d, P):
    return (speakers[s] * P + speakers[d]) * 2 + (1 if positions[s] > positions[d] else 0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ratio", [0.2, 0.1, 0.5])
def test_edge_perturbation(seed, ratio):
    lengths, speakers, P, ei, et = _graph_case()
    E = ei.shape[1]
    n = int(round(ratio * E))
    out_ei, out_et = edge_perturbation(ei, et, T(lengths), T(speakers), P, ratio, generator=torch.Generator().manual_seed(seed))
    assert out_ei.shape == (2, E) and out_et.shape == (E,)
    originals = list(zip(ei[0].tolist(), ei[1].tolist(), et.tolist()))
    kept = list(zip(out_ei[0, : E - n].tolist(), out_ei[1, : E - n].tolist(), out_et[: E - n].tolist()))
    pool = list(originals)
    for e in kept:  # the first E - n are originals, each used at most once
        pool.remove(e)
    assert len(pool) == n
    dialogue = sum(([k] * n_ for k, n_ in enumerate(lengths)), [])
    positions = sum((list(range(n_)) for n_ in lengths), [])
    for s, d, t in zip(out_ei[0, E - n :].tolist(), out_ei[1, E - n :].tolist(), out_et[E - n :].tolist()):
        assert dialogue[s] == dialogue[d], "new edge across dialogues"
        assert t == _type(speakers, positions, s, d, P)


def test_edge_perturbation_zero_ratio_is_identity():
    lengths, speakers, P, ei, et = _graph_case()
    out_ei, out_et = edge_perturbation(ei, et, T(lengths), T(speakers), P, 0.0)
    assert torch.equal(out_ei, ei) and torch.equal(out_et, et)


def ref_proximity_candidates(lengths, edges, order, beta_scale, threshold):
    """Pairs (src, dst) GP may add, by the definition, dialogue by dialogue in NumPy."""
    out, start = set(), 0
    for n in lengths:
        a = np.zeros((n, n))
        for s, d in edges:
            if start <= s < start + n:
                a[s - start, d - start] = a[d - start, s - start] = 1.0
        beta = beta_scale / max(a.sum(1).max(), 1.0)
        k = sum(beta**p * np.linalg.matrix_power(a, p) for p in range(1, order + 1))
        cand = [(i, j) for i in range(n) for j in range(n) if i != j and a[i, j] == 0]
        if cand:
            vals = [k[i, j] for i, j in cand]
            lo, hi = min(vals), max(vals)
            for (i, j), v in zip(cand, vals):
                if (1.0 if hi <= lo else (v - lo) / (hi - lo)) >= threshold - 1e-6:
                    out.add((start + j, start + i))
        start += n
    return out


@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.0])
def test_global_proximity_adds_high_katz_non_adjacent_pairs(threshold):
    lengths, speakers, P = [6, 3, 4], [0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1], 2
    ei, et = window_graph(T(lengths), T(speakers), 1, 1, P)
    E = ei.shape[1]
    edges = set(zip(ei[0].tolist(), ei[1].tolist()))
    expected = ref_proximity_candidates(lengths, edges, 4, 0.5, threshold)
    # 6-node path with self-loops: the distance-2 pair (0, 2) is always a candidate; the
    # distance-5 pair (0, 5) has Katz 0 at order 4 (normalised 0), so it is one only at threshold 0
    assert (0, 2) in expected and ((0, 5) in expected) == (threshold == 0.0)
    # 3-node dialogue: its only non-adjacent pair (6, 8) scores 1 and is always a candidate
    assert {(6, 8), (8, 6)} <= expected
    out_ei, out_et = global_proximity(ei, et, T(lengths), T(speakers), P, 0.99, order=4, beta_scale=0.5,
                                      threshold=threshold, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_ei[:, :E], ei) and torch.equal(out_et[:E], et), "GP must keep every edge"
    new = list(zip(out_ei[0, E:].tolist(), out_ei[1, E:].tolist()))
    assert len(new) == min(len(expected), int(round(0.99 * E)))
    assert len(set(new)) == len(new)
    assert set(new) <= expected
    assert not set(new) & edges, "GP added an existing edge"
    positions = sum((list(range(n)) for n in lengths), [])
    for (s, d), t in zip(new, out_et[E:].tolist()):
        assert t == _type(speakers, positions, s, d, P)
    # with room for all of them, every candidate is added
    if len(expected) <= int(round(0.99 * E)):
        assert set(new) == expected


def test_global_proximity_respects_ratio():
    lengths, speakers, P = [12], [0, 1] * 6, 2
    ei, et = window_graph(T(lengths), T(speakers), 1, 1, P)
    E = ei.shape[1]  # 12 + 22 = 34 -> round(0.2·34) = 7 new edges
    out_ei, _ = global_proximity(ei, et, T(lengths), T(speakers), P, 0.2, order=4, beta_scale=0.5, threshold=0.5,
                                 generator=torch.Generator().manual_seed(1))
    assert out_ei.shape[1] - E == 7


def test_global_proximity_fully_connected_adds_nothing():
    lengths, speakers, P = [5, 3], [0, 1, 0, 1, 0, 1, 1, 0], 2
    ei, et = window_graph(T(lengths), T(speakers), -1, -1, P)
    out_ei, out_et = global_proximity(ei, et, T(lengths), T(speakers), P, 0.2, order=4, beta_scale=0.5, threshold=0.5)
    assert torch.equal(out_ei, ei) and torch.equal(out_et, et)


# ----------------------------------------------------------------------------- B: fusion loss; D: objective


def _np(t):
    return t.detach().double().numpy()


def test_fusion_loss_parts_by_hand():
    torch.manual_seed(0)
    widths = {"v": 5, "a": 3, "t": 6}
    mods = ("v", "a", "t")
    fus = JointFusion(widths, mods, global_hidden=None, global_layers=1, global_heads=2, global_attention_dim=8,
                      global_ff=16, eta=0.2, specific_dim=4, n_bases=3, dropout=0.0).eval()
    lengths = T([3, 2])
    batch, position = node_positions(lengths)
    x = {m: torch.randn(5, w) for m, w in widths.items()}
    out = fus(x, batch, position, lengths)
    # L_mf is the sum of its three parts
    close(out.loss, sum(float(v.detach()) for v in out.parts.values()))
    assert set(out.parts) == {"smooth", "global_rec", "specific_rec"}

    # recompute each part with NumPy from the module's sub-maps
    z_g = np.concatenate([_np(fus.global_mlps[m](x[m])) for m in mods], 1)
    z_g_hat = _np(fus.transformer(torch.from_numpy(z_g).float(), batch))
    topic = np.stack([
        sum(math.exp(0.2 * i) * z_g_hat[s + i] for i in range(n)) / sum(math.exp(0.2 * i) for i in range(n))
        for s, n in ((0, 3), (3, 2))
    ])
    b_idx = [0, 0, 0, 1, 1]
    close(out.parts["smooth"], np.mean((z_g_hat - topic[b_idx]) ** 2))
    close(out.parts["global_rec"], np.mean((z_g_hat - z_g) ** 2))
    basis = _np(fus.basis.basis) @ _np(fus.basis.w_b.weight).T  # B̃ = B W_b
    z_l, z_l_hat = [], []
    for m in mods:
        zm = _np(fus.specific_mlps[m](x[m]))
        proj = zm @ _np(fus.basis.w[m].weight).T
        cos = (proj / np.linalg.norm(proj, axis=1, keepdims=True)) @ (basis / np.linalg.norm(basis, axis=1, keepdims=True)).T
        s = np.exp(cos) / np.exp(cos).sum(1, keepdims=True)
        z_l.append(zm)
        z_l_hat.append(s @ basis)
    z_l, z_l_hat = np.concatenate(z_l, 1), np.concatenate(z_l_hat, 1)
    close(out.parts["specific_rec"], np.mean((z_l_hat - z_l) ** 2))
    # node features h = [ẑ^g; ẑ^ℓ] in the order [v; a; t]
    assert out.nodes.shape == (5, 14 + 3 * 4)
    close(out.nodes, np.concatenate([z_g_hat, z_l_hat], 1), atol=1e-4)


def _tiny_model(**over):
    cfg = JoyfulConfig(global_attention_dim=8, global_ff=16, global_layers=1, specific_dim=4, gnn_hidden=4, gnn_heads=2,
                       n_bases=3, classifier_hidden=6, window_past=1, window_future=1, **over)
    widths = {"t": 6, "a": 3, "v": 5}
    return JoyfulModel(cfg, widths, 3, 2), widths


def _tiny_batch(widths, labels=((0, 1, 2, IGNORE_INDEX), (2, 1, 0))):
    g = torch.Generator().manual_seed(3)
    ds = []
    for k, y in enumerate(labels):
        n = len(y)
        ds.append(EncodedDialogue(f"d{k}", {m: torch.randn(n, w, generator=g) for m, w in widths.items()},
                                  T([i % 2 for i in range(n)]), T(list(y)), 2))
    return collate(ds, 2)


def test_total_loss_is_weighted_sum():
    torch.manual_seed(0)
    model, widths = _tiny_model(alpha=0.7, beta=1.9, dropout=0.0)
    model.train()
    batch = _tiny_batch(widths)
    seen = []
    hook = model.encoder.register_forward_hook(lambda mod, inp, out: seen.append(out))
    out = model(batch)
    hook.remove()
    L = out.losses
    close(L["all"], 0.7 * L["mf"].item() + 1.9 * L["ct"].item() + L["ce"].item())
    assert L["mf"].item() > 0 and L["ct"].item() > 0
    # two views encoded; L_ct is the contrastive loss of H(1), H(2); the classifier reads H(1) + H(2)
    assert len(seen) == 2
    h1, h2 = seen
    close(L["ct"], contrastive_loss(h1, h2, model.config.temperature).item())
    close(out.encoded, _np(h1 + h2))
    close(out.logits, _np(model.classifier(h1 + h2)), atol=1e-5)
    # L_ce: mean cross-entropy over labelled utterances only (one label is IGNORE_INDEX)
    logits, y = _np(out.logits), batch.y.numpy()
    rows = [i for i in range(len(y)) if y[i] != IGNORE_INDEX]
    ce = np.mean([np.log(np.exp(logits[i]).sum()) - logits[i, y[i]] for i in rows])
    close(L["ce"], ce)
    # L_mf is the fusion module's loss
    fused = model.fusion(batch.x, batch.batch, batch.position, batch.lengths)
    close(L["mf"], fused.loss.item())


def test_total_loss_without_gcl_and_in_eval():
    torch.manual_seed(0)
    model, widths = _tiny_model(alpha=0.5, beta=2.0, dropout=0.0, use_gcl=False)
    batch = _tiny_batch(widths)
    out = model.train()(batch)
    assert out.losses["ct"].item() == 0.0
    close(out.losses["all"], 0.5 * out.losses["mf"].item() + out.losses["ce"].item())
    model, widths = _tiny_model(alpha=0.5, beta=2.0)
    out = model.eval()(batch)
    assert out.losses["ct"].item() == 0.0
    close(out.losses["all"], 0.5 * out.losses["mf"].item() + out.losses["ce"].item())
