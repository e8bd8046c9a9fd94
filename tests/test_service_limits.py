"""Limits of single request fields: past its limit a field is refused (422 naming it) before any model code runs.

The body limit alone (8 MiB) let one utterance carry 2,000,000 characters of text to the
text encoder, or a dialogue thousands of utterances; each field now has a limit of its
own, at its value accepted and one past it refused, and the OpenAPI schema shows it.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from joyful import Joyful
from joyful.service.app import create_app
from joyful.service.schemas import (
    MAX_LABELS,
    MAX_NAME_CHARS,
    MAX_SPEAKERS,
    MAX_TEXT_CHARS,
    MAX_UTTERANCES,
    MAX_VECTOR_WIDTH,
)
from service_fixtures import dialogue_body, sample_dialogue, served_model_dir  # noqa: F401 - served_model_dir is a fixture


@pytest.fixture(scope="module")
def client(served_model_dir, tmp_path_factory):
    app = create_app(Joyful.load(served_model_dir), tmp_path_factory.mktemp("limits") / "store.sqlite")
    with TestClient(app) as c:
        yield c


def _dialogue(**utterance: Any) -> dict[str, Any]:
    """A valid dialogue of the model's widths whose first utterance has the fields given."""
    body = dialogue_body(sample_dialogue(n=2))
    body["utterances"][0].update(utterance)
    return body


def _refused(r, field: str) -> None:
    """Refused with 422, the detail naming ``field`` and its limit (pydantic's "at most N" or "less than N")."""
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith(field) and ("at most" in detail or "less than" in detail), detail


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/predict", _dialogue(text="x" * 2_000_000), "utterances[0].text"),
    ("/predict", _dialogue(text="x" * (MAX_TEXT_CHARS + 1)), "utterances[0].text"),
    ("/predict", _dialogue(audio=[0.0] * (MAX_VECTOR_WIDTH + 1)), "utterances[0].audio"),
    ("/predict", _dialogue(speaker="s" * (MAX_NAME_CHARS + 1)), "utterances[0].speaker"),
    ("/predict", _dialogue(label=["hap"] * (MAX_LABELS + 1)), "utterances[0].label"),
    ("/predict", {"dialogue": "d", "utterances": [{"speaker": "A"}] * (MAX_UTTERANCES + 1)}, "utterances"),
    ("/predict", {**_dialogue(), "dialogue": "d" * (MAX_NAME_CHARS + 1)}, "dialogue"),
    ("/sessions", {"speakers": [f"s{i}" for i in range(MAX_SPEAKERS + 1)]}, "speakers"),
    ("/corrections", {"dialogue": "d", "index": MAX_UTTERANCES, "label": "hap"}, "index"),
    ("/corrections", {"dialogue": "d", "index": 0, "label": "hap", "annotator": "a" * (MAX_NAME_CHARS + 1)}, "annotator"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_field_past_its_limit_gets_422_naming_it(client, path, body, field):
    _refused(client.post(path, json=body), field)


def test_a_field_at_its_limit_is_accepted(client):
    r = client.post("/predict", json=_dialogue(text="x" * MAX_TEXT_CHARS, speaker="s" * MAX_NAME_CHARS))
    assert r.status_code == 200, r.text
    r = client.post("/predict", json={"dialogue": "long", "utterances": [{"speaker": "A"}] * MAX_UTTERANCES})
    assert r.status_code == 200, r.text
    assert len(r.json()["utterances"]) == MAX_UTTERANCES
    r = client.post("/sessions", json={"speakers": [f"s{i}" for i in range(MAX_SPEAKERS)]})
    assert r.status_code == 201, r.text


def test_a_streamed_utterance_has_the_same_limits_as_json_and_as_a_form(client):
    session = client.post("/sessions", json={}).json()["session"]
    url = f"/sessions/{session}/utterances"
    _refused(client.post(url, json={"speaker": "A", "text": "x" * (MAX_TEXT_CHARS + 1)}), "text")
    _refused(client.post(url, json={"speaker": "A", "visual": [0.0] * (MAX_VECTOR_WIDTH + 1)}), "visual")
    form = {"speaker": (None, "A"), "text": (None, "x" * (MAX_TEXT_CHARS + 1))}  # (None, value): a field, not a file
    _refused(client.post(url, files=form), "text")
    assert client.get(f"/sessions/{session}").json()["utterances"] == []


def test_the_openapi_schema_shows_every_limit(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    utterance, dialogue = schemas["UtteranceIn"]["properties"], schemas["DialogueIn"]["properties"]

    def limits(prop: dict, key: str) -> set[int]:
        return {alt[key] for alt in prop.get("anyOf", [prop]) if key in alt}

    assert limits(utterance["text"], "maxLength") == {MAX_TEXT_CHARS}
    for field in ("text_features", "audio", "visual"):
        assert limits(utterance[field], "maxItems") == {MAX_VECTOR_WIDTH}
    assert limits(utterance["speaker"], "maxLength") == {MAX_NAME_CHARS}
    assert limits(dialogue["utterances"], "maxItems") == {MAX_UTTERANCES}
    assert limits(dialogue["dialogue"], "maxLength") == {MAX_NAME_CHARS}
    assert limits(schemas["SessionIn"]["properties"]["speakers"], "maxItems") == {MAX_SPEAKERS}
    assert schemas["CorrectionIn"]["properties"]["index"]["exclusiveMaximum"] == MAX_UTTERANCES
    assert limits(schemas["CorrectionIn"]["properties"]["label"], "maxItems") == {MAX_LABELS}


def test_explanations_are_limited_to_dialogues_a_request_can_afford(client):
    """Explaining n utterances re-runs the model about n times on n utterances: a long dialogue is labelled, not explained."""
    from joyful.service.app import MAX_EXPLAINED_UTTERANCES

    long = dialogue_body(sample_dialogue(n=MAX_EXPLAINED_UTTERANCES + 1))
    r = client.post("/predict?explain=true", json=long)
    assert r.status_code == 422 and "field 'explain'" in r.json()["detail"]
    assert f"at most {MAX_EXPLAINED_UTTERANCES} utterances" in r.json()["detail"]
    labelled = client.post("/predict", json=long)
    assert labelled.status_code == 200 and len(labelled.json()["utterances"]) == MAX_EXPLAINED_UTTERANCES + 1
    short = client.post("/predict?explain=true", json=dialogue_body(sample_dialogue(n=3)))
    assert short.status_code == 200 and all(u["explanation"] for u in short.json()["utterances"])
