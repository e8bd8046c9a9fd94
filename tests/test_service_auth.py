"""API tokens, roles, rate limiting and the audit log of the service, through HTTP.

The first tests run the middleware in a small app against a fake store (what the
middleware asks of the store, nothing more); the later ones run the real service with a
real store, and the commands as a user runs them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from service_fixtures import (  # noqa: F401 - served_model_dir is a fixture
    dialogue_body,
    file_bytes,
    live_server,
    sample_dialogue,
    served_model_dir,
)
from test_service_browser import browser  # noqa: F401 - a fixture (skips without playwright and chromium)
from typer.testing import CliRunner

from joyful import Joyful
from joyful.cli import app as cli_app
from joyful.corrections import CorrectionStore
from joyful.errors import JoyfulError
from joyful.service.app import create_app
from joyful.service.audit import AuditLog, note_dialogue
from joyful.service.auth import (
    Authentication,
    Authenticator,
    FailureLimiter,
    hash_token,
    new_token,
    required_role,
    token_id_of,
    verify_token,
)
from joyful.service.commands import serve_command


@dataclasses.dataclass
class FakeRecord:
    token_id: str
    name: str
    role: str
    digest: str
    created: str = "2026-01-01T00:00:00.000Z"
    revoked: str | None = None


class FakeStore:
    """Tokens and audit rows in memory; counts lookups, so the cache can be seen at work."""

    def __init__(self) -> None:
        self.records: dict[str, FakeRecord] = {}
        self.rows: list[tuple] = []
        self.lookups = 0

    def add(self, name: str, role: str) -> str:
        token_id, token = new_token()
        self.records[token_id] = FakeRecord(token_id, name, role, hash_token(token))
        return token

    def token_by_id(self, token_id: str) -> FakeRecord | None:
        self.lookups += 1
        return self.records.get(token_id)

    def active_tokens(self) -> int:
        return sum(r.revoked is None for r in self.records.values())

    def audit(self, token: str | None, action: str, dialogue: str | None, outcome: str) -> None:
        self.rows.append((token, action, dialogue, outcome))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def small_app(store: FakeStore, authenticator: Authenticator) -> FastAPI:
    """Routes shaped like the service's, behind the same middleware, in the same order."""
    app = FastAPI()
    app.add_middleware(Authentication, authenticator=authenticator)
    app.add_middleware(AuditLog, store=store)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    def model_info() -> dict:
        return {"task": "classification"}

    @app.post("/corrections", status_code=201)
    def add_correction(request: Request, body: dict) -> dict:
        note_dialogue(request, body["dialogue"])
        return body

    @app.delete("/dialogues/{dialogue_id}")
    def delete_dialogue(dialogue_id: str) -> dict:
        return {"dialogue": dialogue_id}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def fake() -> tuple[FakeStore, Clock, TestClient, dict[str, str]]:
    store, clock = FakeStore(), Clock()
    tokens = {role: store.add(f"{role}-1", role) for role in ("viewer", "annotator", "admin")}
    auth = Authenticator(store, limiter=FailureLimiter(3, 60.0, clock=clock), clock=clock)
    return store, clock, TestClient(small_app(store, auth)), tokens


def test_digest_is_salted_scrypt_and_holds_no_token_text():
    token_id, token = new_token()
    assert token_id_of(token) == token_id and token_id_of(token + "!") is None and token_id_of("jyf_x_y") is None
    first, second = hash_token(token), hash_token(token)
    assert first != second and first.startswith("scrypt$") and token not in first and token_id not in first
    assert verify_token(token, first) and verify_token(token, second)
    assert not verify_token(token[:-1] + ("A" if token[-1] != "A" else "B"), first)
    assert not verify_token(token, "scrypt$garbage") and not verify_token(token, "md5$1$1$1$AA$AA")


@pytest.mark.parametrize(("method", "path", "role"), [
    ("GET", "/", None), ("GET", "/static/app.js", None), ("GET", "/health", None), ("HEAD", "/health", None),
    ("GET", "/openapi.json", None), ("GET", "/docs", None),
    ("GET", "/model", "viewer"), ("POST", "/predict", "viewer"), ("POST", "/sessions", "viewer"),
    ("GET", "/sessions/abc", "viewer"), ("DELETE", "/sessions/abc", "viewer"),
    ("POST", "/sessions/abc/utterances", "viewer"),
    ("POST", "/corrections", "annotator"), ("GET", "/review", "annotator"),
    ("GET", "/corrections", "admin"), ("GET", "/export", "admin"), ("DELETE", "/dialogues/d1", "admin"),
    ("GET", "/audit", "admin"), ("GET", "/monitor", "admin"),
    # Not named by the policy: closed to all but admin.
    ("POST", "/health", "admin"), ("GET", "/sessions/a/b", "admin"), ("GET", "/redoc", "admin"),
    ("PUT", "/corrections", "admin"), ("GET", "/healthz", "admin"),
])
def test_route_policy(method, path, role):
    assert required_role(method, path) == role


def test_roles_through_http(fake):
    store, _, client, tokens = fake
    assert client.get("/health").status_code == 200
    missing = client.get("/model")
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["detail"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    unknown_id, unknown = new_token()
    assert client.get("/model", headers=bearer(unknown)).json() == {"detail": "unknown or revoked token"}
    assert client.get("/model", headers={"Authorization": f"Basic {tokens['admin']}"}).status_code == 401
    assert client.get("/model", headers=bearer(tokens["viewer"])).status_code == 200
    body = {"dialogue": "d1", "index": 0, "label": "hap"}
    refused = client.post("/corrections", json=body, headers=bearer(tokens["viewer"]))
    assert refused.status_code == 403
    assert refused.json() == {"detail": "token 'viewer-1' has role viewer; this needs annotator or higher"}
    assert client.post("/corrections", json=body, headers=bearer(tokens["annotator"])).status_code == 201
    assert client.delete("/dialogues/d1", headers=bearer(tokens["annotator"])).status_code == 403
    assert client.delete("/dialogues/d1", headers=bearer(tokens["admin"])).status_code == 200
    # One row per data request, refusals included; /health and /model read no stored data.
    assert store.rows == [
        ("viewer-1", "add_correction", None, "403"),
        ("annotator-1", "add_correction", "d1", "201"),
        ("annotator-1", "delete_dialogue", "d1", "403"),
        ("admin-1", "delete_dialogue", "d1", "200"),
    ]


def test_open_without_tokens_unless_required():
    store = FakeStore()
    auth = Authenticator(store, refresh_seconds=0)
    client = TestClient(small_app(store, auth))
    assert client.delete("/dialogues/d1").status_code == 200
    assert store.rows == [("-", "delete_dialogue", "d1", "200")]
    auth.require_tokens = True  # as `joyful serve` sets on a public address
    assert client.delete("/dialogues/d1").status_code == 401


def test_cache_spares_scrypt_and_revocation_takes_effect_within_refresh(fake, monkeypatch):
    store, clock, client, tokens = fake
    hashed = []
    monkeypatch.setattr("joyful.service.auth.verify_token", lambda t, d: hashed.append(t) or verify_token(t, d))
    for _ in range(5):
        assert client.get("/model", headers=bearer(tokens["viewer"])).status_code == 200
    assert len(hashed) == 1 and store.lookups == 1
    clock.now += 2.5  # past refresh: the record is read again, the hash is not recomputed
    assert client.get("/model", headers=bearer(tokens["viewer"])).status_code == 200
    assert len(hashed) == 1 and store.lookups == 2
    store.records[token_id_of(tokens["viewer"])].revoked = "2026-01-02T00:00:00.000Z"
    assert client.get("/model", headers=bearer(tokens["viewer"])).status_code == 200  # cached for < 2 s
    clock.now += 2.5
    assert client.get("/model", headers=bearer(tokens["viewer"])).status_code == 401


def test_repeated_bad_tokens_are_rate_limited_per_address(fake):
    store, clock, client, tokens = fake
    wrong = new_token()[1]
    for _ in range(3):
        assert client.get("/model", headers=bearer(wrong)).status_code == 401
    limited = client.get("/model", headers=bearer(tokens["admin"]))  # even a good token waits: no oracle
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert "try again in 60 s" in limited.json()["detail"]
    assert client.get("/model").status_code == 401  # no token: nothing to guess, nothing counted
    other = TestClient(client.app, client=("10.0.0.2", 5000))
    assert other.get("/model", headers=bearer(tokens["admin"])).status_code == 200
    clock.now += 61
    assert client.get("/model", headers=bearer(tokens["admin"])).status_code == 200


def test_limiter_forgets_the_quietest_address_past_its_capacity():
    clock = Clock()
    limiter = FailureLimiter(1, 10.0, max_addresses=2, clock=clock)
    for address in ("a", "b", "c"):
        limiter.failed(address)
    assert limiter.retry_after("a") is None and limiter.retry_after("b") == 10 and limiter.retry_after("c") == 10
    clock.now += 4.2
    assert limiter.retry_after("c") == 6



# ---------------------------------------------------------------------- the real service and store


@pytest.fixture(scope="module")
def clf(served_model_dir):
    return Joyful.load(served_model_dir)


def make_token(store_path: Path, name: str, role: str) -> str:
    token_id, token = new_token()
    with CorrectionStore(store_path) as db:
        db.add_token(token_id, name, role, hash_token(token))
    return token


@pytest.fixture
def service(clf, tmp_path) -> Iterator[tuple[TestClient, Path, dict[str, str]]]:
    """The service over a store with a token of each role (named after it); the cache re-reads at once."""
    store_path = tmp_path / "store.sqlite"
    tokens = {role: make_token(store_path, role, role) for role in ("viewer", "annotator", "admin")}
    app = create_app(clf, store_path)
    app.state.auth.refresh_seconds = 0
    with TestClient(app) as client:
        yield client, store_path, tokens


def test_service_answers_by_token_and_role(service):
    client, store_path, tokens = service
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
    documented = client.get("/openapi.json").json()
    assert documented["paths"]["/corrections"]["post"]["security"] == [{"token": []}, {}]
    assert {"401", "403", "429"} <= set(documented["paths"]["/audit"]["get"]["responses"])
    assert "security" not in documented["paths"]["/health"]["get"]
    assert client.get("/model").status_code == 401
    assert client.get("/model", headers=bearer(new_token()[1])).status_code == 401
    d = sample_dialogue(prefix="auth-")
    predicted = client.post("/predict", json={**dialogue_body(d), "consent": "store"}, headers=bearer(tokens["viewer"]))
    assert predicted.status_code == 200, predicted.text
    label = predicted.json()["utterances"][0]["label"]
    correction = {"dialogue": d.id, "index": 0, "label": label}
    refused = client.post("/corrections", json=correction, headers=bearer(tokens["viewer"]))
    assert refused.status_code == 403 and "needs annotator" in refused.json()["detail"]
    assert client.post("/corrections", json=correction, headers=bearer(tokens["annotator"])).status_code == 201
    assert client.get("/review", headers=bearer(tokens["annotator"])).status_code == 200
    assert client.get("/audit", headers=bearer(tokens["annotator"])).status_code == 403
    audit = client.get("/audit", headers=bearer(tokens["admin"]))
    assert audit.status_code == 200
    assert [(e["action"], e["outcome"]) for e in audit.json()][-3:] == [
        ("add_correction", "201"), ("review", "200"), ("audit_log", "403")]
    with CorrectionStore(store_path) as db:
        assert db.revoke_token("viewer")
    assert client.get("/model", headers=bearer(tokens["viewer"])).status_code == 401
    for _ in range(8):  # with the revoked one above and the unknown one, 10 failures: the limit
        assert client.get("/model", headers=bearer(new_token()[1])).status_code == 401
    limited = client.get("/model", headers=bearer(tokens["admin"]))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


def test_audit_log_names_each_data_request_never_its_content(service):
    client, store_path, tokens = service
    d = sample_dialogue(prefix="audited-")
    body = dialogue_body(d)
    body["utterances"] = [{**u, "speaker": f"Quintessa{i % 2}", "text": f"secret words {i}"}
                          for i, u in enumerate(body["utterances"])]
    admin, annotator = bearer(tokens["admin"]), bearer(tokens["annotator"])
    client.get("/model", headers=admin)  # reads no stored data: not audited
    assert client.post("/predict", json={**body, "consent": "store"}, headers=annotator).status_code == 200
    assert client.get("/review", headers=annotator).status_code == 200
    label = client.get("/model", headers=annotator).json()["labels"][-1]
    assert client.post("/corrections", json={"dialogue": d.id, "index": 1, "label": label, "annotator": "Ottoline"},
                       headers=annotator).status_code == 201
    assert client.get("/corrections", params={"dialogue": d.id}, headers=admin).status_code == 200
    assert client.delete(f"/dialogues/{d.id}", headers=bearer(tokens["viewer"])).status_code == 403
    assert client.delete(f"/dialogues/{d.id}", headers=admin).status_code == 200
    assert client.get("/corrections").status_code == 401
    with CorrectionStore(store_path) as db:
        key = db.dialogue_key(d.id)
        entries = [(e.token, e.action, e.dialogue, e.outcome) for e in db.audit_log()]
        times = [e.time for e in db.audit_log()]
    assert key.startswith("p-")
    assert entries == [
        ("annotator", "predict", key, "200"),
        ("annotator", "review", None, "200"),
        ("annotator", "add_correction", key, "201"),
        ("admin", "list_corrections", key, "200"),
        ("viewer", "delete_dialogue", key, "403"),
        ("admin", "delete_dialogue", key, "200"),
    ]  # the refusal for want of a token (401) names nobody: not logged
    assert all(t.endswith(("Z", "+00:00")) for t in times)
    logged = json.dumps(client.get("/audit", headers=admin).json())
    assert d.id not in logged and "Quintessa" not in logged and "secret words" not in logged
    assert "Ottoline" not in logged and tokens["admin"] not in logged


# ---------------------------------------------------------------------- the commands


def joyful(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "joyful.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_token_commands(tmp_path):
    store = tmp_path / "tokens.sqlite"
    made = subprocess.run([sys.executable, "-m", "joyful.cli", "token", "create", "--store", str(store), "--role",
                           "annotator", "--name", "ann"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stdout
    token = made.stdout.strip().splitlines()[-1]
    assert token_id_of(token) is not None and len(made.stdout.strip().splitlines()) == 2
    with CorrectionStore(store) as db:
        record = db.token_by_id(token_id_of(token))
        assert record.name == "ann" and record.role == "annotator" and verify_token(token, record.digest)
    secret = token.split("_", 2)[2]  # jyf_<id>_<secret>; the secret itself may hold "_"
    assert secret.encode() not in file_bytes(store) and token.encode() not in file_bytes(store)
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["token", "list", "--store", str(store)])
    assert listed.exit_code == 0 and "ann" in listed.stdout and "annotator" in listed.stdout
    assert "scrypt" not in listed.stdout and record.digest.split("$")[-1] not in listed.stdout
    again = runner.invoke(cli_app, ["token", "create", "--store", str(store), "--role", "viewer", "--name", "ann"])
    assert again.exit_code == 2 and "exists already" in again.stderr
    bad_role = runner.invoke(cli_app, ["token", "create", "--store", str(store), "--role", "root", "--name", "x"])
    assert bad_role.exit_code == 2 and "unknown role 'root'" in bad_role.stderr
    assert runner.invoke(cli_app, ["token", "revoke", "--store", str(store), "--name", "ann"]).exit_code == 0
    again = runner.invoke(cli_app, ["token", "revoke", "--store", str(store), "--name", "ann"])
    assert again.exit_code == 2 and again.stderr.count("\n") == 1
    listed = runner.invoke(cli_app, ["token", "list", "--store", str(store)]).stdout.splitlines()
    assert listed[0].split() == ["name", "role", "created", "revoked"] and listed[1].split()[-1] != "-"
    shown = runner.invoke(cli_app, ["audit", "--store", str(store), "--json"])
    assert [json.loads(line)["action"] for line in shown.stdout.splitlines()] == ["token_create", "token_revoke"]
    assert all(json.loads(line)["outcome"] == "ok" for line in shown.stdout.splitlines())
    last = runner.invoke(cli_app, ["audit", "--store", str(store), "--limit", "1"]).stdout.splitlines()
    assert len(last) == 2 and "token_revoke" in last[1]
    missing = runner.invoke(cli_app, ["token", "list", "--store", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and not (tmp_path / "none.sqlite").exists()


def test_serve_refuses_a_public_address_without_tokens(served_model_dir, tmp_path):
    store = tmp_path / "store.sqlite"
    refused = joyful("serve", "--model", str(served_model_dir), "--store", str(store), "--host", "0.0.0.0",
                     "--port", "0", timeout=30)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "refusing to serve on 0.0.0.0" in refused.stderr and "joyful token create" in refused.stderr
    half = joyful("serve", "--model", str(served_model_dir), "--ssl-certfile", str(tmp_path / "c.pem"), timeout=30)
    assert half.returncode == 2 and "together" in half.stderr
    cert, key = self_signed(tmp_path)
    with pytest.raises(JoyfulError, match="cannot load them"):
        serve_command(model=served_model_dir, store=store, ssl_certfile=cert, ssl_keyfile=cert)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here with the openssl binary."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.fixture
def serve_in_process(monkeypatch) -> Iterator[Callable[..., tuple[uvicorn.Server, int]]]:
    """Run ``serve_command`` here (a subprocess would spend most of the time budget importing PyTorch).

    The server it builds is captured instead of run; it is started in a thread, and the
    test gets it with its port.
    """
    run = uvicorn.Server.run
    captured: list[tuple[uvicorn.Server, list]] = []
    running: list[tuple[uvicorn.Server, threading.Thread]] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: captured.append((server, sockets)))

    def serve(**options: object) -> tuple[uvicorn.Server, int]:
        serve_command(**options)
        server, sockets = captured.pop()
        thread = threading.Thread(target=run, args=(server,), kwargs={"sockets": sockets}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        return server, sockets[0].getsockname()[1]

    yield serve
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=30)


def test_serve_insecure_over_https(served_model_dir, tmp_path, serve_in_process, capsys):
    """--insecure-no-auth starts and warns; a self-signed certificate made here serves /health over HTTPS."""
    cert, key = self_signed(tmp_path)
    _, port = serve_in_process(model=served_model_dir, store=tmp_path / "store.sqlite", host="0.0.0.0", port=0,
                               insecure_no_auth=True, ssl_certfile=cert, ssl_keyfile=key)
    serving, warning = capsys.readouterr().err.splitlines()
    assert f"at https://0.0.0.0:{port}/" in serving
    assert warning.startswith("joyful: warning: --insecure-no-auth") and "anyone who reaches this port" in warning
    url = f"https://127.0.0.1:{port}"
    answer = httpx.get(f"{url}/health", verify=ssl.create_default_context(cafile=str(cert)), timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
        httpx.get(f"{url}/health", timeout=10)


def test_serve_on_a_public_address_stays_closed_when_every_token_is_revoked(served_model_dir, tmp_path,
                                                                             serve_in_process, capsys):
    store = tmp_path / "store.sqlite"
    token = make_token(store, "site", "admin")
    server, port = serve_in_process(model=served_model_dir, store=store, host="0.0.0.0", port=0)
    assert len(capsys.readouterr().err.splitlines()) == 1  # no warning
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/model", timeout=10).status_code == 401
    assert httpx.get(f"{url}/model", headers=bearer(token), timeout=10).status_code == 200
    with CorrectionStore(store) as db:
        db.revoke_token("site")
    server.config.app.state.auth.refresh_seconds = 0
    assert httpx.get(f"{url}/model", timeout=10).status_code == 401
    assert httpx.get(f"{url}/model", headers=bearer(token), timeout=10).status_code == 401


def test_page_asks_for_a_token_and_keeps_it_for_the_tab(browser, clf, tmp_path):
    store = tmp_path / "store.sqlite"
    viewer = make_token(store, "pilot", "viewer")
    with live_server(create_app(clf, store)) as url:
        page = browser.new_page()
        try:
            page.goto(url)
            page.wait_for_selector("#token-form:not([hidden])")
            assert "a valid API token is needed" in page.text_content("#model-info")
            page.fill("#token", new_token()[1])
            page.click("#token-use")
            page.wait_for_selector("#token-info:has-text('unknown or revoked token')")
            page.fill("#token", viewer)
            page.click("#token-use")
            page.wait_for_selector("#model-info:has-text('labels:')")
            # The review queue needs an annotator: said plainly, not as a bare status code.
            page.wait_for_selector("#status:has-text('not allowed with this token')")
            assert page.is_hidden("#token-form") and page.is_visible("#token-forget")
            stored = page.evaluate("[sessionStorage.getItem('joyful-token'), localStorage.length, document.cookie]")
            assert stored == [viewer, 0, ""]
            page.click("#token-forget")
            assert page.evaluate("sessionStorage.length") == 0 and page.is_visible("#token-form")
        finally:
            page.close()
