"""The service fuzzed from its own OpenAPI schema (schemathesis): whatever a client sends, it answers as documented.

Every operation gets requests generated from the schema, valid ones (``positive``) and
ones that break it (``negative``: wrong types, values past their limits, missing fields);
every answer must not be a server error, must have a status the operation documents,
a documented content type, a body that fits the documented schema, and an invalid
request must be refused. The service runs as ``joyful serve`` runs it (uvicorn, on
loopback, with an empty store: no token, so every request acts as admin); then, with a
token in the store, requests with a viewer's token or a wrong one must meet 403, 401 and
429 only where the schema documents them.

Hypothesis is derandomized and does not shrink, so a run is the same every time and
takes seconds. schemathesis' own pytest integration (``from_fixture``) does not work with
the pytest used here, so each operation's strategy is run under ``@given`` in a subtest.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from joyful import Joyful
from joyful.service.app import create_app
from joyful.service.auth import hash_token, new_token
from service_fixtures import live_server, served_model_dir  # noqa: F401 - served_model_dir is a fixture

CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    negative_data_rejection,
]
#: Enough to meet every field's edge cases in a few seconds per operation.
EXAMPLES = 25
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.fixture
def base_url(served_model_dir, tmp_path) -> Iterator[str]:
    """The service on a real server: schemathesis' in-process client would run the app's lifespan per request."""
    with live_server(create_app(Joyful.load(served_model_dir), tmp_path / "store.sqlite")) as url:
        yield url


@pytest.fixture
def api(base_url) -> BaseSchema:
    return _schema(base_url)


def _schema(url: str) -> BaseSchema:
    """The schema as the service at ``url`` serves it, generating no Authorization header: the tests choose it.

    Without tokens in the store no request needs one, so leaving it out (which a negative
    case would do) is no error; with tokens, the header is the test's own.
    """
    config = SchemathesisConfig.from_dict({"generation": {"with-security-parameters": False}})
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)


def _fuzz(operation: APIOperation, mode: GenerationMode, *, headers: dict[str, str] | None = None, **fixed) -> None:
    """Send the operation's generated requests (``fixed``: parameters not generated) and check every answer."""

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case) -> None:
        case.call_and_validate(checks=CHECKS, headers=headers)

    run()


def _negatable(operation: APIOperation) -> bool:
    """Whether a request can break the operation's schema: a free string path parameter alone cannot."""
    return bool(operation.body or operation.query)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(api, mode, subtests):
    operations = [result.ok() for result in api.get_all_operations()]
    assert {"POST /predict", "POST /sessions", "POST /corrections"} <= {op.label for op in operations}
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and not _negatable(operation):
            continue
        with subtests.test(msg=operation.label):
            _fuzz(operation, mode)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_a_live_session_answers_as_documented(api, base_url, mode):
    """Utterances sent to a session that exists reach the model, not only the 404 of an unknown session id."""
    session = httpx.post(f"{base_url}/sessions", json={"consent": "store"}).json()["session"]
    _fuzz(api["/sessions/{session_id}/utterances"]["POST"], mode, path_parameters={"session_id": session})
    r = httpx.get(f"{base_url}/sessions/{session}")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("token", ["viewer", "wrong"])
def test_with_tokens_refusals_are_documented(served_model_dir, tmp_path, subtests, token):
    """A viewer meets 403 on annotator and admin routes; a wrong token 401, then 429 once it has failed too often."""
    app = create_app(Joyful.load(served_model_dir), tmp_path / "store.sqlite")
    token_id, secret = new_token()
    app.state.store.add_token(token_id, "fuzz", "viewer", hash_token(secret))
    if token == "wrong":
        secret = new_token()[1]
    with live_server(app) as url:
        for operation in (result.ok() for result in _schema(url).get_all_operations()):
            with subtests.test(msg=operation.label):
                _fuzz(operation, GenerationMode.POSITIVE, headers={"Authorization": f"Bearer {secret}"})
