"""Property-based tests of every reader: an input loads as written, or fails with one DataError.

Hypothesis draws dialogues with missing keys, nulls, NaN/inf, wrong types and widths, mixed
modalities and truncated lines, and writes them in each format ``read_dialogues`` accepts:
JSON Lines, MELD CSV, COGMEN/Joyful pickles (with the authors' ``Sample`` class) and
DialogueGCN/MMGCN tuple pickles. While drawing, the generator notes what each value means
under the format's documented rules: either a dialogue value (id, speaker, text, label,
feature vector, missing row) or a fault at a (dialogue, utterance, field). None of that uses
reader code. Each test then requires either exactly the intended dialogues, or a
``DataError`` that names the file and one of the planted faults, and nothing else: no other
exception type, and no silently changed value.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import pickle
import re
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from joyful.data.labels import IEMOCAP6
from joyful.errors import DataError
from joyful.io import read_dialogues

#: No example database: it would write a ``.hypothesis`` folder into the repository.
COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
}

#: Field names for each modality as messages give them (``Dialogue.validate``, JSONL keys).
FIELD = {"t": "text_features", "a": "audio", "v": "visual"}
SUFFIXES = st.sampled_from([".jsonl", ".pkl", ".csv", ".txt", ".json", ""])
#: Text that no reader alters: MELD CSV and pickle text gets mojibake repair when it holds these.
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="ÂÃâ"), max_size=6)
ABSENT = object()  # a key left out of a JSON object / an attribute a Sample does not have
BAD = object()  # the intended value of something that must be refused

_serial = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readers-property")


class Budget:
    """How many faults a generator may still plant (``None``: any number).

    With one fault per file, a reader that silently accepts bad data cannot hide behind
    another fault it reports first.
    """

    def __init__(self, left: int | None) -> None:
        self.left = left


def budget(faulty) -> Budget | bool:
    """``False`` (a clean file), ``True`` (any number of faults) or ``"one"`` (at most one)."""
    return Budget(1) if faulty == "one" else Budget(None) if faulty else False


def when(faulty, condition: bool):
    """The fault budget where ``condition`` holds, else no faults."""
    return faulty if condition else False


def coin(draw, percent: int, faulty=True) -> bool:
    """A biased coin that shrinks to False, and spends the fault budget when it lands True.

    Its True side lies inside the range, away from the bounds, which hypothesis draws far
    more often than their share.
    """
    if not faulty or (isinstance(faulty, Budget) and faulty.left == 0):
        return False
    hit = 40 <= draw(st.integers(0, 99)) < 40 + percent
    if hit and isinstance(faulty, Budget) and faulty.left is not None:
        faulty.left -= 1
    return hit


def f32(values) -> np.ndarray:
    """Numbers as float32, the precision every reader stores (one rounding from the exact value)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(values, dtype=np.float64).astype(np.float32)


def finite32(x) -> bool:
    """Whether a number survives as a finite float32 (JSON ints can exceed even float64)."""
    try:
        value = float(x)
    except OverflowError:
        return False
    return bool(np.isfinite(f32(value)))


# --- what a file should read as -------------------------------------------------------------


@dataclass
class Want:
    """One dialogue as the generator meant it."""

    id: str
    speakers: list[str]
    texts: list[str] | None
    labels: list[str | None] | None
    features: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Case:
    """A file to write, how to name it, and what it must read as.

    ``faults`` holds ``(dialogue, utterance, field, line)``; ``line`` (when not ``None``)
    must appear in the message as ``line N:``. With no faults the file must load as
    ``wants`` (before harmonisation, which :func:`harmonised` applies).
    """

    content: bytes
    wants: list[Want]
    faults: set
    spec_suffix: str = ""
    source_suffix: str = ""
    kwargs: dict = field(default_factory=dict)


def cross_faults(ids: list[str], wants: list[Want]) -> set:
    """Faults between dialogues: repeated ids, widths that differ, text in some dialogues only."""
    faults: set = set()
    if not ids:
        faults.add((None, None, None, None))  # no dialogues found
    seen: set = set()
    for did in ids:
        if did in seen:
            faults.add((did, None, "dialogue", None))
        seen.add(did)
    widths: dict[str, int] = {}
    for w in wants:
        for m, x in w.features.items():
            if widths.setdefault(m, x.shape[1]) != x.shape[1]:
                faults.add((w.id, None, FIELD[m], None))
    for w in wants[1:]:
        first = wants[0]
        if (first.texts is None) != (w.texts is None):
            faults.add(((w if first.texts is not None else first).id, None, "text", None))
    return faults


def harmonised(wants: list[Want]) -> list[Want]:
    """The documented harmonisation: a modality a dialogue lacks becomes missing on all its
    utterances, except text vectors for a dialogue that has text (those are encoded later)."""
    widths: dict[str, int] = {}
    for w in wants:
        for m, x in w.features.items():
            widths.setdefault(m, x.shape[1])
    out = []
    for w in wants:
        feats = dict(w.features)
        for m, width in widths.items():
            if m not in feats and (m != "t" or w.texts is None):
                feats[m] = np.full((len(w.speakers), width), np.nan, np.float32)
        out.append(Want(w.id, w.speakers, w.texts, w.labels, feats))
    return out


def read(spec: str, **kwargs):
    """``(data, None)`` or ``(None, DataError)``; any other exception fails the test as it is."""
    try:
        return read_dialogues(spec, **kwargs), None
    except DataError as e:
        return None, e


def matches(fault: tuple, err: DataError) -> bool:
    dialogue, index, name, line = fault
    return (err.dialogue, err.index, err.field) == (dialogue, index, name) and (
        line is None or f"line {line}:" in err.problem
    )


def run(workdir, case: Case, suffix: str = ".dat") -> tuple:
    path = str(workdir / f"f{next(_serial)}{suffix}")
    with open(path, "wb") as fh:
        fh.write(case.content)
    data, err = read(path + case.spec_suffix, **case.kwargs)
    source = path + case.source_suffix
    if err is not None:
        # whatever the fault, the message starts with the file and says where
        assert err.source in (source, path), (err.source, source)
        where = [err.source]
        if err.dialogue is not None:
            where.append(f"dialogue {err.dialogue!r}")
        if err.index is not None:
            where.append(f"utterance {err.index}")
        if err.field is not None:
            where.append(f"field {err.field!r}")
        assert str(err).startswith(": ".join(where) + ": "), str(err)
    event("loaded" if err is None else f"refused: {err.field}: {re.sub(r'[0-9]+', 'N', err.problem)[:60]}")
    if case.faults:
        assert err is not None, f"loaded, though the input holds the faults {sorted(case.faults, key=repr)}"
        assert any(matches(f, err) for f in case.faults), f"{err}\n  is none of {sorted(case.faults, key=repr)}"
    else:
        assert err is None, f"refused an input without faults: {err}"
        assert data.source == source
        assert_loaded_as(data, harmonised(case.wants))
    return data, err


def assert_loaded_as(data, wants: list[Want]) -> None:
    assert [d.id for d in data] == [w.id for w in wants]
    for d, w in zip(data, wants, strict=True):
        assert d.speakers == w.speakers, d.id
        assert d.texts == w.texts, d.id
        assert d.labels == w.labels, d.id
        assert sorted(d.features) == sorted(w.features), d.id
        for m, x in w.features.items():
            got = d.features[m]
            assert got.dtype == np.float32 and got.shape == x.shape, (d.id, m, got.shape, x.shape)
            # equal values, and NaN (missing) in exactly the rows meant to be missing
            assert np.array_equal(got, x, equal_nan=True), (d.id, m, got, x)


# --- JSON Lines -------------------------------------------------------------------------------

HUGE = "@@5000-digit-integer@@"  # written as a 5000-digit number, which Python's json refuses
NONFINITE = [math.nan, math.inf, -math.inf, 1e39, -1e39, 10**40, -(10**400)]
JSON_NUMBER = st.floats(-3e38, 3e38) | st.integers(-(2**53), 2**53)


@dataclass
class Record:
    """One JSONL line as drawn: the object, its faults, and its dialogue if it has none."""

    obj: object
    faults: set
    id: str | None = None
    want: Want | None = None


def jsonl_matrix(rows: list, did: str, name: str) -> tuple[set, np.ndarray | None]:
    """The JSONL vector rules: ``null``/absent is missing; every other row a list of the first
    present row's width, of JSON numbers, each finite as float32."""
    present = [i for i, r in enumerate(rows) if r is not ABSENT and r is not None]
    if not present:
        return set(), None
    first = rows[present[0]]
    ref = len(first) if isinstance(first, list) else None
    faults = set()
    for i in present:
        r = rows[i]
        if not isinstance(r, list) or len(r) != ref:
            faults.add((did, i, name, None))
        elif not all(type(x) in (int, float) for x in r) or not all(finite32(x) for x in r):
            faults.add((did, i, name, None))
    if faults:
        return faults, None
    if ref == 0:
        return {(did, None, name, None)}, None  # vectors of width 0
    out = np.full((len(rows), ref), np.nan, np.float32)
    for i in present:
        out[i] = f32(rows[i])
    return set(), out


def draw_vector(draw, width: int, faulty):
    """A JSON feature row, sometimes wrong in one of the ways a hand-made file is."""
    row = draw(st.lists(JSON_NUMBER, min_size=width, max_size=width))
    if not coin(draw, 8, faulty):
        return row
    kind = draw(st.sampled_from(["width", "not-a-list", "element", "nonfinite", "huge"]))
    if kind == "width":
        return draw(st.lists(JSON_NUMBER, max_size=width + 2).filter(lambda r: len(r) != width))
    if kind == "not-a-list":
        return draw(st.sampled_from(["1 2", 3.5, {"x": 1}, True]))
    if not row:
        return row
    at = draw(st.integers(0, len(row) - 1))
    bad = {"element": st.sampled_from(["1", True, False, None, [1.0], {}]), "nonfinite": st.sampled_from(NONFINITE)}
    row[at] = HUGE if kind == "huge" else draw(bad[kind])
    return row


def jsonl_dialogue(draw, k: int, faulty, widths: dict, text_on: bool, ids: list) -> Record:
    """One line's object; its faults follow from the format rules, not from the reader."""
    if coin(draw, 3, faulty):
        return Record(draw(st.sampled_from([["d"], "d", 3, None, {"dialogue": "d"}, {"utterances": []}])), {"line"})
    if coin(draw, 4, faulty):
        return Record({"dialogue": draw(st.sampled_from([None, True, 1.5, ["d"], {}])), "utterances": []},
                      {(None, None, "dialogue", "line")})
    raw_id = draw(st.sampled_from([f"d{k}", k, f"dialogue {k} ✓", f"{k}"])) if not ids or not coin(draw, 6, faulty) \
        else draw(st.sampled_from(ids))
    did = str(raw_id)
    if coin(draw, 3, faulty):
        return Record({"dialogue": raw_id, "utterances": draw(st.sampled_from([{}, "u", None, 3]))},
                      {(did, None, "utterances", None)}, did)
    n = 0 if coin(draw, 4, faulty) else draw(st.integers(1, 4))
    faults: set = set() if n else {(did, None, "utterances", None)}
    if coin(draw, 8, faulty):
        text_on = not text_on  # text in some dialogues only: a fault between dialogues
    no_text = set()
    if text_on and n >= 2 and coin(draw, 8, faulty):  # text on some utterances only
        no_text = set(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True)))
        faults |= {(did, i, "text", None) for i in no_text}
    utts, speakers, texts, labels = [], [], [], []
    rows: dict[str, list] = {m: [] for m in FIELD}
    present = {m: draw(st.booleans()) for m in FIELD}
    width = {m: draw(st.integers(0, 5)) if coin(draw, 5, faulty) else widths[m] for m in FIELD}
    for i in range(n):
        if coin(draw, 3, faulty):
            utts.append(draw(st.sampled_from(["hi", 3, None, ["A"]])))
            faults.add((did, i, None, None))
            continue
        u: dict = {}
        if coin(draw, 5, faulty):
            spk = draw(st.sampled_from([ABSENT, None, "", "  ", True, 1.5, ["A"], {"n": 1}]))
            faults.add((did, i, "speaker", None))
        else:
            spk = draw(st.sampled_from(["A", "B", " Ms. C ", "Δ"]) | st.integers(-3, 10**20))
            speakers.append(str(spk))
        if text_on and i not in no_text:
            if coin(draw, 4, faulty):
                u["text"] = draw(st.sampled_from([3, True, ["t"], {"t": 1}]))
                faults.add((did, i, "text", None))
            else:
                u["text"] = draw(st.text(max_size=6))
                texts.append(u["text"])
        elif draw(st.booleans()):
            u["text"] = None
        if coin(draw, 4, faulty):
            u["label"] = draw(st.sampled_from([True, {"l": 1}, ["neu", "neu"], ["neu", 1], math.nan]))
            faults.add((did, i, "label", None))
        else:
            lab = draw(st.sampled_from([ABSENT, None, "neu", "", "héllo"]) | st.integers(-5, 99))
            labels.append(None if lab is ABSENT or lab is None else str(lab))
            u["label"] = lab
        u["speaker"] = spk
        for m, name in FIELD.items():
            if present[m] and not coin(draw, 25):
                u[name] = draw_vector(draw, width[m], faulty)
            else:
                u[name] = draw(st.sampled_from([ABSENT, None]))
            rows[m].append(u[name])
        if coin(draw, 10):
            u["meta"] = {"start": 1.5, "tags": ["x"]}  # other keys are the user's own and ignored
        utts.append({key: v for key, v in u.items() if v is not ABSENT})
    features = {}
    for m, name in FIELD.items():
        bad, matrix = jsonl_matrix(rows[m], did, name)
        faults |= bad
        if matrix is not None:
            features[m] = matrix
    rec = Record({"dialogue": raw_id, "utterances": utts}, faults, did)
    if not faults:
        some_labels = any(x is not None for x in labels)
        rec.want = Want(did, speakers, texts if text_on else None, labels if some_labels else None, features)
    return rec


@st.composite
def jsonl_file(draw, faulty) -> tuple[list[Record], dict]:
    faulty = budget(faulty)
    return jsonl_records(draw, faulty), jsonl_layout(draw, faulty)


def jsonl_records(draw, faulty) -> list[Record]:
    widths = {m: draw(st.integers(1, 4)) for m in FIELD}
    text_on = draw(st.booleans())
    records: list[Record] = []
    for k in range(draw(st.integers(1, 4))):
        records.append(jsonl_dialogue(draw, k, faulty, widths, text_on, [r.id for r in records if r.id]))
    return records


def jsonl_layout(draw, faulty) -> dict:
    """How the lines are written: BOM, line endings, blank lines, escapes, and damage."""
    return {
        "bom": draw(st.booleans()),
        "newline": draw(st.sampled_from([b"\n", b"\r\n"])),
        "final_newline": draw(st.booleans()),
        "ascii": draw(st.booleans()),
        "blank": draw(st.lists(st.sampled_from([b"", b"   ", b"\t"]), max_size=2)),
        "blank_at": draw(st.integers(0, 5)),
        "garbage": (draw(st.integers(0, 5)), draw(st.sampled_from(list(GARBAGE)))) if coin(draw, 5, faulty) else None,
        "truncate": (draw(st.integers(0, 5)), draw(st.floats(0, 1))) if coin(draw, 8, faulty) else None,
    }


#: Lines no JSON reader can take: Latin-1 bytes, and nesting deeper than Python's recursion limit.
GARBAGE = {
    "latin-1": b'{"dialogue": "caf\xe9", "utterances": []}',
    "deep": b'{"dialogue": "deep", "utterances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def jsonl_case(records: list[Record], layout: dict) -> Case:
    """Serialise records line by line; faults that name "line" get the line's number."""
    lines: list[tuple[bytes, Record | None]] = []
    for rec in records:
        text = json.dumps(rec.obj, ensure_ascii=layout["ascii"])
        huge = HUGE in text
        text = text.replace(json.dumps(HUGE), "1" * 5000)
        lines.append((text.encode("utf-8"), Record(None, {"line"}) if huge else rec))
    if layout["truncate"] is not None and lines:
        at, where = layout["truncate"]
        at %= len(lines)
        text = lines[at][0]
        lines[at] = (text[: 1 + int(where * (len(text) - 2))], Record(None, {"line"}))
    if layout["garbage"] is not None:
        at, kind = layout["garbage"]
        lines.insert(min(at, len(lines)), (GARBAGE[kind], Record(None, {"line"})))
    for blank in layout["blank"]:
        lines.insert(min(layout["blank_at"], len(lines)), (blank, None))
    faults, ids, wants, all_clean = set(), [], [], True
    for number, (_, rec) in enumerate(lines, 1):
        if rec is None:
            continue
        for f in rec.faults:
            faults.add((None, None, None, number) if f == "line" else f[:3] + ((number if f[3] else None),))
        all_clean &= not rec.faults
        if rec.id is not None and "line" not in rec.faults:
            ids.append(rec.id)
        if rec.want is not None:
            wants.append(rec.want)
    content = layout["newline"].join(text for text, _ in lines)
    if layout["final_newline"] and lines:
        content += layout["newline"]
    if layout["bom"]:
        content = b"\xef\xbb\xbf" + content
    faults |= cross_faults(ids, wants) if all_clean else {f for f in cross_faults(ids, []) if f[2] == "dialogue"}
    first = content.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not first.startswith(b"{"):
        faults.add((None, None, None, None))  # empty, or not recognisably JSON Lines
    return Case(content, wants, faults)


@settings(max_examples=80, **COMMON)
@given(file=jsonl_file(faulty=True), suffix=SUFFIXES)
def test_jsonl_loads_as_written_or_names_a_planted_fault(workdir, file, suffix):
    run(workdir, jsonl_case(*file), suffix)


@settings(max_examples=150, **COMMON)
@given(file=jsonl_file(faulty="one"), suffix=SUFFIXES)
def test_jsonl_with_one_fault_names_it(workdir, file, suffix):
    run(workdir, jsonl_case(*file), suffix)


@settings(max_examples=50, **COMMON)
@given(file=jsonl_file(faulty=False), suffix=SUFFIXES)
def test_jsonl_without_faults_loads_exactly(workdir, file, suffix):
    case = jsonl_case(*file)
    assert not case.faults
    run(workdir, case, suffix)


@settings(max_examples=60, **COMMON)
@given(file=jsonl_file(faulty=False), data=st.data())
def test_jsonl_nan_or_infinite_value_is_an_error_not_missing(workdir, file, data):
    """NaN/Infinity literals and numbers beyond float32 are corrupt; only null says "missing"."""
    records, layout = file
    spots = [
        (r, i, name)
        for r in records
        for i, u in enumerate(r.obj["utterances"])
        for name in FIELD.values()
        if u.get(name)
    ]
    if not spots:
        return
    rec, i, name = data.draw(st.sampled_from(spots))
    row = rec.obj["utterances"][i][name]
    row[data.draw(st.integers(0, len(row) - 1))] = data.draw(st.sampled_from(NONFINITE))
    if data.draw(st.booleans()):  # a whole row of NaN is still not "missing"
        row[:] = [math.nan] * len(row)
    case = jsonl_case(records, layout)
    case.faults = {(rec.id, i, name, None)}
    _, err = run(workdir, case)
    assert "NaN or infinite" in err.problem


@settings(max_examples=40, **COMMON)
@given(file=jsonl_file(faulty=False), at=st.integers(0, 3), where=st.floats(0, 1))
def test_jsonl_truncated_line_is_named(workdir, file, at, where):
    records, layout = file
    layout = {**layout, "truncate": (at, where), "blank": []}
    case = jsonl_case(records, layout)
    line = at % len(records) + 1
    assert case.faults == {(None, None, None, line)}
    _, err = run(workdir, case)
    # a cut inside a multi-byte character leaves a line that is not even UTF-8
    assert f"line {line}: not valid JSON" in str(err) or f"line {line}: not UTF-8" in str(err)


# --- MELD CSV ---------------------------------------------------------------------------------

MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
                "Episode", "StartTime", "EndTime"]
REQUIRED = ("Dialogue_ID", "Utterance_ID", "Speaker", "Utterance", "Emotion")
_BREAK = re.compile(r"\r\n|\r|\n")


def csv_line(values: list, newline: str) -> str:
    """One CSV row; fields holding CR or LF are quoted whichever line ending the file uses."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(values)  # with "\n", a lone CR would go unquoted
    return buf.getvalue()[:-2] + newline


def physical_lines(text: str) -> int:
    """Lines the csv module counts for a row's text (it splits on CRLF, CR and LF)."""
    return len(_BREAK.findall(text)) + (0 if text.endswith(("\n", "\r")) else 1)


@st.composite
def meld_csv(draw, faulty) -> Case:
    faulty = budget(faulty)
    columns = list(MELD_COLUMNS)
    truncate = coin(draw, 10, faulty)
    if draw(st.booleans()):
        columns = draw(st.permutations(columns))
        if truncate and columns[-1] in REQUIRED:  # a cut in the last column is only harmless in an unused one
            columns.append(columns.pop(columns.index("EndTime")))
    dropped = draw(st.sampled_from(REQUIRED)) if coin(draw, 3, faulty) else None
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    pairs = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), min_size=1, max_size=8, unique=True))
    if coin(draw, 8, faulty):  # an utterance given twice
        pairs.insert(draw(st.integers(0, len(pairs))), draw(st.sampled_from(pairs)))
    faults: set = set()
    good: dict[int, dict[int, dict[str, str]]] = {}  # Dialogue_ID -> Utterance_ID -> row
    text = csv_line([c for c in columns if c != dropped], newline)
    line = 1
    rows_text = []
    for k, (did, uid) in enumerate(pairs):
        row = {
            "Sr No.": str(k + 1),
            "Utterance": draw(SAFE_TEXT),
            "Speaker": draw(st.sampled_from(["Joey", " Ross ", "The Interviewer"]) | SAFE_TEXT.filter(str.strip)),
            "Emotion": draw(st.sampled_from(["neutral", "joy", " anger ", "", "  "])),
            "Sentiment": "neutral",
            "Dialogue_ID": draw(st.sampled_from([str(did), f" {did} "])),
            "Utterance_ID": str(uid),
            "Season": "8",
            "Episode": "21",
            "StartTime": "00:16:16,059",
            "EndTime": "00:16:21,731",
        }
        bad_int = None
        if coin(draw, 4, faulty):
            bad_int = draw(st.sampled_from(["Dialogue_ID", "Utterance_ID"]))
            row[bad_int] = draw(st.sampled_from(["x", "", "1.5"]))
        if coin(draw, 5, faulty):
            row["Speaker"] = draw(st.sampled_from(["", "   "]))
        values = [row[c] for c in columns if c != dropped]
        shape = "long" if coin(draw, 4, faulty) else "short" if coin(draw, 4, faulty) else None
        if shape == "long":
            values.append("extra")
        elif shape == "short":
            values = values[: -draw(st.integers(1, 3))]
        row_text = csv_line(values, newline)
        if truncate and k == len(pairs) - 1:
            # cut the last row (file ends mid-line): harmless only if the cut is inside the last field
            content_len = len(row_text) - len(newline)
            last_start = len(csv_line(values[:-1], newline)) - len(newline) + 1
            cut = draw(st.integers(1, content_len - 1)) if content_len > 1 else None
            if cut is not None:
                row_text = row_text[:cut]
                if cut < last_start:
                    shape = "cut"
        line += physical_lines(row_text)
        rows_text.append(row_text)
        if shape is not None:
            faults.add((None, None, None, line))
        if bad_int is not None:
            faults.add((None, None, bad_int, line))
        if shape is not None or bad_int is not None:
            continue
        if uid in good.setdefault(did, {}):
            faults.add((str(did), None, "Utterance_ID", line))
            continue
        good[did][uid] = row
    content = text + "".join(rows_text)
    encoded = content.encode(draw(st.sampled_from(["utf-8", "utf-8-sig"])))
    if dropped is not None:  # without Dialogue_ID in its header, a file is not recognised as MELD CSV at all
        return Case(encoded, [], {(None, None, None if dropped == "Dialogue_ID" else dropped, None)})
    wants = []
    for did in sorted(good):
        utts = [good[did][uid] for uid in sorted(good[did])]
        labels = [u["Emotion"].strip() or None for u in utts]
        speakers = [u["Speaker"].strip() for u in utts]
        faults |= {(str(did), i, "speaker", None) for i, s in enumerate(speakers) if not s}
        wants.append(Want(str(did), speakers, [u["Utterance"] for u in utts],
                          labels if any(x is not None for x in labels) else None))
    faults |= cross_faults([w.id for w in wants], wants) if not faults else set()
    return Case(encoded, wants, faults)


@settings(max_examples=60, **COMMON)
@given(case=meld_csv(faulty=True), suffix=SUFFIXES)
def test_meld_csv_loads_as_written_or_names_a_planted_fault(workdir, case, suffix):
    run(workdir, case, suffix)


@settings(max_examples=100, **COMMON)
@given(case=meld_csv(faulty="one"), suffix=SUFFIXES)
def test_meld_csv_with_one_fault_names_it(workdir, case, suffix):
    run(workdir, case, suffix)


@settings(max_examples=40, **COMMON)
@given(case=meld_csv(faulty=False), suffix=SUFFIXES)
def test_meld_csv_without_faults_loads_exactly(workdir, case, suffix):
    assert not case.faults
    run(workdir, case, suffix)


# --- pickled values shared by COGMEN and DialogueGCN ------------------------------------------------


def pk_speaker(draw, faulty):
    """A pickled speaker and the id it names: letters, integers or a one-hot vector."""
    if coin(draw, 4, faulty):
        return draw(st.sampled_from(["", "  ", None, [], np.zeros(3), [1, 1, 0], np.ones((2, 2)), {"s": 1}, True,
                                     math.nan, np.array([0.0, math.nan]), ["M", "F"], 10**5000])), BAD
    kind = draw(st.sampled_from(["letter", "text", "int", "np-int", "bytes", "onehot", "onehot-list"]))
    if kind == "letter":
        value = draw(st.sampled_from(["M", "F", " F "]))
        return value, value.strip()
    if kind == "text":
        value = draw(SAFE_TEXT.filter(str.strip))
        return value, value.strip()
    if kind in ("int", "np-int"):
        value = draw(st.integers(-5, 2**62))
        return (value if kind == "int" else np.int64(value)), str(value)
    if kind == "bytes":
        return b"M", "M"
    k = draw(st.integers(2, 9))
    j = draw(st.integers(0, k - 1))
    onehot = np.eye(k)[j]
    return (onehot if kind == "onehot" else [int(x) for x in onehot]), str(j)


def pk_label(draw, names, faulty):
    """A pickled label and its name: an integer (through ``names``) or a name."""
    if coin(draw, 4, faulty):
        bad = [1.5, math.nan, math.inf, None, True, np.bool_(True), [0, 1], np.array([0, 1]), 10**5000]
        return draw(st.sampled_from(bad + ([6, -1] if names else []))), BAD
    j = draw(st.integers(0, 5) if names else st.integers(-3, 10**12))
    kind = draw(st.sampled_from(["int", "np-int", "0-d", "1-elem", "float", "name"]))
    named = names[j] if names else str(j)
    value = {"int": j, "np-int": np.int64(j), "0-d": np.array(j), "1-elem": np.array([j]), "float": float(j)}.get(kind)
    if kind == "name":
        value = draw(st.sampled_from(["neu", " hap "]))
        named = value.strip()
    return value, named


def pk_sentence(draw, faulty):
    if coin(draw, 4, faulty):
        return draw(st.sampled_from([None, 3, ["s"], 1.5])), BAD
    if draw(st.booleans()):
        return b"plain ascii", "plain ascii"
    value = draw(SAFE_TEXT)
    return value, value


def pk_row(draw, width: int, faulty, no_strings: bool = False):
    """A pickled feature vector: ``(value, kind, width, float32 values)``, kind ok/bad."""
    values = draw(st.lists(st.floats(-1e6, 1e6) | st.integers(-1000, 1000), min_size=width, max_size=width))
    form = draw(st.sampled_from(["f32", "f64", "list", "tuple"]))
    if coin(draw, 8, faulty):
        kind = draw(st.sampled_from(["nonfinite", "all-nan", "width", "type"]))
        if kind == "nonfinite" and values:
            values[draw(st.integers(0, width - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e39]))
            form = draw(st.sampled_from(["f64", "list"]))
        elif kind == "all-nan":
            return np.full(width, np.nan, draw(st.sampled_from([np.float32, np.float64]))), "bad", width, None
        elif kind == "width":
            w = draw(st.integers(0, width + 2).filter(lambda w: w != width))
            return np.ones(w, np.float32), "ok", w, np.ones(w, np.float32)
        else:
            bad = [None, 3.0, {"x": 1}, np.ones((1, max(width, 1))), np.ones(width, bool), np.ones(width, complex),
                   ["1.5"] * width, [True] * width, [None] * width, np.array([1.0, None], dtype=object), 10**400]
            bad += [] if no_strings else ["1 2"]
            if width:
                bad += [[1.0] * (width - 1) + ["2"], [1.0] * (width - 1) + [True], [1.0] * (width - 1) + [None]]
            return draw(st.sampled_from(bad)), "bad", width, None
    expected = f32(values) if values else np.zeros(0, np.float32)
    if not np.isfinite(expected).all():
        kind = "bad"
    else:
        kind = "ok"
    value = {
        "f32": lambda: np.asarray(values, np.float32),
        "f64": lambda: np.asarray(values, np.float64),
        "list": lambda: list(values),
        "tuple": lambda: tuple(values),
    }[form]()
    return value, kind, width, (expected if kind == "ok" else None)


def pk_vectors(draw, n: int, width: int, faulty, did: str, attr: str, m: str, protect_first=False,
               no_string_first=False):
    """A modality's per-utterance vectors and their faults (or the float32 matrix they mean).

    Readers tell sentences from vectors by the first entry: a string there makes the whole
    list read as text, so its fault would be reported elsewhere (``no_string_first``).
    ``protect_first`` keeps the entry well-formed altogether (DialogueGCN tells its
    sentence dict apart by the first dialogue's entries)."""
    if coin(draw, 3, when(faulty, not protect_first)):
        whole = draw(st.sampled_from(["abc", 3.0, {"a": 1}, np.float32(1), np.array(2.0)]))  # not one per utterance
        return whole, {(did, None, attr, None)}, None
    count = n
    if not (protect_first and n <= 1) and coin(draw, 4, faulty):
        count = n + draw(st.sampled_from([-1, 1]))
    rows = [pk_row(draw, width, faulty, no_strings=(protect_first or no_string_first) and i == 0) for i in range(count)]
    faults = set()
    ref = rows[0][2] if rows else None
    for i, (_, kind, w, _) in enumerate(rows):
        if kind == "bad" or w != ref:
            faults.add((did, i, attr, None))
    if faults:
        pass
    elif count != n:
        faults.add((did, None, FIELD[m], None))
    elif ref == 0:
        faults.add((did, None, FIELD[m], None))
    all_ok = not faults and count == n
    if all_ok and rows and draw(st.booleans()):  # one (n, width) array, as Joyful stores SBERT
        value = np.stack([np.asarray(r[3], np.float32) for r in rows]).astype(draw(st.sampled_from(["<f4", "<f8"])))
    else:
        value = [r[0] for r in rows]
    matrix = np.stack([r[3] for r in rows]) if all_ok and rows else None
    return value, faults, matrix


# --- COGMEN / official Joyful pickles ---------------------------------------------------------------


class CogmenSample:
    """The authors' class as their preprocessing pickles it: attributes on a plain instance."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


class ScriptSample(CogmenSample):
    """The same class defined in a script run beside ``Sample.py`` (module ``Sample``)."""


CogmenSample.__module__, CogmenSample.__qualname__, CogmenSample.__name__ = "cogmen.Sample", "Sample", "Sample"
ScriptSample.__module__, ScriptSample.__qualname__, ScriptSample.__name__ = "Sample", "Sample", "Sample"


@pytest.fixture(scope="module", autouse=True)
def author_modules():
    """Make the authors' modules importable, so pickle writes their class names."""
    with pytest.MonkeyPatch.context() as mp:
        pkg, mod, script = types.ModuleType("cogmen"), types.ModuleType("cogmen.Sample"), types.ModuleType("Sample")
        mod.Sample, script.Sample = CogmenSample, ScriptSample
        mp.setitem(sys.modules, "cogmen", pkg)
        mp.setitem(sys.modules, "cogmen.Sample", mod)
        mp.setitem(sys.modules, "Sample", script)
        yield


def cogmen_sample(draw, k: int, faulty, file: dict, ids: list):
    """One Sample and either its faults or its intended dialogue."""
    cls = file["cls"]
    attrs: dict = {}
    if coin(draw, 4, faulty):
        if draw(st.booleans()):
            attrs["vid"] = None
        return cls(**attrs), {(None, None, "vid", None)}, None, None
    raw_id = draw(st.sampled_from([f"Ses0{k}F_impro0{k}", k, np.int64(k), f"{k}".encode()]))
    if ids and coin(draw, 5, faulty):
        raw_id = draw(st.sampled_from(ids))
    did = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
    attrs["vid"] = raw_id
    if coin(draw, 4, faulty):
        return cls(**attrs), {(did, None, "speaker", None)}, did, None
    n = 0 if coin(draw, 3, faulty) else draw(st.integers(1, 4))
    faults: set = set() if n else {(did, None, "utterances", None)}
    spk = [pk_speaker(draw, faulty) for _ in range(n)]
    attrs["speaker"] = [v for v, _ in spk]
    faults |= {(did, i, "speaker", None) for i, (_, s) in enumerate(spk) if s is BAD}
    labels = None
    if file["label"]:
        labs = [pk_label(draw, file["names"], faulty) for _ in range(n)]
        faults |= {(did, i, "label", None) for i, (_, s) in enumerate(labs) if s is BAD}
        attrs["label"] = [v for v, _ in labs]
        labels = [s for _, s in labs]
        if coin(draw, 3, faulty):
            attrs["label"] = attrs["label"][:-1] if n and draw(st.booleans()) else attrs["label"] + [0]
            faults.add((did, None, "label", None))
        elif coin(draw, 2, faulty):
            attrs["label"] = draw(st.sampled_from(["abc", 3, {"x": 1}, np.array(5)]))
            faults.add((did, None, "label", None))
    texts = None
    if file["sentence"] or file["mosei"]:
        sents = [pk_sentence(draw, when(faulty, not file["mosei"])) for _ in range(n)]
        faults |= {(did, i, "sentence", None) for i, (_, s) in enumerate(sents) if s is BAD}
        value = [v for v, _ in sents]
        texts = [s for _, s in sents]
        if coin(draw, 3, when(faulty, not file["mosei"])):
            value = value[:-1] if n and draw(st.booleans()) else value + ["more"]
            faults.add((did, None, "text", None))
        attrs["text" if file["mosei"] else "sentence"] = value
    features = {}
    for attr, m in (("sbert_sentence_embeddings", "t"), ("text", "t"), ("audio", "a"), ("visual", "v")):
        if not file[attr] or coin(draw, 5):  # this dialogue lacks the modality (not a fault: it is harmonised)
            continue
        value, bad, matrix = pk_vectors(draw, n, file["width"][m], faulty, did, attr, m, no_string_first=attr == "text")
        attrs[attr] = value
        if m in features or (m == "t" and "sbert_sentence_embeddings" in attrs and attr == "text"):
            continue  # with SBERT embeddings, the `text` vectors are not read: their faults do not count
        faults |= bad
        if matrix is not None:
            features[m] = matrix
    for attr in ("audio", "visual", "sentence", "label"):
        if attr not in attrs and draw(st.booleans()):
            attrs[attr] = None  # None and a missing attribute both mean "not in this pickle"
    want = None
    if not faults:
        labels = labels if file["label"] else None
        want = Want(did, [s for _, s in spk], texts, labels, features)
    return cls(**attrs), faults, did, want


SPLIT_ALIASES = {"train": ["train", "TRAIN"], "dev": ["dev", "valid", "validation", "val"], "test": ["test"]}
ROLES = {"train": "train", "dev": "valid", "test": "test"}


@st.composite
def cogmen_pickle(draw, faulty) -> Case:
    faulty = budget(faulty)
    file = {
        "cls": draw(st.sampled_from([CogmenSample, ScriptSample])),
        "names": draw(st.sampled_from([None, IEMOCAP6.labels])),
        "label": draw(st.booleans()),
        "sentence": draw(st.booleans()),
        "width": {m: draw(st.integers(1, 4)) for m in FIELD},
        **{attr: draw(st.booleans()) for attr in ("sbert_sentence_embeddings", "text", "audio", "visual")},
    }
    file["mosei"] = not file["text"] and not file["sentence"] and coin(draw, 15)  # sentences kept in `text`
    split = draw(st.sampled_from(["train", "dev", "test"]))
    data: dict = {}
    chosen = None
    for name in ("train", "dev", "test"):
        key = draw(st.sampled_from(["dev", "valid"])) if name == "dev" else name
        lo = 0 if name != split or coin(draw, 4, faulty) else 1  # an empty split: "no dialogues found"
        samples = []
        for k in range(draw(st.integers(lo, 3))):
            samples.append(cogmen_sample(draw, k, faulty, file, [d for _, _, d, _ in samples if d is not None]))
        data[key] = [s for s, *_ in samples]
        if name == split:
            chosen = (key, samples)
    key, samples = chosen
    faults: set = set()
    for _, bad, _, _ in samples:
        faults |= bad
    ids = [did for _, bad, did, _ in samples if did is not None]
    wants = [w for *_, w in samples if w is not None]
    faults |= cross_faults(ids, wants if not faults else [])
    if coin(draw, 3, faulty):
        del data[key]
        faults = {(None, None, None, None)}
    elif coin(draw, 3, faulty):
        data[key] = draw(st.sampled_from([{"a": 1}, None, "samples"]))
        faults = {(None, None, None, None)}
    elif coin(draw, 3, faulty):
        data[key] = data[key] + [draw(st.sampled_from([{"vid": "x"}, None, np.zeros(3)]))]
        faults.add((None, None, None, None))
    alias = draw(st.sampled_from(SPLIT_ALIASES[split]))
    how = draw(st.sampled_from(["role", "suffix"]))
    content = pickle.dumps(data, protocol=draw(st.integers(2, 5)))
    return Case(
        content,
        wants,
        faults,
        spec_suffix="" if how == "role" else f"#{alias}",
        source_suffix=f"#{split}" if how == "role" else f"#{alias}",
        kwargs={"role": ROLES[split] if how == "role" else "train", "int_label_names": file["names"]},
    )


@settings(max_examples=60, **COMMON)
@given(case=cogmen_pickle(faulty=True), suffix=SUFFIXES)
def test_cogmen_pickle_loads_as_written_or_names_a_planted_fault(workdir, case, suffix):
    run(workdir, case, suffix)


@settings(max_examples=120, **COMMON)
@given(case=cogmen_pickle(faulty="one"), suffix=SUFFIXES)
def test_cogmen_pickle_with_one_fault_names_it(workdir, case, suffix):
    run(workdir, case, suffix)


@settings(max_examples=40, **COMMON)
@given(case=cogmen_pickle(faulty=False), suffix=SUFFIXES)
def test_cogmen_pickle_without_faults_loads_exactly(workdir, case, suffix):
    assert not case.faults
    run(workdir, case, suffix)


# --- DialogueGCN / MMGCN pickles -------------------------------------------------------------------


@st.composite
def dialoguegcn_pickle(draw, faulty) -> Case:
    """A tuple: ids, speakers, labels, 1-3 feature dicts, sentences?, 2-3 id lists, a trailing dict?"""
    faulty = budget(faulty)
    names = draw(st.sampled_from([None, IEMOCAP6.labels]))
    n_feats = draw(st.integers(1, 3))
    mods = ("t", "a", "v")[:n_feats]
    widths = {m: draw(st.integers(1, 4)) for m in mods}
    has_sentences = draw(st.booleans())
    int_ids = draw(st.booleans())
    n_dialogues = draw(st.integers(1, 5))
    vids = [k * 7 if int_ids else f"Ses0{k}M_script0{k}" for k in range(n_dialogues)]
    ids, speakers, labels, sentences = {}, {}, {}, {}
    feats: dict[str, dict] = {m: {} for m in mods}
    per_vid: dict = {}
    layout_faults: set = set()
    for pos, vid in enumerate(vids):
        did = str(vid)
        first = pos == 0  # the first dict entries decide which dict holds sentences: keep them well-formed
        n = draw(st.integers(1, 4)) if first else 0 if coin(draw, 3, faulty) else draw(st.integers(1, 4))
        faults: set = set() if n else {(did, None, "utterances", None)}
        if coin(draw, 3, faulty):
            layout_faults.add((None, None, None, None))  # an id the id lists hold but the ids dict lacks
        else:
            ids[vid] = [f"{did}_{i}" for i in range(n)]
        spk = [pk_speaker(draw, faulty) for _ in range(n)]
        faults |= {(did, i, "speaker", None) for i, (_, s) in enumerate(spk) if s is BAD}
        if coin(draw, 3, faulty):
            faults.add((did, None, "speaker", None))
        else:
            speakers[vid] = [v for v, _ in spk]
        labs = [pk_label(draw, names, faulty) for _ in range(n)]
        faults |= {(did, i, "label", None) for i, (_, s) in enumerate(labs) if s is BAD}
        if coin(draw, 3, faulty):
            faults.add((did, None, "label", None))
        else:
            labels[vid] = [v for v, _ in labs]
        texts = None
        if has_sentences:
            sents = [pk_sentence(draw, when(faulty, not (first and i == 0))) for i in range(n)]
            faults |= {(did, i, "sentence", None) for i, (_, s) in enumerate(sents) if s is BAD}
            texts = [s for _, s in sents]
            if coin(draw, 3, when(faulty, not first)):
                faults.add((did, None, "sentence", None))
            else:
                sentences[vid] = [v for v, _ in sents]
        features = {}
        for m in mods:
            name = {"t": "text", "a": "audio", "v": "visual"}[m]
            if coin(draw, 3, when(faulty, not first)):
                faults.add((did, None, name, None))
                continue
            value, bad, matrix = pk_vectors(draw, n, widths[m], faulty, did, name, m, protect_first=first)
            feats[m][vid] = value
            faults |= bad
            if matrix is not None:
                features[m] = matrix
        want = None if faults else Want(did, [s for _, s in spk], texts, [s for _, s in labs], features)
        per_vid[vid] = (faults, want)
    n_lists = draw(st.sampled_from([2, 3]))
    names_of_lists = ("train", "test") if n_lists == 2 else ("train", "dev", "test")
    split = draw(st.sampled_from(["train", "dev", "test"] if coin(draw, 5, faulty) else names_of_lists))
    read_list = names_of_lists.index(split) if split in names_of_lists else None
    assignment = [draw(st.integers(0, n_lists - 1)) for _ in vids]
    if read_list is not None and read_list not in assignment and not coin(draw, 4, faulty):
        assignment[draw(st.integers(0, len(vids) - 1))] = read_list  # the split read is not empty
    lists = [[v for v, a in zip(vids, assignment, strict=True) if a == s] for s in range(n_lists)]
    if coin(draw, 5, faulty) and any(lists):
        which = draw(st.sampled_from([i for i, ls in enumerate(lists) if ls]))
        lists[which] = lists[which] + [lists[which][0]]  # an id listed twice
    forms = [draw(st.sampled_from(["list", "tuple", "set", "array"])) for _ in lists]
    ordered = [sorted(set(ls), key=str) if f == "set" else ls for ls, f in zip(lists, forms, strict=True)]
    written = [set(ls) if f == "set" else tuple(ls) if f == "tuple" else np.array(ls) if f == "array" and ls else ls
               for ls, f in zip(lists, forms, strict=True)]
    obj = [ids, speakers, labels, *(feats[m] for m in mods)]
    if has_sentences:
        obj.append(sentences)
    obj += written
    if draw(st.booleans()):
        obj.append({vid: [0] * len(ids.get(vid, [])) for vid in vids})  # MELD's trailing sentiment labels
    faults = set(layout_faults)
    wants = []
    if split not in names_of_lists:
        faults.add((None, None, None, None))  # no validation split in this pickle
    else:
        chosen = ordered[names_of_lists.index(split)]
        for vid in chosen:
            faults |= per_vid[vid][0]
        wants = [per_vid[vid][1] for vid in chosen if per_vid[vid][1] is not None]
        faults |= cross_faults([str(v) for v in chosen], wants if not faults else [])
    alias = draw(st.sampled_from(SPLIT_ALIASES[split]))
    how = draw(st.sampled_from(["role", "suffix"]))
    return Case(
        pickle.dumps(tuple(obj), protocol=draw(st.integers(2, 5))),
        wants,
        faults,
        spec_suffix="" if how == "role" else f"#{alias}",
        source_suffix=f"#{split}" if how == "role" else f"#{alias}",
        kwargs={"role": ROLES[split] if how == "role" else "train", "int_label_names": names},
    )


@settings(max_examples=60, **COMMON)
@given(case=dialoguegcn_pickle(faulty=True), suffix=SUFFIXES)
def test_dialoguegcn_pickle_loads_as_written_or_names_a_planted_fault(workdir, case, suffix):
    run(workdir, case, suffix)


@settings(max_examples=120, **COMMON)
@given(case=dialoguegcn_pickle(faulty="one"), suffix=SUFFIXES)
def test_dialoguegcn_pickle_with_one_fault_names_it(workdir, case, suffix):
    run(workdir, case, suffix)


@settings(max_examples=40, **COMMON)
@given(case=dialoguegcn_pickle(faulty=False), suffix=SUFFIXES)
def test_dialoguegcn_pickle_without_faults_loads_exactly(workdir, case, suffix):
    run(workdir, case, suffix)


# --- NaN and infinity in pickles: corrupt values, never "missing" -------------------------------------


@st.composite
def pickle_with_a_nonfinite_value(draw) -> tuple[Case, tuple]:
    """A clean COGMEN or DialogueGCN pickle, but for one vector holding NaN or infinity.

    A pickle has no null: a NaN row there is not the JSONL way of saying "missing", and the
    reader must not take it for that (the schema reads a NaN row as missing).
    """
    fmt = draw(st.sampled_from(["cogmen", "dialoguegcn"]))
    attrs = ("sbert_sentence_embeddings", "audio", "visual") if fmt == "cogmen" else ("text", "audio")
    widths = {a: draw(st.integers(1, 4)) for a in attrs}
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    ids = [f"d{k}" for k in range(len(sizes))]
    rows = {(did, a): [draw(st.lists(st.floats(-1e6, 1e6), min_size=widths[a], max_size=widths[a])) for _ in range(n)]
            for did, n in zip(ids, sizes, strict=True) for a in attrs}
    k = draw(st.integers(0, len(ids) - 1))
    target = (ids[k], draw(st.sampled_from(attrs)), draw(st.integers(0, sizes[k] - 1)))
    row = rows[target[:2]][target[2]]
    if draw(st.booleans()):
        row[:] = [math.nan] * len(row)  # a whole row of NaN: what the schema would read as "missing"
    else:
        row[draw(st.integers(0, len(row) - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e39]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))

    def value(did, a):
        with np.errstate(over="ignore"):  # 1e39 as float32 is inf, which is the point
            vectors = [np.asarray(r, dtype) for r in rows[(did, a)]]
        return np.stack(vectors) if draw(st.booleans()) else vectors

    if fmt == "cogmen":
        samples = [CogmenSample(vid=did, speaker=["M"] * n, **{a: value(did, a) for a in attrs})
                   for did, n in zip(ids, sizes, strict=True)]
        obj = {"train": samples, "dev": [], "test": []}
    else:
        obj = (
            {did: list(range(n)) for did, n in zip(ids, sizes, strict=True)},
            {did: ["M"] * n for did, n in zip(ids, sizes, strict=True)},
            {did: [0] * n for did, n in zip(ids, sizes, strict=True)},
            *({did: value(did, a) for did in ids} for a in attrs),
            ids,
            [],
        )
    case = Case(pickle.dumps(obj, protocol=draw(st.integers(2, 5))), [], {(target[0], target[2], target[1], None)},
                source_suffix="#train")
    return case, target


@settings(max_examples=60, **COMMON)
@given(planted=pickle_with_a_nonfinite_value())
def test_pickle_nan_or_infinite_value_is_an_error_not_missing(workdir, planted):
    case, _ = planted
    _, err = run(workdir, case)
    assert "NaN or infinite" in err.problem


# --- damage that no generator plans: only "loads, or a DataError" can be asked ---------------------


@st.composite
def any_file(draw) -> Case:
    kind = draw(st.sampled_from(["jsonl", "csv", "cogmen", "dialoguegcn"]))
    if kind == "jsonl":
        return jsonl_case(*draw(jsonl_file(faulty=False)))
    return draw({"csv": meld_csv, "cogmen": cogmen_pickle, "dialoguegcn": dialoguegcn_pickle}[kind](faulty=False))


@settings(max_examples=100, **COMMON)
@given(case=any_file(), edits=st.lists(st.tuples(st.sampled_from(["flip", "drop", "insert", "cut"]), st.floats(0, 1),
                                                 st.integers(0, 255)), min_size=1, max_size=3))
def test_damaged_bytes_load_or_raise_a_data_error(workdir, case, edits):
    content = bytearray(case.content)
    for op, where, byte in edits:
        at = int(where * max(len(content) - 1, 0))
        if op == "flip" and content:
            content[at] ^= 1 << (byte % 8)
        elif op == "drop" and content:
            del content[at]
        elif op == "insert":
            content.insert(at, byte)
        elif op == "cut":
            del content[max(at, 1):]
    path = str(workdir / f"f{next(_serial)}.dat")
    with open(path, "wb") as fh:
        fh.write(bytes(content))
    _, err = read(path + case.spec_suffix, **case.kwargs)
    event("loaded" if err is None else "refused")
    assert err is None or str(err).startswith(path)


@settings(max_examples=40, **COMMON)
@given(case=st.one_of(cogmen_pickle(faulty=False), dialoguegcn_pickle(faulty=False)), where=st.floats(0, 1))
def test_truncated_pickle_is_a_data_error(workdir, case, where):
    case.content = case.content[: 1 + int(where * (len(case.content) - 2))]
    case.faults = {(None, None, None, None)}
    _, err = run(workdir, case)
    assert "truncated" in err.problem or "not recognised" in err.problem
