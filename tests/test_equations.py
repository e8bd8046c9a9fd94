"""Each equation of the model (SPEC.md sections B, C, D) against small cases worked out by hand.

Expected values are literals derived in the comments, or come from a direct NumPy/Python
formula over 2–6 nodes; none calls the torch code under test to produce its own reference.
The whole network is also recomputed by a float64 NumPy reference forward (below) that reads
the modules only for their weights.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from joyful.batching import IGNORE_INDEX, EncodedDialogue, collate
from joyful.config import JoyfulConfig
from joyful.errors import JoyfulError
from joyful.model import JoyfulModel
from joyful.nn.augment import edge_perturbation, feature_mask, global_proximity
from joyful.nn.contrastive import contrastive_loss, inter_view_loss, intra_view_loss
from joyful.nn.fusion import JointFusion
from joyful.nn.graph import node_positions, num_relations, relation_type, same_other_types, window_graph
from joyful.nn.katz import katz_index, normalise_candidates
from joyful.nn.shared_basis import SharedBasisAttention
from joyful.nn.topic_smoothing import running_topic_vectors, topic_vectors

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


def test_same_other_types_fold_pairs_to_same_or_other_speaker_and_direction():
    lengths, speakers, P, edge_index, edge_type = _graph_case()
    _, position = node_positions(T(lengths))
    folded = same_other_types(edge_type, P).tolist()
    for (j, i), t in zip(edge_index.t().tolist(), folded, strict=True):  # naive reference, edge by edge
        other = speakers[j] != speakers[i]
        after = position[j].item() > position[i].item()
        assert t == 2 * other + after
    assert set(folded) == {0, 1, 2, 3}


def test_a_same_other_model_has_four_relation_types_and_trains():
    model, widths = _tiny_model(speaker_relations="same-other")
    assert model.encoder.rgcn[0].num_relations == 4
    out = model(_tiny_batch(widths))
    out.losses["all"].backward()
    assert model.encoder.rgcn[0].weight.grad.abs().sum() > 0
    with pytest.raises(JoyfulError, match="speaker_relations"):
        JoyfulConfig(speaker_relations="gender")


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


def test_rescaled_feature_mask_keeps_the_expected_value():
    h = torch.randn(4, 3000) + 5.0
    out = feature_mask(h, 0.25, generator=torch.Generator().manual_seed(3), rescale=True)
    kept = (out != 0).all(0)
    # the same columns as without rescaling, each multiplied by 1 / (1 - 0.25) = 4/3
    assert torch.equal(kept, (feature_mask(h, 0.25, generator=torch.Generator().manual_seed(3)) != 0).all(0))
    torch.testing.assert_close(out[:, kept], h[:, kept] * 4 / 3)
    # averaged over masks, a node's masked vector is its clean vector (within sampling error)
    mean = torch.stack([feature_mask(h[:1], 0.25, torch.Generator().manual_seed(s), rescale=True) for s in range(400)]).mean(0)
    assert (mean - h[:1]).abs().mean() < 0.15 * h[:1].abs().mean()


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


# ----------------------------------------------------------------------------- reference forward (NumPy)
#
# A second implementation of the whole network, written from SPEC.md in float64 NumPy.
# It reads the modules only for their weights (copied out as arrays); every computation —
# MLPs, the dialogue transformer, topic smoothing, the shared basis, the relational GCN
# (per-relation mean), the graph attention, batch norm, the InfoNCE losses and the
# cross-entropy — is done here, by the definitions, with explicit loops over dialogues,
# nodes and edges. Nothing below calls a module, or a function of ``joyful.nn``, to
# produce a number.


def W(t):
    """A parameter or buffer copied out as a float64 array."""
    return t.detach().double().cpu().numpy().copy()


def ref_linear(x, lin):
    y = x @ W(lin.weight).T
    return y if lin.bias is None else y + W(lin.bias)


def relu(x):
    return np.maximum(x, 0.0)


def ref_mlp(x, mlp):
    """Linear → ReLU → (dropout, off) → Linear; mlp[0] and mlp[3] are the two linear maps."""
    return ref_linear(relu(ref_linear(x, mlp[0])), mlp[3])


def np_softmax(s, axis=-1):
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def ref_layer_norm(x, ln):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * W(ln.weight) + W(ln.bias)


def spans(lengths):
    """(start, length) of each dialogue in the packed node numbering."""
    lengths = [int(n) for n in lengths]
    return list(zip(np.cumsum([0] + lengths[:-1]).tolist(), lengths))


def ref_transformer_layer(x, lengths, layer, heads, causal):
    """Post-norm encoder layer, attention within each dialogue (causal: keys j ≤ query i).

    The QKV projection's output columns are [q | k | v], each split into ``heads`` equal
    slices: the weight layout of the layer's single ``qkv`` linear map.
    """
    a = W(layer.qkv.weight).shape[0] // 3
    dh = a // heads
    qkv = ref_linear(x, layer.qkv)
    att = np.zeros((x.shape[0], a))
    for s, n in spans(lengths):
        q, k, v = (qkv[s : s + n, c * a : (c + 1) * a] for c in range(3))
        for h in range(heads):
            cols = slice(h * dh, (h + 1) * dh)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(dh)
            if causal:
                scores = np.where(np.tril(np.ones((n, n), dtype=bool)), scores, -np.inf)
            att[s : s + n, cols] = np_softmax(scores) @ v[:, cols]
    x = ref_layer_norm(x + ref_linear(att, layer.out), layer.norm1)
    ff = ref_linear(relu(ref_linear(x, layer.ff[0])), layer.ff[3])
    return ref_layer_norm(x + ff, layer.norm2)


def ref_topic(z, lengths, eta, causal):
    """z_con for every utterance: Σ_j exp(η·j)·ẑ_j / Σ_j exp(η·j) over the whole dialogue, or
    (causal) over j ≤ i. Computed prefix by prefix, naively; the weights of each sum are
    shifted by its own last exponent (same ratio, no overflow)."""
    out = np.zeros_like(z)
    for s, n in spans(lengths):
        for i in range(n):
            last = i if causal else n - 1
            w = np.exp(eta * (np.arange(last + 1) - last))
            out[s + i] = (w[:, None] * z[s : s + last + 1]).sum(0) / w.sum()
    return out


def ref_basis(z_l, basis_module):
    """B̃ = B W_b, z̃_m = W_m z_m, S = softmax_k cos(z̃_m, b̃_k), ẑ_m = S B̃ (nn.Linear stores Wᵀ)."""
    b = W(basis_module.basis) @ W(basis_module.w_b.weight).T
    unit_b = b / np.linalg.norm(b, axis=1, keepdims=True)
    out = {}
    for m, z in z_l.items():
        proj = z @ W(basis_module.w[m].weight).T
        cos = proj / np.linalg.norm(proj, axis=1, keepdims=True) @ unit_b.T
        out[m] = np_softmax(cos) @ b
    return out


def ref_fusion(fus, x, lengths, *, heads, eta, causal=False):
    """Paper B: nodes [ẑ^g; ẑ^ℓ] and the three fusion-loss parts (mean squared errors)."""
    mods = fus.modalities
    z_g = np.concatenate([ref_mlp(x[m], fus.global_mlps[m]) for m in mods], 1)
    z_hat = z_g
    for layer in fus.transformer.layers:
        z_hat = ref_transformer_layer(z_hat, lengths, layer, heads, causal)
    topic = ref_topic(z_hat, lengths, eta, causal)
    z_l = {m: ref_mlp(x[m], fus.specific_mlps[m]) for m in mods}
    z_l_hat = ref_basis(z_l, fus.basis)
    zl, zlh = (np.concatenate([d[m] for m in mods], 1) for d in (z_l, z_l_hat))
    parts = {
        "smooth": np.mean((z_hat - topic) ** 2),
        "global_rec": np.mean((z_hat - z_g) ** 2),
        "specific_rec": np.mean((zlh - zl) ** 2),
    }
    return np.concatenate([z_hat, zlh], 1), parts


def ref_rgcn(x, edges, conv):
    """h'_i = W_0 h_i + b + Σ_r (1/|N_r(i)|) Σ_{j∈N_r(i)} W_r h_j (edges: (src, dst, type) triples)."""
    weight = W(conv.weight)
    if conv.num_bases is not None:  # W_r = Σ_b comp[r, b] V_b
        weight = np.einsum("rb,bio->rio", W(conv.comp), weight)
    out = x @ W(conv.root) + W(conv.bias)
    incoming: dict[tuple[int, int], list[int]] = {}
    for s, d, t in edges:
        incoming.setdefault((d, t), []).append(s)
    for (d, t), srcs in incoming.items():
        out[d] += x[srcs].mean(0) @ weight[t]
    return out


def ref_graph_attention(x, edges, conv, heads, hidden):
    """TransformerConv: out_i = ‖_h Σ_{j→i} softmax_j(q_i·k_j/√C) v_j, plus the skip map of x_i."""
    n = x.shape[0]
    q, k, v = (ref_linear(x, lin).reshape(n, heads, hidden) for lin in (conv.lin_query, conv.lin_key, conv.lin_value))
    out = np.zeros((n, heads, hidden))
    for i in range(n):
        srcs = [s for s, d, _ in edges if d == i]  # with multiplicity
        for h in range(heads):
            if srcs:
                a = np_softmax(k[srcs, h] @ q[i, h] / math.sqrt(hidden))
                out[i, h] = a @ v[srcs, h]
    return out.reshape(n, heads * hidden) + ref_linear(x, conv.lin_skip)


def ref_batch_norm(x, bn, training):
    if training:
        mu, var = x.mean(0), x.var(0)  # biased batch variance normalises
    else:
        mu, var = W(bn.running_mean), W(bn.running_var)
    return (x - mu) / np.sqrt(var + bn.eps) * W(bn.weight) + W(bn.bias)


def ref_encoder(enc, h, edges, *, heads, hidden, training):
    """Paper C3 (public code's layer): project, then L × (RGCN → graph attention → BN → leaky ReLU).

    Batch statistics need two nodes, so a one-node training batch skips the norm.
    """
    h = ref_linear(h, enc.project)
    for rgcn, attention, norm in zip(enc.rgcn, enc.attention, enc.norms):
        h = ref_graph_attention(ref_rgcn(h, edges, rgcn), edges, attention, heads, hidden)
        if not (training and h.shape[0] == 1):
            h = ref_batch_norm(h, norm, training)
        h = np.where(h > 0, h, 0.01 * h)
    return h


def ref_contrastive(h1, h2, tau):
    """L_ct = (1/2m) Σ_i (L_inter(i) + L_intra(i)), cosine / τ; the intra denominator holds the
    positive pair in place of the trivial self-similarity (see test_intra_denominator_...)."""
    inter, intra = ref_inter(h1, h2, tau), ref_intra(h1, h2, tau)
    return (sum(inter) + sum(intra)) / (2 * len(h1))


def ref_cross_entropy(logits, y, weight=None):
    """Mean over labelled rows of −log softmax(logits)[y], weighted: Σ w_y·ℓ / Σ w_y."""
    rows = [i for i in range(len(y)) if y[i] != IGNORE_INDEX]
    w = [1.0 if weight is None else float(weight[y[i]]) for i in rows]
    nll = [np.log(np.exp(logits[i] - logits[i].max()).sum()) + logits[i].max() - logits[i, y[i]] for i in rows]
    return sum(wi * li for wi, li in zip(w, nll)) / sum(w) if rows else 0.0


def ref_edges_list(lengths, speakers, past, future, P):
    return sorted(ref_edges(lengths, speakers, past, future, P))


def ref_model_forward(model, batch, *, training, views=None, class_weight=None):
    """The whole network by the reference. ``views``: for a training step with GCL, the two
    random draws (kept-column mask, edge triples) of view 1 and view 2."""
    c = model.config
    x = {m: W(batch.x[m]) for m in model.modalities}
    lengths = batch.lengths.tolist()
    if c.fusion == "joint":
        nodes, parts = ref_fusion(model.fusion, x, lengths, heads=c.global_heads, eta=c.eta, causal=c.causal)
        mf = sum(parts.values())
    else:
        nodes, mf = np.concatenate([x[m] for m in model.modalities], 1), 0.0
    enc = dict(heads=c.gnn_heads, hidden=c.gnn_hidden)
    ct = 0.0
    if training and c.use_gcl:
        (keep1, edges1), (keep2, edges2) = views
        h1 = ref_encoder(model.encoder, nodes * keep1, edges1, training=True, **enc)
        h2 = ref_encoder(model.encoder, nodes * keep2, edges2, training=True, **enc)
        encoded = h1 + h2
        ct = ref_contrastive(h1, h2, c.temperature)
    else:
        clean = ref_edges_list(lengths, batch.speaker.tolist(), c.window_past, c.window_future, model.n_speakers)
        encoded = ref_encoder(model.encoder, nodes, clean, training=training, **enc)
        if c.use_gcl:
            encoded = 2 * encoded
    logits = ref_mlp(encoded, model.classifier)
    ce = ref_cross_entropy(logits, batch.y.tolist(), class_weight)
    return {"nodes": nodes, "encoded": encoded, "logits": logits, "mf": mf, "ct": ct, "ce": ce,
            "all": c.alpha * mf + c.beta * ct + ce}


class Recorder:
    """Records, during one model forward, each augmentation call, each encoder call and the
    contrastive loss's arguments (wrappers around the real functions, results unchanged)."""

    def __init__(self, monkeypatch, model):
        import joyful.model

        self.calls: list[tuple[str, tuple, dict, object]] = []
        for name, attr in (("FM", "feature_mask"), ("EP", "edge_perturbation"), ("GP", "global_proximity"),
                           ("CT", "contrastive_loss")):
            monkeypatch.setattr(joyful.model, attr, self._wrap(name, getattr(joyful.model, attr)))
        self.model = model

    def _wrap(self, name, fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.calls.append((name, args, kwargs, out))
            return out

        return wrapper

    def forward(self, batch, **kw):
        hook = self.model.encoder.register_forward_hook(
            lambda mod, args, kwargs, out: self.calls.append(("ENC", args, kwargs, out)), with_kwargs=True
        )
        try:
            return self.model(batch, **kw)
        finally:
            hook.remove()

    def named(self, name):
        return [c for c in self.calls if c[0] == name]

    def view_calls(self):
        """The encoder calls of view 1 and view 2: those whose outputs are L_ct's H(1) and H(2)."""
        (_, (h1, h2, *_), _, _), = self.named("CT")
        enc = self.named("ENC")
        pick = lambda h: next(c for c in enc if c[3] is h or torch.equal(c[3], h))  # noqa: E731
        return pick(h1), pick(h2)


def encoder_inputs(call):
    """(h, edge_index, edge_type) an encoder call received."""
    _, args, kwargs, _ = call
    names = ("h", "edge_index", "edge_type")
    values = dict(zip(names, args)) | {k: v for k, v in kwargs.items() if k in names}
    return values["h"], values["edge_index"], values["edge_type"]


def triples(edge_index, edge_type):
    return list(zip(edge_index[0].tolist(), edge_index[1].tolist(), edge_type.tolist()))


def recorded_view_draws(rec):
    """Each view's random draw as the reference needs it: the kept feature columns (those
    not all zero in the encoder's input) and its edge triples."""
    draws = []
    for call in rec.view_calls():
        h, ei, et = encoder_inputs(call)
        draws.append(((~(h == 0).all(0)).double().numpy(), triples(ei, et)))
    return draws


# ----------------------------------------------------------------------------- the reference on literals


def test_reference_graph_layers_on_a_literal_case():
    # The pieces of the reference encoder that are not textbook one-liners, on literals, so the
    # reference is itself checked (and the PyG layers with it).
    # RGCN, 3 nodes, 2 relation types, root = 0, bias = 0, W_0 = I, W_1 = 2I:
    #   edges 0→2 (r0), 1→2 (r0), 1→2 (r1), 0→1 (r1); x = [[1,0],[0,1],[3,3]]
    #   node 0: no input → 0; node 1: 2·x0 = (2,0); node 2: mean(x0,x1)·I + 2·x1 = (0.5,0.5)+(0,2) = (0.5,2.5)
    from torch_geometric.nn import RGCNConv, TransformerConv

    conv = RGCNConv(2, 2, 2)
    with torch.no_grad():
        conv.weight.copy_(T([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 2.0]]]))
        conv.root.zero_()
        conv.bias.zero_()
    edges = [(0, 2, 0), (1, 2, 0), (1, 2, 1), (0, 1, 1)]
    x = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    expected = [[0.0, 0.0], [2.0, 0.0], [0.5, 2.5]]
    close(ref_rgcn(x, edges, conv), expected)
    ei, et = T([[s for s, _, _ in edges], [d for _, d, _ in edges]]), T([t for _, _, t in edges])
    close(conv(torch.from_numpy(x).float(), ei, et), expected)
    # Graph attention, 1 head of width 2: query = key = value = identity, skip = 0.
    #   node 2 receives 0, 1, 1 (the duplicate counts twice): q2 = (3, 3); q·k = 3, 3, 3 over √2
    #   → uniform → (1/3)(x0 + 2·x1) = (1/3, 2/3).  node 1 receives only 0 → x0 = (1, 0); node 0 nothing → 0.
    att = TransformerConv(2, 2, heads=1)
    with torch.no_grad():
        for lin in (att.lin_query, att.lin_key, att.lin_value):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
        att.lin_skip.weight.zero_()
        att.lin_skip.bias.zero_()
    expected = [[0.0, 0.0], [1.0, 0.0], [1 / 3, 2 / 3]]
    close(ref_graph_attention(x, edges, att, 1, 2), expected)
    close(att(torch.from_numpy(x).float(), ei), expected)
    # with x1 = (0, 2) instead, node 2's scores are (3·1, 3·2, 3·2)/√2: softmax weights
    #   e^{3/√2} : e^{6/√2} : e^{6/√2}, so it leans on node 1.
    x2 = x.copy()
    x2[1] = [0.0, 2.0]
    w = np.exp(np.array([3.0, 6.0, 6.0]) / math.sqrt(2))
    w /= w.sum()
    close(att(torch.from_numpy(x2).float(), ei)[2], w[0] * x2[0] + (w[1] + w[2]) * x2[1])


# ----------------------------------------------------------------------------- B: fusion module


def _fusion(causal=False, layers=2):
    torch.manual_seed(0)
    widths = {"v": 5, "a": 3, "t": 6}
    fus = JointFusion(widths, ("v", "a", "t"), global_hidden=None, global_layers=layers, global_heads=2,
                      global_attention_dim=8, global_ff=16, eta=0.2, specific_dim=4, n_bases=3, dropout=0.0,
                      causal=causal).eval()
    return fus, widths


@pytest.mark.parametrize("causal", [False, True])
def test_fusion_against_reference(causal):
    # ẑ^g, z_con, ẑ^ℓ, the three loss parts and the node features, all by the NumPy reference
    # from the module's weights only (two transformer layers; dialogues of 4, 1 and 3).
    fus, widths = _fusion(causal)
    lengths = T([4, 1, 3])
    batch, position = node_positions(lengths)
    g = torch.Generator().manual_seed(1)
    x = {m: torch.randn(8, w, generator=g) for m, w in widths.items()}
    out = fus(x, batch, position, lengths)
    nodes, parts = ref_fusion(fus, {m: W(v) for m, v in x.items()}, [4, 1, 3], heads=2, eta=0.2, causal=causal)
    assert set(out.parts) == set(parts)
    for k in parts:
        close(out.parts[k], parts[k])
    close(out.loss, sum(parts.values()))
    # h = [ẑ^g; ẑ^ℓ] with ẑ^ℓ in the order [v; a; t]
    assert out.nodes.shape == (8, 14 + 3 * 4)
    close(out.nodes, nodes, atol=1e-4)


def test_fusion_transformer_attends_within_each_dialogue_only():
    # Changing dialogue 2's inputs leaves dialogue 1's ẑ^g and nodes unchanged (and vice versa
    # they do change): attention must not cross the dialogue boundary.
    fus, widths = _fusion()
    lengths = T([4, 3])
    batch, position = node_positions(lengths)
    g = torch.Generator().manual_seed(2)
    x = {m: torch.randn(7, w, generator=g) for m, w in widths.items()}
    y = {m: v.clone() for m, v in x.items()}
    for v in y.values():
        v[4:] += 3.0
    a, b = fus(x, batch, position, lengths).nodes, fus(y, batch, position, lengths).nodes
    close(a[:4], b[:4])
    assert (a[4:] - b[4:]).abs().max() > 1e-2


def test_causal_fusion_nodes_ignore_later_utterances():
    # causal attention: utterance i's node depends on utterances ≤ i only
    fus, widths = _fusion(causal=True)
    lengths = T([6])
    batch, position = node_positions(lengths)
    g = torch.Generator().manual_seed(3)
    x = {m: torch.randn(6, w, generator=g) for m, w in widths.items()}
    y = {m: v.clone() for m, v in x.items()}
    for v in y.values():
        v[4] += 5.0
    a, b = fus(x, batch, position, lengths).nodes, fus(y, batch, position, lengths).nodes
    close(a[:4], b[:4])
    assert (a[4:] - b[4:]).abs().max() > 1e-2


# ----------------------------------------------------------------------------- B1: running topic on long dialogues


def np_running_topic(z, lengths, eta):
    """Naive per-prefix topic, float64: for each i, Σ_{j≤i} e^{ηj} z_j / Σ_{j≤i} e^{ηj} of its dialogue."""
    return ref_topic(np.asarray(z, dtype=np.float64), lengths, eta, causal=True)


def _running(z, lengths, eta):
    lengths = T(lengths)
    batch, position = node_positions(lengths)
    return running_topic_vectors(torch.as_tensor(z, dtype=torch.float32), batch, position, lengths, eta)


@pytest.mark.parametrize("eta", [0.2, 0.05])
def test_running_topic_long_dialogues_against_naive_prefixes(eta):
    # five dialogues of very different lengths, two of them 200+ utterances, in one batch
    lengths = [230, 1, 57, 301, 12]
    z = np.random.default_rng(0).standard_normal((sum(lengths), 5))
    got = _running(z, lengths, eta)
    close(got, np_running_topic(z, lengths, eta), atol=2e-5)
    # literal consequences: each dialogue's first utterance is its own topic ...
    for s, _ in spans(lengths):
        close(got[s], z[s])
    # ... and the 1-utterance dialogue is untouched by its 230- and 57-utterance neighbours
    close(got[230], z[230])
    # the second utterance of a dialogue: (z_0 + e^η z_1) / (1 + e^η)
    s = 231
    close(got[s + 1], (z[s] + math.exp(eta) * z[s + 1]) / (1 + math.exp(eta)))


def test_running_topic_respects_dialogue_boundaries():
    # changing one dialogue's vectors changes no other dialogue's running topic; the last
    # utterance's running topic is the whole dialogue's (non-causal) topic vector
    lengths = [230, 1, 57, 301, 12]
    rng = np.random.default_rng(1)
    z = rng.standard_normal((sum(lengths), 4))
    z2 = z.copy()
    z2[231:288] = rng.standard_normal((57, 4)) * 10  # the third dialogue
    a, b = _running(z, lengths, 0.2), _running(z2, lengths, 0.2)
    mask = np.ones(sum(lengths), dtype=bool)
    mask[231:288] = False
    assert torch.equal(a[torch.from_numpy(mask)], b[torch.from_numpy(mask)])
    assert (a[231:288] - b[231:288]).abs().min() > 0
    lt = T(lengths)
    batch, position = node_positions(lt)
    whole = topic_vectors(torch.from_numpy(z).float(), batch, position, lt, 0.2)
    last = np.cumsum(lengths) - 1
    close(a[torch.from_numpy(last)], whole, atol=2e-5)


def test_running_topic_very_long_dialogue():
    # 600 utterances: weights taken relative to the dialogue's last utterance, exp(0.2·(0 − 599))
    # = e^-119.8 ≈ 1e-52, underflow float32, and the first ~150 prefixes came out as 0 instead
    # of z_0, … (a bug this caught); each prefix must be weighted relative to its own end.
    lengths = [600, 40]
    z = np.random.default_rng(2).standard_normal((640, 3))
    got = _running(z, lengths, 0.2)
    close(got[0], z[0])
    close(got, np_running_topic(z, lengths, 0.2), atol=2e-5)


# ----------------------------------------------------------------------------- D: the whole model against the reference


def _tiny_model(**over):
    cfg = JoyfulConfig(**{**dict(global_attention_dim=8, global_ff=16, global_layers=1, global_heads=2, specific_dim=4,
                                 gnn_hidden=4, gnn_heads=2, n_bases=3, classifier_hidden=6, window_past=1,
                                 window_future=1, dropout=0.0), **over})
    widths = {"t": 6, "a": 3, "v": 5}
    return JoyfulModel(cfg, widths, 3, 2), widths


def _tiny_batch(widths, labels=((0, 1, 2, IGNORE_INDEX, 1), (2, 1, 0), (1, 1, 0, 2, 0, 2))):
    g = torch.Generator().manual_seed(3)
    ds = []
    for k, y in enumerate(labels):
        n = len(y)
        ds.append(EncodedDialogue(f"d{k}", {m: torch.randn(n, w, generator=g) for m, w in widths.items()},
                                  T([(i + k) % 2 for i in range(n)]), T(list(y)), 2))
    return collate(ds, 2)


def _check_against(out, ref):
    close(out.logits, ref["logits"], atol=1e-4)
    close(out.encoded, ref["encoded"], atol=1e-4)
    close(out.fused, ref["nodes"], atol=1e-4)
    for k in ("mf", "ct", "ce", "all"):
        close(out.losses[k], ref[k], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_training_step_with_gcl_against_reference(monkeypatch, seed):
    # Default views FM+EP / FM+GP. The reference takes from the run only its random draws —
    # each view's kept feature columns and edge list — and recomputes everything else: fusion,
    # both encoder passes, L_ct(H(1), H(2)), the classifier on H(1) + H(2), L_ce, and
    # L_all = α·L_mf + β·L_ct + L_ce with α, β not 1.
    torch.manual_seed(seed)
    model, widths = _tiny_model(alpha=0.7, beta=1.9)
    model.train()
    batch = _tiny_batch(widths)
    rec = Recorder(monkeypatch, model)
    out = rec.forward(batch)
    draws = recorded_view_draws(rec)
    # the draws are what the augmentations produced: view 1's edges are EP's output, view 2's GP's
    (_, _, _, ep_out), = rec.named("EP")
    (_, _, _, gp_out), = rec.named("GP")
    assert draws[0][1] == triples(*ep_out) and draws[1][1] == triples(*gp_out)
    assert all(0.0 < keep.mean() < 1.0 for keep, _ in draws), "FM masked nothing, or everything"
    ref = ref_model_forward(model, batch, training=True, views=draws)
    _check_against(out, ref)
    assert ref["ct"] > 0 and ref["mf"] > 0
    # L_ct is not symmetric in its views: swapping H(1) and H(2) gives another value, so the
    # match above also fixes which view is which
    swapped = ref_model_forward(model, batch, training=True, views=draws[::-1])
    assert abs(swapped["ct"] - ref["ct"]) > 1e-4


def test_training_step_without_augmentation_against_reference():
    # All ratios 0: both views are the clean window graph with every feature, so H(1) = H(2) =
    # H(clean) and no draw is needed; a training-mode (batch-statistics) reference, untouched.
    torch.manual_seed(0)
    model, widths = _tiny_model(alpha=0.3, beta=0.8, feature_mask_ratio=0.0, edge_perturb_ratio=0.0,
                                proximity_ratio=0.0)
    batch = _tiny_batch(widths)
    out = model.train()(batch)
    c = model.config
    clean = ref_edges_list(batch.lengths.tolist(), batch.speaker.tolist(), 1, 1, 2)
    keep = np.ones(model.fusion.out_dim)
    ref = ref_model_forward(model, batch, training=True, views=[(keep, clean), (keep, clean)])
    _check_against(out, ref)
    h = ref["encoded"] / 2
    close(out.losses["ct"], ref_contrastive(h, h, c.temperature), atol=1e-4)


def test_training_step_without_gcl_against_reference():
    # "w/o GCL": one clean view, no contrastive term, the classifier reads H(clean) itself
    torch.manual_seed(0)
    model, widths = _tiny_model(alpha=0.5, beta=2.0, use_gcl=False)
    batch = _tiny_batch(widths)
    out = model.train()(batch)
    ref = ref_model_forward(model, batch, training=True)
    _check_against(out, ref)
    assert out.losses["ct"].item() == 0.0


@pytest.mark.parametrize("use_gcl", [True, False])
@pytest.mark.parametrize("fusion", ["joint", "concat"])
def test_eval_against_reference(use_gcl, fusion):
    # Inference: clean window graph (the reference builds its own, by the definition), batch
    # norm on set running statistics, classifier on 2·H(clean) when trained with GCL
    torch.manual_seed(0)
    model, widths = _tiny_model(alpha=0.5, beta=2.0, use_gcl=use_gcl, fusion=fusion, gnn_layers=2)
    with torch.no_grad():
        for k, bn in enumerate(model.encoder.norms):
            d = bn.running_mean.numel()
            bn.running_mean.copy_(0.1 * torch.arange(d) - 0.2 * k)
            bn.running_var.copy_(0.5 + 0.25 * torch.arange(d))
    batch = _tiny_batch(widths)
    out = model.eval()(batch)
    ref = ref_model_forward(model, batch, training=False)
    _check_against(out, ref)
    assert out.losses["ct"].item() == 0.0
    if fusion == "concat":
        assert out.losses["mf"].item() == 0.0
