"""Our stand-in for the per-dialogue ``Sample`` class that COGMEN and Joyful pickle.

Their pickles name the authors' class (``cogmen.Sample``, ``joyful.Sample``), which
is not importable here and would run the authors' module (it loads an SBERT model at
import). The restricted unpickler maps those names to this plain attribute holder
instead, so the pickles load without the authors' code.
"""

from __future__ import annotations

from typing import Any


class Sample:
    """One pickled dialogue: the COGMEN fields, plus whatever extras the pickle holds.

    Fields the pickle lacks read as ``None``; extras such as
    ``sbert_sentence_embeddings`` are kept as attributes.
    """

    vid: Any = None
    speaker: Any = None
    label: Any = None
    text: Any = None
    audio: Any = None
    visual: Any = None
    sentence: Any = None

    def __init__(
        self,
        vid: Any = None,
        speaker: Any = None,
        label: Any = None,
        text: Any = None,
        audio: Any = None,
        visual: Any = None,
        sentence: Any = None,
        **extras: Any,
    ) -> None:
        self.vid, self.speaker, self.label = vid, speaker, label
        self.text, self.audio, self.visual, self.sentence = text, audio, visual, sentence
        self.__dict__.update(extras)

    def __setstate__(self, state: Any) -> None:
        """Accept the pickled instance dict (or ``(dict, slots)``), and nothing else.

        Defining this also stops a crafted pickle from using BUILD on the class object
        itself to overwrite its methods.
        """
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise TypeError(f"Sample state must be a dict of attributes, not {type(state).__name__}")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"Sample(vid={self.vid!r}, fields={sorted(self.__dict__)})"
