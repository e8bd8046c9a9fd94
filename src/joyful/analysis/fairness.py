"""Scores per group of people (female and male speakers, age bands, …), their largest gap, and whether it is chance.

A group comes from one KEY: ``speaker`` (the speaker field itself; IEMOCAP's speakers are
``F``/``M``), an attribute of the utterance or its dialogue in JSONL
(``"attributes": {"gender": "F"}``), or a CSV that maps speakers (or ``dialogue,speaker``
pairs) to groups. Utterances with no group are left out of the table and counted.

The gap is max − min of the task's primary metric (weighted F1; MAE for regression)
over the groups with at least :data:`MIN_GROUP_UTTERANCES` utterances: smaller groups
give a gap that is mostly noise.

**The permutation test** asks whether a gap that large would arise if group membership
had nothing to do with how well the model does. Group labels are shuffled over the
units the attribute belongs to, never over single utterances, because the utterances
of one speaker in one dialogue are scored together (one voice, one role):

- an attribute constant within each dialogue (a per-dialogue attribute): the dialogues'
  groups are permuted across dialogues;
- otherwise (speakers, per-speaker attributes): each dialogue's speakers
  (``(dialogue, speaker)`` units; single utterances if the attribute changes within a
  speaker's turns) swap groups *within their dialogue*. Shuffling within a dialogue holds
  its difficulty fixed (an improvised argument is harder than a scripted one for both of
  its speakers), so a difference between dialogues cannot pass for one between groups;
  a dialogue whose speakers all share one group then carries no evidence, which is the
  honest answer.

The p-value counts the observed assignment among the permutations,
(1 + #{gap_perm ≥ gap}) / (1 + permutations), so it is never 0; the seed is fixed.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from joyful.analysis.intervals import Scored, labelled_utterances, weighted_scores
from joyful.data.schema import DialogueSet
from joyful.errors import JoyfulError

MIN_GROUP_UTTERANCES = 20
DEFAULT_PERMUTATIONS = 1000
SPEAKER_KEY = "speaker"


def utterance_groups(ds: DialogueSet, key: str, group_map: dict[tuple[str | None, str], str] | None = None) -> list[str | None]:
    """The group of every labelled utterance (in evaluation order), ``None`` where it has none.

    ``group_map`` (from :func:`read_group_map`) takes precedence over ``key``; without it,
    ``speaker`` is the speaker field and any other key an attribute, which some utterance
    must carry (else the key is a typo, and an error says which attributes exist).
    """
    where = labelled_utterances(ds)
    dialogues = ds.dialogues
    if group_map is not None:
        return [
            group_map.get((dialogues[k].id, dialogues[k].speakers[i]), group_map.get((None, dialogues[k].speakers[i])))
            for k, i in where
        ]
    if key == SPEAKER_KEY:
        return [dialogues[k].speakers[i] for k, i in where]
    found = {name for d in dialogues for attrs in d.attributes or () for name in attrs}
    if key not in found:
        known = ", ".join(sorted(found)) or "none"
        raise JoyfulError(f"{ds.source}: no utterance has the attribute {key!r} (attributes found: {known}; "
                          f"'{SPEAKER_KEY}' is the speaker field; --group-map maps speakers to groups)")
    return [(dialogues[k].attributes or [{}] * len(dialogues[k]))[i].get(key) for k, i in where]


def read_group_map(path: str | Path, key: str) -> dict[tuple[str | None, str], str]:
    """``(dialogue or None, speaker) → group`` from a CSV with columns ``speaker,KEY`` or ``dialogue,speaker,KEY``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            for needed in (SPEAKER_KEY, key):
                if needed not in columns:
                    raise JoyfulError(f"{path}: group map has no column {needed!r} (columns: {', '.join(columns) or 'none'})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise JoyfulError(f"{path}: cannot read the group map ({e})") from None
    per_dialogue = "dialogue" in columns
    return {
        (row["dialogue"] if per_dialogue else None, row[SPEAKER_KEY]): row[key]
        for row in rows
        if row.get(key) not in (None, "")
    }


def group_summary(
    s: Scored,
    groups: Sequence[str | None],
    speakers: Sequence[str],
    *,
    key: str,
    min_utterances: int = MIN_GROUP_UTTERANCES,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    metric: str = "weighted_f1",
) -> dict:
    """Per-group scores, the gap of ``metric`` and its permutation p-value, as ``evaluate --json`` prints them under ``groups``.

    ``groups``/``speakers``: per labelled utterance of ``s``. ``p_value`` is ``None`` when
    fewer than two groups are large enough to compare.
    """
    known = np.array([g is not None for g in groups], dtype=bool)
    names = sorted({g for g in groups if g is not None})
    code = np.array([names.index(g) for g in groups if g is not None], dtype=np.int64)
    speakers = [spk for spk, g in zip(speakers, groups, strict=True) if g is not None]
    s = _only(s, known)
    per_group = {}
    for j, name in enumerate(names):
        member = code == j
        scores = weighted_scores(s, member[None].astype(float))
        per_group[name] = {m: _number(v[0]) for m, v in scores.items()} | {
            "n_utterances": int(member.sum()), "n_dialogues": int(len(np.unique(s.dialogue[member]))),
        }
    observed = _gaps(s, code[None], len(names), metric, min_utterances)[0]
    p_value = None
    if np.isfinite(observed):
        permuted = _permuted_codes(s, code, speakers, n_permutations, seed)
        null = _gaps(s, permuted, len(names), metric, min_utterances)
        p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations))
    return {
        "key": key,
        "metric": metric,
        "min_utterances": min_utterances,
        "per_group": per_group,
        "gap": _number(observed),
        "p_value": p_value,
        "left_out": int((~known).sum()),
    }


def _only(s: Scored, keep: np.ndarray) -> Scored:
    """The utterances where ``keep`` holds, dialogues renumbered: those without a group take no part, not even in the shuffle."""
    dialogue = np.unique(s.dialogue[keep], return_inverse=True)[1].astype(np.int64)
    return Scored(s.task, s.y_true[keep], s.y_pred[keep], dialogue, s.labels)


def _number(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _gaps(s: Scored, codes: np.ndarray, n_groups: int, metric: str, min_utterances: int) -> np.ndarray:
    """max − min of ``metric`` over the large-enough groups, for each row of group codes ``(rows, utterances)``; NaN below two groups."""
    values = np.full((codes.shape[0], n_groups), np.nan)
    if n_groups < 2:
        return np.full(codes.shape[0], np.nan)
    for j in range(n_groups):
        member = (codes == j).astype(float)
        large = member.sum(1) >= min_utterances
        values[large, j] = weighted_scores(s, member[large])[metric]
    counted = np.isfinite(values).sum(1)
    with warnings.catch_warnings():  # rows with no large-enough group are all NaN: answered below
        warnings.simplefilter("ignore", RuntimeWarning)
        gap = np.nanmax(values, 1) - np.nanmin(values, 1)
    return np.where(counted >= 2, gap, np.nan)


def _permuted_codes(s: Scored, code: np.ndarray, speakers: Sequence[str], n: int, seed: int) -> np.ndarray:
    """``n`` reassignments of group codes over the attribute's units (see the module's docstring), ``(n, utterances)``."""
    dialogue = s.dialogue
    constant_in_dialogue = all(len(set(code[dialogue == k])) == 1 for k in range(s.n_dialogues))
    if constant_in_dialogue:
        unit, block = dialogue, np.zeros(s.n_dialogues, dtype=np.int64)
    else:
        pairs = list(zip(dialogue.tolist(), speakers, strict=True))
        unit = np.unique(np.array([f"{k}\x1f{spk}" for k, spk in pairs]), return_inverse=True)[1]
        if any(len(set(code[unit == u])) > 1 for u in range(unit.max() + 1)):  # varies within a speaker's turns
            unit = np.arange(len(code))
        block = np.zeros(unit.max() + 1, dtype=np.int64)
        block[unit] = dialogue
    unit_code = np.empty(unit.max() + 1, dtype=np.int64)
    unit_code[unit] = code
    # Sorting by block + a uniform key shuffles units within each block in one call for all rows.
    rng = np.random.default_rng(seed)
    order = np.argsort(block[None, :] + rng.random((n, len(block))), axis=1)
    base = np.argsort(block, kind="stable")
    shuffled = np.empty((n, len(block)), dtype=np.int64)
    shuffled[:, base] = unit_code[order]
    return shuffled[:, unit]


def evaluated_groups(ds: DialogueSet, metrics: dict, groups: Sequence[str | None], key: str) -> dict:
    """:func:`group_summary` of ``evaluate(ds, with_predictions=True)``'s ``metrics``, on the task's primary metric.

    ``ds`` is the data as the model saw it and ``groups`` its :func:`utterance_groups`; the
    one path from an evaluation to the ``groups`` result, for ``evaluate --groups`` and ``report``.
    """
    from joyful.analysis.intervals import scored
    from joyful.data.tasks import get_task

    s = scored(metrics, ds)
    speakers = [ds.dialogues[k].speakers[i] for k, i in labelled_utterances(ds)]
    return group_summary(s, groups, speakers, key=key, metric=get_task(s.task).primary_metric)


def table_rows(summary: dict) -> tuple[list[str], list[list[str]], str]:
    """Header, one row per group and a closing line, as a report or the printout shows the ``groups`` result."""
    metric = summary["metric"]
    first = next(iter(summary["per_group"].values()), {})
    extra = [m for m in ("accuracy", "macro_f1", "corr") if m in first and m != metric]
    header = [summary["key"], "utterances", "dialogues", metric, *extra]
    rows = [
        [name, str(g["n_utterances"]), str(g["n_dialogues"]), *(_cell(g[m]) for m in (metric, *extra))]
        for name, g in summary["per_group"].items()
    ]
    gap = "n/a" if summary["gap"] is None else f"{summary['gap']:.4f}"
    p = "n/a" if summary["p_value"] is None else f"{summary['p_value']:.4f}"
    line = (f"largest gap in {metric} (groups of ≥ {summary['min_utterances']} utterances): {gap}, "
            f"permutation p = {p}; {summary['left_out']} utterance(s) without a group left out")
    return header, rows, line


def _cell(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


__all__ = [
    "DEFAULT_PERMUTATIONS", "MIN_GROUP_UTTERANCES", "SPEAKER_KEY", "evaluated_groups", "group_summary", "read_group_map",
    "table_rows",
    "utterance_groups",
]
