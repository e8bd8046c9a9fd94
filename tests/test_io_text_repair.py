"""Mojibake repair: fixes UTF-8 read as cp1252/latin-1, never touches correct text."""

from __future__ import annotations

import pytest

from joyful.io.text_repair import repair_mojibake


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ("heâ€™s", "he’s"),  # UTF-8 read as Windows-1252 (MELD CSVs)
        ("he\xe2\x80\x99s", "he’s"),  # UTF-8 read as latin-1 (Python 2 pickles)
        ("cafÃ©", "café"),
    ],
)
def test_repairs(broken, fixed):
    assert repair_mojibake(broken) == fixed


@pytest.mark.parametrize("text", ["plain", "café", "pâté", "Âge", "he’s", "naïve â€™ but also ü", ""])
def test_leaves_correct_text_alone(text):
    assert repair_mojibake(text) == text
