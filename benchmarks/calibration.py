"""Does temperature scaling fitted on validation lower the calibration error on unseen speakers? Measured on IEMOCAP-6.

Scores the Ses04 dialogues of the IEMOCAP-6 text files (train and valid), two actors the
model has never heard, before (T = 1) and after calibration: ECE (15 bins), NLL, accuracy
and weighted F1 (which calibration cannot change). Two ways to get validation data
(``--protocol``): ``valid`` trains on the Ses01–Ses03 dialogues of the training file and
validates (early stopping, calibration) on the Ses01–Ses03 dialogues of the validation
file, the same actors; ``unseen-session`` trains on Ses01–Ses02 and validates on all Ses03
dialogues, actors the model has not heard, as a site's data would be.

    .venv/bin/python benchmarks/calibration.py --work /tmp/calibration [--preset context-lr] [--protocol valid]

Prints one JSON object: the temperature, and per split (``valid``, ``held_out``) the figures
before and after.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from joyful import Joyful, JoyfulConfig
from joyful.data.schema import Dialogue, DialogueSet
from joyful.io.jsonl import read_jsonl

HELD_OUT_SESSION = "Ses04"


def sessions(dialogues: list[Dialogue], names: tuple[str, ...], source: str) -> DialogueSet:
    return DialogueSet([d for d in dialogues if d.id.startswith(names)], source)


def figures(clf: Joyful, data: DialogueSet) -> dict:
    """ECE and NLL at T = 1 and at the model's temperature, with the scores the argmax gives."""
    t = clf.model.temperature
    out = {}
    for name, temperature in (("before", 1.0), ("after", t)):
        clf.model.temperature = temperature
        m = clf.evaluate(data, with_predictions=True)
        p = torch.tensor(m["y_prob"], dtype=torch.float64)
        nll = F.nll_loss(p.clamp_min(1e-12).log(), torch.tensor(m["y_true"])).item()
        out[name] = {"ece": round(m["ece"], 4), "nll": round(nll, 4), "accuracy": round(m["accuracy"], 4),
                     "weighted_f1": round(m["weighted_f1"], 4), "mean_confidence": round(float(p.max(-1).values.mean()), 4)}
    clf.model.temperature = t
    out["n_utterances"] = m["n_utterances"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/iemocap-text"))
    parser.add_argument("--work", type=Path, required=True, help="Directory for the model (reused when present).")
    parser.add_argument("--preset", default="context-lr")
    parser.add_argument("--protocol", choices=("valid", "unseen-session"), default="valid")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--epochs", type=int, help="Cap on the epochs (the preset's by default).")
    args = parser.parse_args()
    train = read_jsonl(args.data_dir / "train.jsonl").dialogues
    valid = read_jsonl(args.data_dir / "valid.jsonl").dialogues
    if args.protocol == "valid":
        train_set = sessions(train, ("Ses01", "Ses02", "Ses03"), "train Ses01-03")
        valid_set = sessions(valid, ("Ses01", "Ses02", "Ses03"), "valid Ses01-03")
    else:
        train_set = sessions(train, ("Ses01", "Ses02"), "train Ses01-02")
        valid_set = sessions(train + valid, ("Ses03",), "Ses03")
    out = args.work / f"{args.preset}-{args.protocol}-seed{args.seed}"
    if (out / "meta.json").exists():
        clf = Joyful.load(out, device="cpu")
    else:
        overrides = {"epochs": args.epochs} if args.epochs else {}
        config = JoyfulConfig.preset(
            args.preset, modalities="t", label_set="iemocap6", device="cpu", seed=args.seed, **overrides
        )
        clf = Joyful(config).fit(train_set, valid_set, out_dir=out, progress=False)
    held_out = sessions(train + valid, (HELD_OUT_SESSION,), "Ses04")
    print(json.dumps({
        "preset": args.preset, "protocol": args.protocol, "seed": args.seed,
        "temperature": round(clf.model.temperature, 4),
        "valid": figures(clf, valid_set), "held_out": figures(clf, held_out),
    }))


if __name__ == "__main__":
    main()
