"""JoyfulModel end to end on tiny widths: shapes, finite losses, backward, ablations, inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from joyful.batching import IGNORE_INDEX, EncodedDialogue, collate, encode_dialogues
from joyful.config import JoyfulConfig
from joyful.data.labels import LabelSet
from joyful.errors import JoyfulError
from joyful.model import JoyfulModel
from joyful.nn.graph import window_graph
from joyful.synthetic import generate_dialogues
from test_equations import Recorder, encoder_inputs, recorded_view_draws, ref_cross_entropy, ref_edges, ref_model_forward

WIDTHS = {"t": 12, "a": 6, "v": 8}
LABELS = LabelSet("tiny", ("hap", "sad", "neu", "ang"))
N_CLASSES = len(LABELS.labels)
SMALL = dict(
    global_attention_dim=16, global_ff=32, global_layers=1, specific_dim=16, gnn_hidden=8, gnn_heads=2,
    n_bases=4, classifier_hidden=8, window_past=2, window_future=2,
)
SUBSETS = ("t", "a", "v", "at", "av", "tv", "atv")


def make_config(**over) -> JoyfulConfig:
    return JoyfulConfig(**{**SMALL, **over})


def make_batch(n_speakers: int, modalities: str = "atv", n_dialogues: int = 3, seed: int = 0, lengths=(4, 9)):
    data = generate_dialogues(n_dialogues, widths=WIDTHS, labels=LABELS.labels, min_length=lengths[0],
                              max_length=lengths[1], speakers=(n_speakers, n_speakers), seed=seed)
    encoded = encode_dialogues(data, tuple(m for m in "vat" if m in modalities), LABELS)
    assert max(d.n_speakers for d in encoded) == n_speakers
    return collate(encoded, n_speakers)


def make_model(cfg: JoyfulConfig, n_speakers: int = 2) -> JoyfulModel:
    return JoyfulModel(cfg, {m: WIDTHS[m] for m in cfg.modalities}, N_CLASSES, n_speakers)


def check_step(model: JoyfulModel, batch, *, train: bool):
    model.train(train)
    model.zero_grad()
    out = model(batch)
    assert out.logits.shape == (batch.n_nodes, N_CLASSES)
    assert torch.isfinite(out.logits).all()
    for name, value in out.losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    assert set(out.losses) == {"mf", "ct", "kd", "ce", "all"}
    out.losses["all"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    return out


# ----------------------------------------------------------------------------- speakers × modalities


@pytest.mark.parametrize("modalities", SUBSETS)
@pytest.mark.parametrize("n_speakers", [1, 2, 3, 4])
def test_forward_backward_speakers_and_modalities(n_speakers, modalities):
    torch.manual_seed(0)
    batch = make_batch(n_speakers, modalities, seed=n_speakers)
    assert set(batch.x) == set(modalities)
    model = make_model(make_config(modalities=modalities), n_speakers)
    out = check_step(model, batch, train=True)
    assert out.losses["ct"] > 0 and out.losses["mf"] > 0
    out = check_step(model, batch, train=False)
    assert out.losses["ct"] == 0


def test_more_speakers_than_slots_share_the_last_slot():
    # a 4-speaker dialogue fed to a 2-speaker model: speakers 2, 3 collapse onto slot 1
    data = generate_dialogues(2, widths=WIDTHS, labels=LABELS.labels, min_length=6, max_length=8, speakers=(4, 4))
    batch = collate(encode_dialogues(data, ("v", "a", "t"), LABELS), 2)
    assert int(batch.speaker.max()) == 1
    check_step(make_model(make_config(), 2), batch, train=True)


# ----------------------------------------------------------------------------- ablations


ABLATIONS = [
    dict(use_gcl=False),
    dict(fusion="concat"),
    dict(fusion="concat", use_gcl=False),
    dict(view1="FM+EP", view2="FM+GP"),
    dict(view1="FM", view2="EP"),
    dict(view1="GP+EP", view2="FM"),
    dict(view1="GP", view2="GP"),
    dict(view1="EP", view2="EP"),
    dict(view1="FM+EP+GP", view2="FM"),
    dict(view1="FM+EP", view2="FM+EP", feature_mask_ratio=0.25, edge_perturb_ratio=0.1),  # official code
    dict(window_past=-1, window_future=-1),
    dict(window_past=-1, window_future=0),
    dict(window_future=0),
    dict(window_past=0, window_future=0),
    dict(gnn_layers=1),
    dict(gnn_layers=2),
    dict(gnn_layers=3),
    dict(gnn_layers=4),
    dict(rgcn_bases=3),
    dict(global_hidden=10, global_layers=2),
    dict(global_attention_dim=None, global_ff=None),
    dict(feature_mask_ratio=0.0, edge_perturb_ratio=0.0, proximity_ratio=0.0),
    dict(classifier_skip=True),
    dict(classifier_skip=True, use_gcl=False),
    dict(label_smoothing=0.1),
]


@pytest.mark.parametrize("over", ABLATIONS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_ablations_forward_backward(over):
    torch.manual_seed(1)
    batch = make_batch(3, seed=5)
    model = make_model(make_config(**over), 3)
    out = check_step(model, batch, train=True)
    if over.get("fusion") == "concat":
        assert out.losses["mf"] == 0
    if over.get("use_gcl") is False:
        assert out.losses["ct"] == 0
    check_step(model, batch, train=False)


def test_label_smoothing_reaches_the_supervised_loss():
    torch.manual_seed(3)
    model = make_model(make_config(label_smoothing=0.25)).eval()
    batch = make_batch(2, seed=8)
    out = model(batch)
    known = batch.y != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(out.logits[known], batch.y[known], label_smoothing=0.25)
    assert out.losses["ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.losses["ce"].item() != pytest.approx(torch.nn.functional.cross_entropy(out.logits[known], batch.y[known]).item())


@pytest.mark.parametrize("skip", [False, True])
def test_the_classifier_skip_carries_the_utterance_past_a_silenced_graph(skip):
    """With the graph encoder's output forced to zero, only the skip lets the logits tell utterances apart."""
    torch.manual_seed(2)
    model = make_model(make_config(classifier_skip=skip)).eval()
    model.encoder.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    logits = model(make_batch(2, seed=7)).logits
    spread = (logits - logits[0]).abs().max().item()
    assert (spread > 1e-4) if skip else (spread < 1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_class_weight_weights_the_cross_entropy(train):
    # L_ce with class weights w: Σ_i w_{y_i}·(−log p_i[y_i]) / Σ_i w_{y_i} over labelled utterances,
    # recomputed from the logits in NumPy; with non-uniform weights it differs from the plain mean
    torch.manual_seed(0)
    batch = make_batch(2)
    batch.y[1] = IGNORE_INDEX
    model = make_model(make_config(dropout=0.0)).train(train)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    torch.manual_seed(1)
    out = model(batch, class_weight=weight)
    logits, y = out.logits.detach().double().numpy(), batch.y.tolist()
    expected = ref_cross_entropy(logits, y, weight.tolist())
    torch.testing.assert_close(out.losses["ce"].item(), expected, rtol=1e-5, atol=1e-6)
    assert abs(expected - ref_cross_entropy(logits, y)) > 1e-3
    c = model.config
    torch.testing.assert_close(out.losses["all"].item(), c.alpha * out.losses["mf"].item()
                               + c.beta * out.losses["ct"].item() + expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- gradients


def _double_step(model, batch, seed=11):
    torch.manual_seed(seed)  # the same augmentation draws every time
    return model(batch)


def _double_setup():
    torch.manual_seed(0)
    model = make_model(make_config(dropout=0.0)).double().train()
    batch = make_batch(2, seed=7)
    batch.x = {m: v.double() for m, v in batch.x.items()}
    for row, m in ((1, "a"), (4, "t"), (6, "v")):  # one missing modality each, so the stand-ins learn too
        batch.x[m][row] = float("nan")
    return model, batch


#: Parameters whose gradient is zero by construction in a training step: attention's key bias
#: shifts every score of a query equally (softmax ignores it); the value and skip biases add the
#: same vector to every node right before batch norm, which removes it.
STRUCTURALLY_ZERO = ("attention.0.lin_key.bias", "attention.0.lin_value.bias", "attention.0.lin_skip.bias")


def test_gradients_reach_every_parameter_and_match_finite_differences():
    model, batch = _double_setup()
    out = _double_step(model, batch)
    model.zero_grad()
    out.losses["all"].backward()
    for name, p in model.named_parameters():
        if name.endswith(STRUCTURALLY_ZERO):
            continue
        assert p.grad is not None and p.grad.abs().max() > 1e-9, f"no gradient reaches {name}"
    # autograd against central differences of L_all, in float64, on the largest-gradient entry
    # of parameters in each part: fusion (global, specific, basis), missing stand-in, GNN, classifier
    named = dict(model.named_parameters())
    probes = ["missing.embedding.a", "fusion.global_mlps.t.0.weight", "fusion.transformer.layers.0.qkv.weight",
              "fusion.specific_mlps.v.3.weight", "fusion.basis.basis", "fusion.basis.w_b.weight",
              "encoder.project.weight", "encoder.rgcn.0.weight", "encoder.attention.0.lin_query.weight",
              "encoder.norms.0.weight", "classifier.3.bias"]
    eps = 1e-6
    for name in probes:
        p = named[name]
        idx = np.unravel_index(int(p.grad.abs().argmax()), p.shape)
        grad = float(p.grad[idx])
        with torch.no_grad():
            orig = float(p[idx])
            p[idx] = orig + eps
            up = _double_step(model, batch).losses["all"].item()
            p[idx] = orig - eps
            down = _double_step(model, batch).losses["all"].item()
            p[idx] = orig
        fd = (up - down) / (2 * eps)
        assert abs(fd - grad) <= 1e-8 + 1e-5 * abs(grad), (name, grad, fd)


def test_each_loss_term_reaches_the_parts_it_depends_on():
    # L_mf depends on the fusion module only; L_ct on fusion and GNN but not the classifier;
    # L_ce on all three. A detached node tensor or a classifier fed the wrong tensor breaks this.
    model, batch = _double_setup()
    parts = {"fusion.": [], "encoder.": [], "classifier.": []}
    for name, p in model.named_parameters():
        for prefix in parts:
            if name.startswith(prefix):
                parts[prefix].append(p)

    def reached(term):
        model.zero_grad()
        _double_step(model, batch).losses[term].backward()
        return {k: any(p.grad is not None and p.grad.abs().max() > 1e-12 for p in ps) for k, ps in parts.items()}

    assert reached("mf") == {"fusion.": True, "encoder.": False, "classifier.": False}
    assert reached("ct") == {"fusion.": True, "encoder.": True, "classifier.": False}
    assert reached("ce") == {"fusion.": True, "encoder.": True, "classifier.": True}


# ----------------------------------------------------------------------------- inference


@pytest.mark.parametrize("use_gcl", [True, False])
def test_eval_is_deterministic_and_matches_the_reference(use_gcl):
    # Inference by the NumPy reference (test_equations): its own window graph (2/2), batch norm
    # on the running statistics a training step left, classifier on 2·H(clean) with GCL
    torch.manual_seed(2)
    batch = make_batch(2, seed=3)
    model = make_model(make_config(use_gcl=use_gcl))
    model.train()(batch)  # move the batch-norm running statistics away from their initial values
    assert not torch.equal(model.encoder.norms[0].running_mean, torch.zeros_like(model.encoder.norms[0].running_mean))
    model.eval()
    with torch.no_grad():
        first, second = model(batch), model(batch)
    assert torch.equal(first.logits, second.logits)
    ref = ref_model_forward(model, batch, training=False)
    for key in ("logits", "encoded"):
        np.testing.assert_allclose(getattr(first, key).double().numpy(), ref[key], rtol=1e-4, atol=1e-4)
    for key in ("mf", "ce", "all"):
        np.testing.assert_allclose(first.losses[key].item(), ref[key], rtol=1e-4, atol=1e-5)


def test_inference_edge_noise_draws_from_its_generator():
    # the robustness study's random edges: E + round(0.3·E) edges, the clean ones first; drawn
    # from inference_edge_generator only (global state untouched, its seed decides)
    batch = make_batch(2, seed=3)
    model = make_model(make_config()).eval()
    with torch.no_grad():
        clean = model(batch).logits
        model.inference_edge_noise = 0.3
        edges = []
        hook = model.encoder.register_forward_pre_hook(lambda mod, args: edges.append(args[1]))

        def run(seed):
            model.inference_edge_generator = torch.Generator().manual_seed(seed)
            return model(batch).logits

        torch.manual_seed(0)
        state = torch.get_rng_state()
        a = run(5)
        assert torch.equal(torch.get_rng_state(), state), "noise drawn from the global generator"
        torch.manual_seed(99)
        assert torch.equal(a, run(5))
        assert not torch.allclose(a, run(6))
        assert not torch.allclose(a, clean)
        hook.remove()
    true = ref_edges(batch.lengths.tolist(), batch.speaker.tolist(), 2, 2, 2)
    E = len(true)
    assert edges[0].shape[1] == E + round(0.3 * E)
    assert {(s, d) for s, d in edges[0][:, :E].T.tolist()} == {(s, d) for s, d, _ in true}


def test_eval_dialogues_are_independent():
    # at inference a dialogue's predictions do not depend on the others in its batch
    data = generate_dialogues(3, widths=WIDTHS, labels=LABELS.labels, min_length=5, max_length=9, seed=4)
    enc = encode_dialogues(data, ("v", "a", "t"), LABELS)
    model = make_model(make_config()).eval()
    with torch.no_grad():
        alone = model(collate([enc[0]], 2)).logits
        together = model(collate(enc, 2)).logits[: len(enc[0])]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_training_views_are_random_and_follow_the_seed():
    # the augmentations draw from PyTorch's global generator: the same seed gives the same
    # views (hence logits and L_ct), another seed other views
    batch = make_batch(2)
    model = make_model(make_config(dropout=0.0)).train()

    def run(seed):
        torch.manual_seed(seed)
        return model(batch)

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.losses["ct"], b.losses["ct"])
    assert not torch.allclose(a.logits, c.logits) and not torch.allclose(a.losses["ct"], c.losses["ct"])


def test_training_randomness_is_the_augmentations(monkeypatch):
    # with dropout off and every augmentation ratio 0 a training step is deterministic whatever
    # the seed, and both views are the same clean view (H(1) = H(2)); so the randomness above
    # is the views', not some other source
    batch = make_batch(2)
    model = make_model(make_config(dropout=0.0, feature_mask_ratio=0.0, edge_perturb_ratio=0.0,
                                   proximity_ratio=0.0)).train()
    rec = Recorder(monkeypatch, model)
    torch.manual_seed(1)
    a = rec.forward(batch)
    call1, call2 = rec.view_calls()
    torch.manual_seed(2)
    b = model(batch)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.losses["all"], b.losses["all"])
    assert torch.equal(call1[3], call2[3])
    for call in (call1, call2):
        h, ei, _ = encoder_inputs(call)
        assert torch.equal(h, a.fused)
        assert {(s, d) for s, d in ei.T.tolist()} == {(s, d) for s, d, _ in
                                                       ref_edges(batch.lengths.tolist(), batch.speaker.tolist(), 2, 2, 2)}


# ----------------------------------------------------------------------------- odd dialogue lengths


def one_dialogue(n: int, seed: int, n_speakers: int = 2, name: str = "d") -> EncodedDialogue:
    g = torch.Generator().manual_seed(seed)
    return EncodedDialogue(
        name,
        {m: torch.randn(n, w, generator=g) for m, w in WIDTHS.items()},
        torch.arange(n) % n_speakers,
        torch.randint(N_CLASSES, (n,), generator=g),
        min(n, n_speakers),
    )


def test_single_utterance_dialogue_eval():
    model = make_model(make_config()).eval()
    out = model(collate([one_dialogue(1, 0)], 2))
    assert out.logits.shape == (1, N_CLASSES)
    assert all(torch.isfinite(v) for v in out.losses.values())


def test_single_utterance_dialogue_train(monkeypatch):
    # One node: its graph is its self-loop (EP and GP change round(0.2·1) = 0 edges), batch norm
    # is skipped (no batch statistics from one node), and both InfoNCE terms are exactly 0: the
    # positive is the only term of each softmax, −log(e^s / e^s) = 0. The rest is the reference.
    torch.manual_seed(0)
    model = make_model(make_config(dropout=0.0)).train()
    batch = collate([one_dialogue(1, 0)], 2)
    rec = Recorder(monkeypatch, model)
    out = rec.forward(batch)
    assert out.losses["ct"].item() == 0.0
    draws = recorded_view_draws(rec)
    assert [edges for _, edges in draws] == [[(0, 0, 0)], [(0, 0, 0)]]
    ref = ref_model_forward(model, batch, training=True, views=draws)
    np.testing.assert_allclose(out.logits.detach().double().numpy(), ref["logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.losses["all"].item(), ref["all"], rtol=1e-4, atol=1e-5)
    model.zero_grad()
    out.losses["all"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.classifier[3].bias.grad.abs().max() > 0
    assert math.isclose(out.losses["ce"].item(), ref["ce"], rel_tol=1e-4)


def test_two_single_utterance_dialogues_train():
    check_step(make_model(make_config()), collate([one_dialogue(1, 0), one_dialogue(1, 1)], 2), train=True)


@pytest.mark.parametrize("over", [{}, dict(window_past=-1, window_future=-1), dict(use_gcl=False)])
def test_mixed_lengths_1_and_40(over):
    torch.manual_seed(4)
    batch = collate([one_dialogue(1, 0, name="short"), one_dialogue(40, 1, name="long")], 2)
    assert batch.lengths.tolist() == [1, 40]
    model = make_model(make_config(**over))
    check_step(model, batch, train=True)
    out = check_step(model, batch, train=False)
    assert out.logits.shape == (41, N_CLASSES)
    # in the clean graph the lone utterance has only its self-loop
    ei, _ = window_graph(batch.lengths, batch.speaker, model.config.window_past, model.config.window_future, 2)
    assert ((ei[1] == 0) | (ei[0] == 0)).sum() == 1


def test_inference_views_average_the_classifier_over_augmented_view_pairs(monkeypatch):
    # inference_views = 3: six encoder passes, views FM+EP / FM+GP in turn, on the running
    # BatchNorm statistics; the reference recomputes each pass from its recorded draw (kept
    # columns, edges) and averages the classifier's logits over the three sums H(1) + H(2)
    from test_equations import ref_encoder, ref_mlp, triples

    torch.manual_seed(2)
    batch = make_batch(2, seed=3)
    model = make_model(make_config(inference_views=3))
    model.train()(batch)
    model.eval()
    rec = Recorder(monkeypatch, model)
    with torch.no_grad():
        out = rec.forward(batch)
    assert [name for name, *_ in rec.calls if name in ("FM", "EP", "GP")] == ["FM", "EP", "FM", "GP"] * 3
    clean = ref_model_forward(model, batch, training=False)
    enc = dict(heads=model.config.gnn_heads, hidden=model.config.gnn_hidden, training=False)
    passes = []
    for call in rec.named("ENC"):
        h, ei, et = encoder_inputs(call)
        keep = (~(h == 0).all(0)).double().numpy()
        passes.append(ref_encoder(model.encoder, clean["nodes"] * keep, triples(ei, et), **enc))
    assert len(passes) == 6
    sums = [passes[i] + passes[i + 1] for i in (0, 2, 4)]
    expected = np.mean([ref_mlp(s, model.classifier) for s in sums], axis=0)
    np.testing.assert_allclose(out.logits.double().numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.encoded.double().numpy(), np.mean(sums, axis=0), rtol=1e-4, atol=1e-4)
    assert not np.allclose(expected, clean["logits"], atol=1e-3), "the views changed nothing"


def test_inference_views_are_repeatable_and_leave_the_global_generator_alone():
    batch = make_batch(2, seed=3)
    model = make_model(make_config(inference_views=2)).eval()
    with torch.no_grad():
        torch.manual_seed(0)
        state = torch.get_rng_state()
        a = model(batch).logits
        assert torch.equal(torch.get_rng_state(), state), "views drawn from the global generator"
        torch.manual_seed(7)
        assert torch.equal(a, model(batch).logits)
        model.config = model.config.replace(seed=5)  # the config's seed chooses the draws
        assert not torch.allclose(a, model(batch).logits)


@pytest.mark.parametrize("over", [{"inference_views": -1}, {"inference_views": 2, "use_gcl": False}])
def test_inference_views_need_a_count_and_trained_views(over):
    with pytest.raises(JoyfulError, match="inference_views"):
        make_config(**over)
