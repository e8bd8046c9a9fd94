"""Utterance texts with their preceding turns, for encoders that should see the conversation.

A sentence encoder sees one string. Giving it ``"F: I'm here to get an ID. [SEP] M: I
need an ID to pass this form along. [SEP] ..."`` lets it read the emotion of a turn in
the light of what came before (the paper's fine-tuned RoBERTa gains from exactly this).
The current turn comes first, then earlier turns from the most recent back, so when the
encoder truncates a long string it drops the oldest context, never the utterance itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from joyful.data.schema import Dialogue

SEPARATOR = " [SEP] "


def contextual_texts(dialogue: Dialogue, previous: int) -> list[str]:
    """One string per utterance: ``speaker: text`` followed by up to ``previous`` earlier turns."""
    texts = dialogue.texts or [""] * len(dialogue)
    if previous <= 0:
        return list(texts)
    turns = [turn(s, t) for s, t in zip(dialogue.speakers, texts, strict=True)]
    return [with_context(turns[i], turns[max(0, i - previous) : i]) for i in range(len(turns))]


def turn(speaker: str, text: str) -> str:
    """One turn as the encoder reads it in context."""
    return f"{speaker}: {text}"


def with_context(current: str, earlier: Sequence[str]) -> str:
    """``current`` followed by the ``earlier`` turns, most recent first (see the module docstring)."""
    return SEPARATOR.join([current, *reversed(earlier)])
