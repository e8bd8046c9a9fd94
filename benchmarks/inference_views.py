"""Does averaging K pairs of augmented views at inference beat the clean graph's 2·H(clean)? Same weights, both ways.

Takes a finished cross-validation grid run with ``keep_models = true`` (for instance
``benchmarks/studies/cv_iemocap6_views.toml``) and scores every kept model again on its
fold's test dialogues with ``inference_views`` set to each K of ``--views`` (0 = the clean
graph, what the grid stored). The comparison is paired by run and free of training noise:
only the inference changes.

    .venv/bin/joyful benchmark --config benchmarks/studies/cv_iemocap6_views.toml --out /tmp/views --jobs 2
    .venv/bin/python benchmarks/inference_views.py --out /tmp/views --views 0,4,8,16

Prints one JSON line per run (weighted F1 for each K) and then, per K, the mean weighted F1
over runs and its mean difference from K = 0, in percentage points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from joyful import Joyful


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the grid's results directory (models kept)")
    parser.add_argument("--views", default="0,4,8,16", help="comma-separated K values; 0 = the clean graph")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) for k in args.views.split(",")]
    rows = []
    for model_dir in sorted(args.out.glob("runs/*/fold-*/seed-*/model")):
        run = model_dir.parent
        if not (run / "result.json").exists():  # still training: its checkpoint is not final
            continue
        test = args.out / "folds" / run.parent.name / "test.jsonl"
        clf = Joyful.load(model_dir, device="cpu")
        data = clf.prepare(str(test), role="test", label_set=clf.info.label_set, progress=False)
        row = {"run": str(run.relative_to(args.out))}
        for k in ks:
            clf.model.config = clf.model.config.replace(inference_views=k)
            row[f"views_{k}"] = round(clf.evaluate(data)["weighted_f1"], 6)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if not rows:
        raise SystemExit(f"{args.out}: no finished run with a kept model (set keep_models = true in the grid)")
    base = np.array([r[f"views_{ks[0]}"] for r in rows])
    for k in ks:
        scores = np.array([r[f"views_{k}"] for r in rows])
        print(json.dumps({"views": k, "runs": len(rows), "weighted_f1": round(100 * scores.mean(), 2),
                          f"minus_views_{ks[0]}": round(100 * (scores - base).mean(), 2)}))


if __name__ == "__main__":
    main()
