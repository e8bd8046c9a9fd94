"""Utterance texts with their preceding turns, for encoders that should see the conversation.

A sentence encoder sees one string. Giving it ``"F: I'm here to get an ID. [SEP] M: I
need an ID to pass this form along. [SEP] ..."`` lets it read the emotion of a turn in
the light of what came before (the paper's fine-tuned RoBERTa gains from exactly this).
The current turn comes first, then earlier turns from the most recent back, so when the
encoder truncates a long string it drops the oldest context, never the utterance itself.
"""

from __future__ import annotations

from joyful.data.schema import Dialogue

SEPARATOR = " [SEP] "


def contextual_texts(dialogue: Dialogue, previous: int) -> list[str]:
    """One string per utterance: ``speaker: text`` followed by up to ``previous`` earlier turns."""
    texts = dialogue.texts or [""] * len(dialogue)
    if previous <= 0:
        return list(texts)
    turns = [f"{s}: {t}" for s, t in zip(dialogue.speakers, texts, strict=True)]
    return [SEPARATOR.join([turns[i], *reversed(turns[max(0, i - previous) : i])]) for i in range(len(turns))]
