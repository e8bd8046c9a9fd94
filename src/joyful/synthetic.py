"""Generated dialogues with a planted signal: for the demo, the tests and the speed benchmark.

Each speaker carries a mood that mostly persists from one turn to the next, so context
helps; each modality shows the mood through a class prototype plus noise, with the
text strongest and the visual weakest, so fusion helps too. A model that learns reaches
well above chance; one that does not stays near 1/classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from joyful.data.schema import Dialogue, DialogueSet

DEFAULT_WIDTHS = {"t": 64, "a": 16, "v": 32}
DEFAULT_LABELS = ("hap", "sad", "neu", "ang", "exc", "fru")
#: How clearly each modality shows the label (prototype scale against unit noise).
SIGNAL = {"t": 0.25, "a": 0.3, "v": 0.15}


def generate_dialogues(
    n_dialogues: int,
    *,
    widths: dict[str, int] | None = None,
    labels: Sequence[str] = DEFAULT_LABELS,
    min_length: int = 6,
    max_length: int = 30,
    speakers: tuple[int, int] = (2, 2),
    persistence: float = 0.75,
    signal: float = 1.0,
    seed: int = 0,
    prefix: str = "dlg",
    source: str = "<generated>",
) -> DialogueSet:
    """``n_dialogues`` dialogues with lengths in [min_length, max_length] and P speakers in ``speakers``.

    The class prototypes depend only on the widths and labels (a fixed generator), so
    train, validation and test sets generated with different seeds share one signal.
    """
    widths = dict(DEFAULT_WIDTHS if widths is None else widths)
    proto_rng = np.random.default_rng(12345)
    prototypes = {m: proto_rng.standard_normal((len(labels), w)).astype(np.float32) for m, w in sorted(widths.items())}
    rng = np.random.default_rng(seed)
    dialogues = []
    for k in range(n_dialogues):
        n = int(rng.integers(min_length, max_length + 1))
        p = int(rng.integers(speakers[0], speakers[1] + 1))
        who = rng.integers(0, p, size=n)
        who[: min(p, n)] = np.arange(min(p, n))  # every speaker speaks
        mood = rng.integers(0, len(labels), size=p)
        y = np.empty(n, dtype=np.int64)
        for i in range(n):  # a mood chain per speaker: generation, not modelling
            if rng.random() > persistence:
                mood[who[i]] = rng.integers(0, len(labels))
            y[i] = mood[who[i]]
        features = {
            m: (signal * SIGNAL.get(m, 0.5) * prototypes[m][y] + rng.standard_normal((n, w))).astype(np.float32)
            for m, w in widths.items()
        }
        dialogues.append(
            Dialogue(
                id=f"{prefix}{k:04d}",
                speakers=[f"S{s}" for s in who],
                features=features,
                texts=[f"utterance {i} of {prefix}{k:04d}" for i in range(n)],
                labels=[labels[j] for j in y],
            )
        )
    return DialogueSet(dialogues, source)
