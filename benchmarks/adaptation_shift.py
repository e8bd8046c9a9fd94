"""Adaptation measured on a real domain shift: IEMOCAP-4 (acted, two speakers) → MELD (a TV series).

MELD's labels are mapped to IEMOCAP's four shared classes (neutral→neu, joy→hap,
anger→ang, sadness→sad); its other utterances stay in the graph as unlabelled context.
For k labelled MELD training dialogues, three models are compared on MELD dev (weighted
F1 with a bootstrap interval over dialogues) and on IEMOCAP validation (what is kept):
the IEMOCAP model unadapted, adapted with :func:`joyful.training.adapt.adapt` (replaying
IEMOCAP train), and a model trained on the k dialogues alone. Then continual use: three
successive rounds of corrections, each adapting the previous round's model.

Every finished cell is written at once (atomically), so a rerun skips it; the table and
the plot are regenerated from whatever is finished::

    nice -n 10 .venv/bin/python benchmarks/adaptation_shift.py --out /tmp/shift
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from joyful import Joyful, JoyfulConfig
from joyful.api import as_dialogue_set
from joyful.atomic import atomic_open, atomic_write_csv, atomic_write_text
from joyful.data import label_map
from joyful.data.labels import IEMOCAP4
from joyful.data.schema import DialogueSet
from joyful.training.adapt import adapt

MELD_TO_IEMOCAP = "neutral=neu,joy=hap,anger=ang,sadness=sad"
METHODS = ("unadapted", "adapted", "scratch")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/shift"))
    p.add_argument("--iemocap", type=Path, default=Path("/work/shared/data/iemocap-text"), help="train.jsonl, valid.jsonl")
    p.add_argument("--meld", type=Path, default=Path("/work/shared/data/meld"), help="train_sent_emo.csv, dev_sent_emo.csv")
    p.add_argument("--label-map", default=MELD_TO_IEMOCAP, help="old=new,... or a JSON file; applied to MELD")
    p.add_argument("--ks", default="0,1,2,5,10,20")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--base-epochs", type=int, default=100, help="IEMOCAP-4 model (the default config's 100)")
    p.add_argument("--base-patience", type=int, default=15)
    p.add_argument("--adapt-epochs", type=int, default=15)
    p.add_argument("--scratch-epochs", type=int, default=60,
                   help="fixed: k dialogues are too few to hold out an early-stopping slice")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--round-size", type=int, default=10)
    p.add_argument("--tolerance", type=float, default=0.01, help="weighted F1 points (as finetune's)")
    p.add_argument("--resamples", type=int, default=500)
    p.add_argument("--report-only", action="store_true", help="rewrite the table and plot from finished cells")
    return p.parse_args()


class Cells:
    """Finished results, one JSON file each, so an interrupted run resumes where it stopped."""

    def __init__(self, root: Path) -> None:
        self.root = root / "cells"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self.path(key)
        return json.loads(p.read_text()) if p.is_file() else None

    def put(self, key: str, value: dict) -> None:
        atomic_write_text(self.path(key), json.dumps(value))

    def all(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*.json"))]


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Weighted F1 over the classes present in ``y_true``, as scikit-learn's ``average="weighted"``."""
    cm = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float((f1 * support).sum() / support.sum())


def bootstrap_mean_wf1(runs: list[dict], groups: np.ndarray, n_classes: int, resamples: int, seed: int = 0) -> tuple:
    """A 95% percentile interval for the mean over runs of MELD dev WF1, resampling dev dialogues.

    The same resampled dialogues score every run, so the interval reflects the test set's
    size; the spread between seeds and draws is reported beside it (``sd``).
    """
    rng = np.random.default_rng(seed)
    n_dialogues = int(groups.max()) + 1
    members = [np.flatnonzero(groups == g) for g in range(n_dialogues)]
    preds = [(np.asarray(r["y_true"]), np.asarray(r["y_pred"])) for r in runs]
    stats = []
    for _ in range(resamples):
        idx = np.concatenate([members[g] for g in rng.integers(0, n_dialogues, n_dialogues)])
        stats.append(np.mean([weighted_f1(t[idx], p[idx], n_classes) for t, p in preds]))
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def score(clf: Joyful, meld_dev: DialogueSet, iemocap_valid: DialogueSet) -> dict:
    m = clf.evaluate(meld_dev, with_predictions=True)
    iem = clf.evaluate(iemocap_valid)
    return {
        "meld_wf1": m["weighted_f1"], "meld_acc": m["accuracy"], "iemocap_wf1": iem["weighted_f1"],
        "y_true": np.asarray(m["y_true"]).tolist(), "y_pred": np.asarray(m["y_pred"]).tolist(),
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace, cells: Cells) -> None:
    ks = [int(k) for k in args.ks.split(",")]
    mapping = label_map.parse(args.label_map)
    iem_train = as_dialogue_set(str(args.iemocap / "train.jsonl"), role="train")
    iem_valid = as_dialogue_set(str(args.iemocap / "valid.jsonl"), role="valid")
    meld_train = label_map.apply(as_dialogue_set(str(args.meld / "train_sent_emo.csv"), role="train"), mapping)
    meld_dev = label_map.apply(as_dialogue_set(str(args.meld / "dev_sent_emo.csv"), role="valid"), mapping)
    eligible = [d for d in meld_train if any(lab is not None for lab in d.labels or ())]
    log(f"MELD train: {len(eligible)} of {len(meld_train)} dialogues have a mapped label")
    draws = [np.random.default_rng(1000 + draw).permutation(len(eligible)) for draw in range(args.draws)]

    def subset(order: np.ndarray, start: int, stop: int, name: str) -> DialogueSet:
        return DialogueSet([eligible[i] for i in order[start:stop]], name)

    def base_model(seed: int) -> Joyful:
        directory, key = args.out / "models" / f"iemocap4-seed{seed}", f"base-s{seed}"
        # the checkpoint is written at every new best epoch: only the cell says training finished
        if cells.get(key) is None:
            log(f"training the IEMOCAP-4 model, seed {seed}")
            config = JoyfulConfig(label_set="iemocap4", modalities="t", seed=seed,
                                  epochs=args.base_epochs, patience=args.base_patience)
            result = Joyful(config).fit(iem_train, iem_valid, out_dir=directory, progress=False).result
            cells.put(key, {"kind": "base", "seed": seed, "best_epoch": result.best_epoch,
                            "epochs_run": len(result.history)})
        return Joyful.load(directory, device="cpu")

    def continual(seed: int, base: Joyful, original: float) -> None:
        """Rounds of corrections on dialogues outside every k-set, each adapting the previous round's model."""
        model, start = base, max(ks)
        for r in range(1, args.rounds + 1):
            key = f"continual-s{seed}-r{r}"
            stored = cells.get(key)
            if stored is not None:
                model = Joyful.load(args.out / "models" / key, device="cpu")
                continue
            t0 = time.time()
            new = subset(draws[0], start + (r - 1) * args.round_size, start + r * args.round_size, f"round-{r}")
            # adapt anchors each round's floor at the first model's validation score (what finetune does)
            model, report = adapt(model, new, replay=iem_train, valid=iem_valid, epochs=args.adapt_epochs,
                                  tolerance=args.tolerance, progress=False)
            model.save(args.out / "models" / key)
            s = score(model, meld_dev, iem_valid)
            cells.put(key, {"kind": "continual", "seed": seed, "round": r, "floor": report.valid_floor,
                            "anchored": report.anchored, "iemocap_wf1_original": original,
                            "kept_original": report.best_epoch == 0, **s})
            log(f"{key}: IEMOCAP {s['iemocap_wf1']:.4f} (original {original:.4f}), MELD {s['meld_wf1']:.4f}, "
                f"{time.time() - t0:.0f} s")

    def curve_cells(seed: int, base: Joyful, draw: int) -> None:
        for k in sorted((k for k in ks if k > 0), reverse=True):  # the largest k first: the headline comparison
            new = subset(draws[draw], 0, k, f"meld-train-draw{draw}-k{k}")
            key = f"adapted-s{seed}-d{draw}-k{k}"
            if cells.get(key) is None:
                t0 = time.time()
                adapted, report = adapt(base, new, replay=iem_train, valid=iem_valid, epochs=args.adapt_epochs,
                                        tolerance=args.tolerance, progress=False)
                s = score(adapted, meld_dev, iem_valid)
                cells.put(key, {"kind": "adapted", "seed": seed, "draw": draw, "k": k,
                                "kept_original": report.best_epoch == 0, "best_epoch": report.best_epoch, **s})
                log(f"{key}: MELD {s['meld_wf1']:.4f}, IEMOCAP {s['iemocap_wf1']:.4f}, "
                    f"epoch {report.best_epoch}, {time.time() - t0:.0f} s")
            key = f"scratch-s{seed}-d{draw}-k{k}"
            if cells.get(key) is None:
                t0 = time.time()
                # raw weights: with one optimiser step per epoch, averaging would still lean on the initial weights
                config = JoyfulConfig(label_set="iemocap4", modalities="t", seed=seed, epochs=args.scratch_epochs,
                                      patience=args.scratch_epochs, ema_decay=0.0)
                s = score(Joyful(config).fit(new, progress=False), meld_dev, iem_valid)
                cells.put(key, {"kind": "scratch", "seed": seed, "draw": draw, "k": k, **s})
                log(f"{key}: MELD {s['meld_wf1']:.4f}, IEMOCAP {s['iemocap_wf1']:.4f}, {time.time() - t0:.0f} s")
        write_report(args, cells, meld_dev)

    # Every seed gets its first draw and its continual rounds before any second draw, so a
    # run cut short still covers all seeds.
    bases, originals = {}, {}
    for seed in range(args.seeds):
        bases[seed] = base_model(seed)
        key = f"unadapted-s{seed}"
        if (unadapted := cells.get(key)) is None:
            unadapted = {"kind": "unadapted", "seed": seed, **score(bases[seed], meld_dev, iem_valid)}
            cells.put(key, unadapted)
        originals[seed] = unadapted["iemocap_wf1"]
        log(f"seed {seed}: unadapted MELD {unadapted['meld_wf1']:.4f}, IEMOCAP {unadapted['iemocap_wf1']:.4f}")
    for seed in range(args.seeds):
        curve_cells(seed, bases[seed], 0)
    for seed in range(args.seeds):
        continual(seed, bases[seed], originals[seed])
        write_report(args, cells, meld_dev)
    for draw in range(1, args.draws):
        for seed in range(args.seeds):
            curve_cells(seed, bases[seed], draw)


def dev_groups(meld_dev: DialogueSet) -> np.ndarray:
    """The dev dialogue of each scored utterance, in the order evaluate returns them."""
    return np.concatenate([np.full(sum(lab is not None for lab in d.labels), i) for i, d in enumerate(meld_dev)])


def write_report(args: argparse.Namespace, cells: Cells, meld_dev: DialogueSet) -> None:
    """results.csv/json, table.md and curves.png from every finished cell."""
    ks = [int(k) for k in args.ks.split(",")]
    done = cells.all()
    groups, n_classes = dev_groups(meld_dev), len(IEMOCAP4.labels)
    rows = []
    for k in ks:
        for method in METHODS:
            if method == "unadapted" or k == 0:
                runs = [c for c in done if c["kind"] == "unadapted"] if method != "scratch" else []
            else:
                runs = [c for c in done if c["kind"] == method and c["k"] == k]
            if not runs:
                continue
            meld = [r["meld_wf1"] for r in runs]
            low, high = bootstrap_mean_wf1(runs, groups, n_classes, args.resamples)
            expected = args.seeds * (1 if method == "unadapted" or k == 0 else args.draws)
            rows.append({
                "k": k, "method": method, "runs": len(runs), "runs_expected": expected,
                "meld_wf1": round(float(np.mean(meld)), 4), "meld_low": round(low, 4), "meld_high": round(high, 4),
                "meld_sd": round(float(np.std(meld)), 4),
                "iemocap_wf1": round(float(np.mean([r["iemocap_wf1"] for r in runs])), 4),
                "iemocap_sd": round(float(np.std([r["iemocap_wf1"] for r in runs])), 4),
                "kept_original": sum(r.get("kept_original", False) for r in runs),
            })
    continual = [{k: v for k, v in c.items() if k not in ("y_true", "y_pred")} for c in done if c["kind"] == "continual"]
    continual.sort(key=lambda c: (c["seed"], c["round"]))
    atomic_write_csv(args.out / "results.csv", rows)
    with atomic_open(args.out / "results.json", "w") as fh:
        json.dump({"curve": rows, "continual": continual, "settings": {
            k: str(v) for k, v in vars(args).items() if k != "report_only"}}, fh, indent=1)
    atomic_write_text(args.out / "table.md", markdown(rows, continual))
    plot(rows, args.out / "curves.png")
    log(f"report: {len(rows)} rows, {len(continual)} continual rounds -> {args.out}")


def markdown(rows: list[dict], continual: list[dict]) -> str:
    lines = ["| k | method | MELD dev WF1 [95% CI] | sd over runs | IEMOCAP valid WF1 | runs |", "|---|---|---|---|---|---|"]
    for r in rows:
        runs = f"{r['runs']}/{r['runs_expected']}" + (f", {r['kept_original']} kept original" if r["method"] == "adapted" else "")
        lines.append(f"| {r['k']} | {r['method']} | {r['meld_wf1']:.3f} [{r['meld_low']:.3f}, {r['meld_high']:.3f}] | "
                     f"{r['meld_sd']:.3f} | {r['iemocap_wf1']:.3f} ± {r['iemocap_sd']:.3f} | {runs} |")
    if continual:
        lines += ["", "| seed | round | IEMOCAP valid WF1 (original) | change, points | MELD dev WF1 | kept original |",
                  "|---|---|---|---|---|---|"]
        for c in continual:
            change = 100 * (c["iemocap_wf1"] - c["iemocap_wf1_original"])
            lines.append(f"| {c['seed']} | {c['round']} | {c['iemocap_wf1']:.3f} ({c['iemocap_wf1_original']:.3f}) | "
                         f"{change:+.1f} | {c['meld_wf1']:.3f} | {c['kept_original']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method, colour in zip(METHODS, ("tab:grey", "tab:blue", "tab:orange")):
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        ks = np.array([r["k"] for r in rs])
        x = np.where(ks == 0, 0.5, ks)  # k = 0 on a log axis
        left.plot(x, [r["meld_wf1"] for r in rs], "o-", color=colour, label=method)
        left.fill_between(x, [r["meld_low"] for r in rs], [r["meld_high"] for r in rs], color=colour, alpha=0.2)
        right.errorbar(x, [r["iemocap_wf1"] for r in rs], yerr=[r["iemocap_sd"] for r in rs], fmt="o-", color=colour,
                       label=method, capsize=3)
    for ax, title in ((left, "MELD dev (4 classes), 95% bootstrap band"), (right, "IEMOCAP-4 validation (± sd)")):
        ax.set_xscale("log")
        ax.set_xticks([0.5, 1, 2, 5, 10, 20], ["0", "1", "2", "5", "10", "20"])
        ax.set_xlabel("labelled MELD training dialogues (k)")
        ax.set_ylabel("weighted F1")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    cells = Cells(args.out)
    if args.report_only:
        meld_dev = label_map.apply(as_dialogue_set(str(args.meld / "dev_sent_emo.csv"), role="valid"),
                                   label_map.parse(args.label_map))
        write_report(args, cells, meld_dev)
        return
    run(args, cells)


if __name__ == "__main__":
    main()
