"""JoyfulModel end to end on tiny widths: shapes, finite losses, backward, ablations, inference."""

from __future__ import annotations

import pytest
import torch

from joyful.batching import EncodedDialogue, collate, encode_dialogues
from joyful.config import JoyfulConfig
from joyful.data.labels import LabelSet
from joyful.model import JoyfulModel
from joyful.nn.graph import window_graph
from joyful.synthetic import generate_dialogues

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
    assert set(out.losses) == {"mf", "ct", "ce", "all"}
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


def test_class_weight_is_accepted():
    batch = make_batch(2)
    model = make_model(make_config())
    out = model.train()(batch, class_weight=torch.tensor([1.0, 2.0, 0.5, 1.0]))
    assert torch.isfinite(out.losses["all"])
    out.losses["all"].backward()


# ----------------------------------------------------------------------------- inference


@pytest.mark.parametrize("use_gcl", [True, False])
def test_eval_is_deterministic_and_uses_the_clean_graph(use_gcl):
    torch.manual_seed(2)
    batch = make_batch(2, seed=3)
    model = make_model(make_config(use_gcl=use_gcl))
    model.train()(batch)  # move the batch-norm running statistics away from their initial values
    model.eval()
    with torch.no_grad():
        first, second = model(batch), model(batch)
        assert torch.equal(first.logits, second.logits)
        ei, et = window_graph(batch.lengths, batch.speaker, 2, 2, 2)
        clean = model.encoder(first.fused, ei, et)
        factor = 2.0 if use_gcl else 1.0  # H(1) + H(2) with two identical un-augmented views
        torch.testing.assert_close(first.encoded, factor * clean)
        torch.testing.assert_close(first.logits, model.classifier(factor * clean))


def test_eval_dialogues_are_independent():
    # at inference a dialogue's predictions do not depend on the others in its batch
    data = generate_dialogues(3, widths=WIDTHS, labels=LABELS.labels, min_length=5, max_length=9, seed=4)
    enc = encode_dialogues(data, ("v", "a", "t"), LABELS)
    model = make_model(make_config()).eval()
    with torch.no_grad():
        alone = model(collate([enc[0]], 2)).logits
        together = model(collate(enc, 2)).logits[: len(enc[0])]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_training_mode_is_stochastic():
    torch.manual_seed(3)
    batch = make_batch(2)
    model = make_model(make_config(dropout=0.0)).train()
    a, b = model(batch).logits, model(batch).logits
    assert not torch.equal(a, b)  # the augmentations draw new views each step


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


def test_single_utterance_dialogue_train():
    model = make_model(make_config()).train()
    out = model(collate([one_dialogue(1, 0)], 2))
    out.losses["all"].backward()


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
