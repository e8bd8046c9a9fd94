"""The pilot's loop end to end: stream a dialogue into the service, correct labels, fine-tune, check, delete."""

from __future__ import annotations

import json
import subprocess
import sys

from fastapi.testclient import TestClient

from joyful import Joyful
from joyful.corrections import CorrectionStore
from joyful.service.app import create_app
from service_fixtures import file_bytes, sample_dialogue, served_model_dir, utterance_body  # noqa: F401


def test_stream_correct_finetune_delete(served_model_dir, tmp_path):  # noqa: F811
    store_path = tmp_path / "store.sqlite"
    d = sample_dialogue(seed=41, n=9, prefix="pilot-")
    with TestClient(create_app(served_model_dir, store_path)) as client:
        sid = client.post("/sessions", json={"consent": "train", "dialogue": d.id}).json()["session"]
        streamed = [client.post(f"/sessions/{sid}/utterances", json=utterance_body(d, i)).json() for i in range(len(d))]
        wanted = {r["index"]: d.labels[r["index"]] for r in streamed if r["label"] != d.labels[r["index"]]}
        assert len(wanted) >= 2  # the small model gets some wrong: a person corrects them
        for index, label in wanted.items():
            body = {"dialogue": d.id, "index": index, "label": label, "annotator": "pilot"}
            assert client.post("/corrections", json=body).status_code == 201

    adapted = tmp_path / "adapted"
    run = subprocess.run(
        [sys.executable, "-m", "joyful.cli", "finetune", "--model", str(served_model_dir), "--corrections", str(store_path),
         "--out", str(adapted), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["new_labels"] == len(wanted) and summary["new_accuracy_before"] == 0.0
    assert summary["valid_weighted_f1_after"] >= summary["valid_weighted_f1_before"] - 0.01, summary

    with CorrectionStore(store_path) as store:
        stored = store.dialogue(d.id)
    rows = Joyful.load(adapted).predict([stored])
    right = sum(rows[i]["label"] == label for i, label in wanted.items())
    assert right == len(wanted), (summary, right)

    with TestClient(create_app(adapted, store_path)) as client:
        removed = client.delete(f"/dialogues/{d.id}").json()["removed"]
        assert removed["corrections"] == len(wanted) and removed["dialogues"] == 1
        assert client.get("/corrections", params={"dialogue": d.id}).json() == []
        assert client.delete(f"/dialogues/{d.id}").status_code == 404
    assert d.id.encode() not in file_bytes(store_path)
