"""Texts with their preceding turns: current turn first, most recent context next."""

from joyful.data.context_text import SEPARATOR, contextual_texts
from joyful.data.schema import Dialogue


def test_current_turn_first_then_earlier_turns_most_recent_first():
    d = Dialogue("d", ["A", "B", "A"], texts=["hi", "hello", "bye"])
    assert contextual_texts(d, 0) == ["hi", "hello", "bye"]
    assert contextual_texts(d, 1) == ["A: hi", SEPARATOR.join(["B: hello", "A: hi"]), SEPARATOR.join(["A: bye", "B: hello"])]
    assert contextual_texts(d, 5)[2] == SEPARATOR.join(["A: bye", "B: hello", "A: hi"])
