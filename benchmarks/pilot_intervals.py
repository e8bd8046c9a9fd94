"""How many labelled dialogues does a site need for a ±5-point interval of weighted F1? Measured on IEMOCAP.

Leave one session out on the IEMOCAP-6 text files (train + valid pooled; each fold trains
on three sessions and predicts the fourth, which the model has never heard), so every
dialogue gets a held-out prediction like a site's pilot would. Then, for k = 5, 10, 20,
40, 80 dialogues drawn from those predictions, the mean half-width of the dialogue
bootstrap's 95% interval (:func:`joyful.analysis.intervals.half_width_by_size`); and the
female/male table over all held-out dialogues (eight actors).

    .venv/bin/python benchmarks/pilot_intervals.py --work /tmp/pilot [--preset context-lr]

Prints one JSON object per line: a row per k, then the speaker-group summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from joyful import Joyful, JoyfulConfig
from joyful.analysis.fairness import group_summary, utterance_groups
from joyful.analysis.intervals import PILOT_SIZES, Scored, half_width_by_size, labelled_utterances, scored
from joyful.data.schema import DialogueSet
from joyful.io.jsonl import read_jsonl

SESSIONS = ("Ses01", "Ses02", "Ses03", "Ses04")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/iemocap-text"))
    parser.add_argument("--work", type=Path, required=True, help="Directory for the fold models (reused when present).")
    parser.add_argument("--preset", default="context-lr")
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--sizes", default=",".join(map(str, PILOT_SIZES)))
    args = parser.parse_args()
    train = read_jsonl(args.data_dir / "train.jsonl").dialogues
    valid = read_jsonl(args.data_dir / "valid.jsonl").dialogues
    parts, seen = [], []
    for session in SESSIONS:
        def outside(ds: list) -> DialogueSet:
            return DialogueSet([d for d in ds if not d.id.startswith(session)], f"no-{session}")

        held_out = DialogueSet([d for d in train + valid if d.id.startswith(session)], session)
        out = args.work / f"{args.preset}-{session}"
        if (out / "meta.json").exists():
            clf = Joyful.load(out, device="cpu")
        else:
            cfg = JoyfulConfig.preset(args.preset, modalities="t", device="cpu")
            clf = Joyful(cfg).fit(outside(train), outside(valid), out_dir=out, progress=False)
        ds = clf.prepare(held_out, role="test", label_set=clf.info.label_set, progress=False, encode_texts=False)
        parts.append(scored(clf.evaluate(ds, with_predictions=True), ds))
        seen.append(ds)
    pooled = _pool(parts)
    sizes = [int(k) for k in args.sizes.split(",")]
    for row in half_width_by_size(pooled, sizes, draws=args.draws):
        print(json.dumps({"preset": args.preset, **row}))
    everything = DialogueSet([d for ds in seen for d in ds], "held-out")
    speakers = [everything.dialogues[k].speakers[i] for k, i in labelled_utterances(everything)]
    summary = group_summary(pooled, utterance_groups(everything, "speaker"), speakers, key="speaker")
    print(json.dumps({"preset": args.preset, "dialogues": pooled.n_dialogues, "groups": summary}))


def _pool(parts: list[Scored]) -> Scored:
    """The folds' held-out predictions as one set, dialogue indices kept apart."""
    offsets = np.cumsum([0] + [p.n_dialogues for p in parts[:-1]])
    return Scored(
        parts[0].task,
        np.concatenate([p.y_true for p in parts]),
        np.concatenate([p.y_pred for p in parts]),
        np.concatenate([p.dialogue + off for p, off in zip(parts, offsets, strict=True)]),
        parts[0].labels,
    )


if __name__ == "__main__":
    main()
