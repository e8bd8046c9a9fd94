"""`--label-map`: another dataset's class names become the model's, the rest unlabelled context."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import TINY, WIDTHS
from joyful import Joyful, JoyfulConfig
from joyful.data import label_map
from joyful.data.schema import Dialogue, DialogueSet
from joyful.errors import JoyfulError
from joyful.io.jsonl import write_jsonl
from joyful.synthetic import generate_dialogues

MELD_NAMES = {"neutral": "neu", "joy": "hap", "anger": "ang", "sadness": "sad"}


def test_both_syntaxes_give_the_same_map(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps(MELD_NAMES))
    assert label_map.parse("neutral=neu, joy=hap,anger=ang,sadness=sad") == MELD_NAMES
    assert label_map.parse(str(path)) == MELD_NAMES


@pytest.mark.parametrize(
    ("spec", "named"),
    [("neutral=neu,joy", "'joy'"), ("neutral=neu,=hap", "'=hap'"), ("neutral=neu,joy=", "'joy='"),
     ("joy=hap,joy=sad", "'joy=sad'")],
)
def test_a_bad_entry_is_refused_by_name(spec, named):
    with pytest.raises(JoyfulError, match=named):
        label_map.parse(spec)


def test_a_bad_json_entry_is_refused_by_name(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"neutral": "neu", "joy": 3}))
    with pytest.raises(JoyfulError, match="'joy'"):
        label_map.parse(str(path))


def test_unmapped_labels_become_unlabelled_and_every_utterance_stays():
    speakers = ["A", "B", "A", "C", "B"]
    d = Dialogue("d1", speakers, texts=["a", "b", "c", "d", "e"], labels=["joy", "surprise", None, "anger", "fear"])
    plain = Dialogue("d2", ["A"], texts=["f"], labels=None)
    out = label_map.apply(DialogueSet([d, plain], "meld.csv"), MELD_NAMES)
    assert out.dialogues[0].labels == ["hap", None, None, "ang", None]
    assert out.dialogues[0].speakers == speakers and out.dialogues[0].texts == ["a", "b", "c", "d", "e"]
    assert out.dialogues[1].labels is None
    assert d.labels == ["joy", "surprise", None, "anger", "fear"]  # the input is left as it was


def test_finetune_with_a_label_map_adapts_to_renamed_labels(data_dir, tmp_path):
    base = tmp_path / "base"
    config = JoyfulConfig(**{**TINY, "epochs": 4, "patience": 4}, label_set="iemocap4")
    Joyful(config).fit(data_dir / "train.jsonl", data_dir / "valid.jsonl", out_dir=base, progress=False)
    names = ("joy", "sadness", "neutral", "anger", "surprise")
    site = generate_dialogues(3, widths=WIDTHS, labels=names, seed=5, signal=2.5, prefix="site-", min_length=6, max_length=8)
    write_jsonl(site.dialogues, tmp_path / "site.jsonl")
    expected = sum(lab != "surprise" for d in site for lab in d.labels)

    def finetune(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "joyful.cli", "finetune", "--model", str(base), "--data", str(tmp_path / "site.jsonl"),
             "--out", str(tmp_path / "adapted"), "--epochs", "2", "--quiet", *extra],
            capture_output=True, text=True,
        )

    refused = finetune()
    assert refused.returncode != 0 and "unknown label 'joy'" in refused.stderr
    run = finetune("--label-map", "neutral=neu,joy=hap,anger=ang,sadness=sad")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["new_dialogues"] == 3 and summary["new_labels"] == expected
    assert Joyful.load(tmp_path / "adapted").info.label_set.labels == ("hap", "sad", "neu", "ang")
