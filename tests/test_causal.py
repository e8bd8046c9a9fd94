"""The causal model for live use: past context only, so labels never change as a dialogue grows."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.errors import JoyfulError
from joyful.nn.topic_smoothing import running_topic_vectors, topic_vectors
from joyful.synthetic import generate_dialogues


def test_causal_needs_future_window_zero():
    with pytest.raises(JoyfulError, match="window_future"):
        JoyfulConfig(causal=True)
    assert JoyfulConfig(causal=True, window_future=0).causal


def test_running_topic_is_the_topic_of_each_prefix():
    lengths = torch.tensor([3, 5])
    batch = torch.repeat_interleave(torch.arange(2), lengths)
    position = torch.cat([torch.arange(3), torch.arange(5)])
    z = torch.randn(8, 4)
    running = running_topic_vectors(z, batch, position, lengths, 0.2)
    for i in range(5):  # prefix of length i+1 of the second dialogue
        prefix = topic_vectors(z[3 : 4 + i], torch.zeros(i + 1, dtype=torch.long), torch.arange(i + 1),
                               torch.tensor([i + 1]), 0.2)
        assert torch.allclose(running[3 + i], prefix[0], atol=1e-6)


def prefix_predictions(clf, dialogue, k):
    prefix = dialogue.subset(torch.arange(len(dialogue)).numpy() < k)
    prefix.origin = None
    return clf.predict([prefix])


@pytest.mark.parametrize("causal", [True, False])
def test_prefix_predictions_match_full_dialogue_only_when_causal(data_dir, causal):
    cfg = JoyfulConfig(**{**TINY, "epochs": 3, "causal": causal, "window_future": 0 if causal else 6})
    clf = Joyful(cfg).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", progress=False)
    d = generate_dialogues(1, widths=WIDTHS, seed=21, min_length=10, max_length=10).dialogues[0]
    full = clf.predict([d])
    same = []
    for k in (3, 6, 9):
        part = prefix_predictions(clf, d, k)
        same.append(all(abs(p - q) < 1e-5 for a, b in zip(part, full[:k]) for p, q in
                        zip(a["probabilities"].values(), b["probabilities"].values())))
    assert all(same) if causal else not any(same)
