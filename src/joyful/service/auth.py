"""Who may call the service: API tokens, roles, the route policy, and the middleware that enforces them.

A token reads ``jyf_<id>_<secret>``: ``id`` (16 hex digits) finds the token's record in
the store without trying every hash, ``secret`` (32 random bytes) is what proves it. The
store keeps only an scrypt digest of the whole token with a random salt, so a copy of the
store gives no usable token; the digest names its own parameters (``scrypt$N$r$p$salt$key``)
so they can be raised later without breaking tokens already handed out.

Roles are ordered, ``viewer`` < ``annotator`` < ``admin``; a route needs the role of
:func:`required_role` (the contract's policy, by method and path; a route it does not name
needs ``admin``, so a route added later is closed until someone opens it). While the
store holds no active token the service is open and every request acts as ``admin``
under the token name ``-`` (a laptop on loopback), unless
:attr:`Authenticator.require_tokens` is set (``joyful serve`` does so on a public address),
so revoking the last token can never open a public service.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from joyful.errors import JoyfulError

ROLES = ("viewer", "annotator", "admin")
#: The token name requests act under while the service is open (no active token in the store).
OPEN_NAME = "-"
PREFIX = "jyf"
#: scrypt cost: 16 MiB and some 50 ms per hash, paid once per token per process thanks to the cache.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: Where the middleware leaves the caller's :class:`Identity` in the ASGI scope.
IDENTITY_KEY = "joyful.identity"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_TOKEN = re.compile(rf"{PREFIX}_([0-9a-f]{{16}})_[A-Za-z0-9_-]{{20,128}}")
_GET = frozenset({"GET"})
_POLICY: tuple[tuple[frozenset[str], re.Pattern[str], str | None], ...] = tuple(
    (methods, re.compile(path), role)
    for methods, path, role in (
        (_GET, r"/|/static/.+|/health|/openapi\.json|/docs", None),
        (_GET, r"/model", "viewer"),
        (frozenset({"POST"}), r"/predict|/sessions|/sessions/[^/]+/utterances", "viewer"),
        (frozenset({"GET", "DELETE"}), r"/sessions/[^/]+", "viewer"),
        (frozenset({"POST"}), r"/corrections", "annotator"),
        (_GET, r"/review", "annotator"),
    )
)


class TokenRecordLike(Protocol):
    """What the middleware reads of a stored token (:class:`joyful.corrections.TokenRecord`)."""

    name: str
    role: str
    digest: str
    revoked: str | None


class TokenStore(Protocol):
    """The part of :class:`joyful.corrections.CorrectionStore` that authentication needs."""

    def token_by_id(self, token_id: str) -> TokenRecordLike | None: ...

    def active_tokens(self) -> int: ...


@dataclass(frozen=True)
class Identity:
    """Who a request acts as: the token's name (``-`` while the service is open) and its role."""

    name: str
    role: str


@dataclass(frozen=True)
class Refusal:
    """An answer instead of the route's: status, one-line reason, extra headers, and who asked if known (403)."""

    status: int
    detail: str
    headers: dict[str, str]
    identity: Identity | None = None

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status, headers=self.headers)


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`, else a one-line :class:`JoyfulError`."""
    if role not in ROLES:
        raise JoyfulError(f"unknown role {role!r}: choose {', '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    """``name`` if it can name a token: it shows in the audit log and in messages, so it is kept plain."""
    if not _NAME.fullmatch(name):
        raise JoyfulError(
            f"token name {name!r}: use 1 to 64 letters, digits and . _ @ + -, starting with a letter or digit"
        )
    return name


def new_token() -> tuple[str, str]:
    """A fresh random token and its id (the part the store looks it up by)."""
    token_id = secrets.token_hex(8)
    return token_id, f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"


def token_id_of(token: str) -> str | None:
    """The id inside ``token``, or None when it is not of the form this service hands out."""
    found = _TOKEN.fullmatch(token)
    return found.group(1) if found else None


def hash_token(token: str, *, salt: bytes | None = None) -> str:
    """The scrypt digest the store keeps for ``token``, with a fresh random salt unless one is given."""
    salt = secrets.token_bytes(16) if salt is None else salt
    key = hashlib.scrypt(token.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_token(token: str, digest: str) -> bool:
    """Whether ``token`` hashes to ``digest``, compared in constant time; a malformed digest verifies nothing."""
    try:
        scheme, n, r, p, salt, key = digest.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
        candidate = hashlib.scrypt(
            token.encode(), salt=base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4)),
            n=int(n), r=int(r), p=int(p), dklen=len(expected),
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(candidate, expected)


def required_role(method: str, path: str) -> str | None:
    """The role a request needs by the contract's policy, or None for a public route (``HEAD`` is ``GET``)."""
    method = "GET" if method == "HEAD" else method
    for methods, pattern, role in _POLICY:
        if method in methods and pattern.fullmatch(path):
            return role
    return "admin"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class FailureLimiter:
    """Counts failed token attempts per client address; after ``max_failures`` within ``window`` seconds it must wait.

    Kept in memory, per process: each of ``uvicorn --workers N`` counts on its own (a
    guesser gets up to N times the attempts) and a restart forgets. That is enough to make
    guessing a 256-bit secret hopeless; it is not meant to stop a flood of requests. Only
    attempts that present a wrong token count, not requests without one, so the page's
    first unauthenticated call does not lock a user out. Behind a reverse proxy the
    address is the proxy's unless uvicorn trusts its ``X-Forwarded-For`` (it does by
    default for a proxy on 127.0.0.1). At most ``max_addresses`` are remembered, the
    longest quiet forgotten first, so the table cannot grow without bound.
    """

    def __init__(
        self, max_failures: int = 10, window: float = 60.0, *, max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures, self.window, self.max_addresses = max_failures, window, max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Whole seconds ``address`` must wait before its next attempt, or None when it may try now."""
        with self._lock:
            times = self._recent(address)
            if times is None or len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window - self._clock()))

    def failed(self, address: str) -> None:
        """Count one failed attempt from ``address``."""
        with self._lock:
            times = self._recent(address)
            if times is None:
                times = self._failures[address] = deque()
            times.append(self._clock())
            self._failures.move_to_end(address)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def _recent(self, address: str) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        horizon = self._clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times


@dataclass(frozen=True)
class _Verified:
    digest: str
    identity: Identity
    checked: float


class Authenticator:
    """Turns an ``Authorization`` header into an :class:`Identity` or a :class:`Refusal`.

    Verified tokens are cached (by a SHA-256 of the token, so the cache holds no token
    text) so scrypt runs once per token; the cache only spares the hash, not the store:
    a cached token's record is read again once it is ``refresh_seconds`` old, and a
    revoked token stops working within that time, in every worker, even when revoked by
    ``joyful token revoke`` in another process. The count of active tokens (open or not)
    is re-read as often. Methods block (scrypt, the store): call them off the event loop.
    """

    def __init__(
        self, store: TokenStore, *, limiter: FailureLimiter | None = None, refresh_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.limiter = limiter or FailureLimiter()
        self.refresh_seconds = refresh_seconds
        self.require_tokens = False
        """Refuse every request without a valid token even while the store has no active token."""
        self._clock = clock
        self._verified: dict[bytes, _Verified] = {}
        self._active: tuple[float, bool] | None = None
        self._lock = threading.Lock()

    def check(self, authorization: str | None, address: str, needed: str) -> Identity | Refusal:
        """Who the request is, or why it is refused, for a route that needs role ``needed``."""
        if not self.require_tokens and not self._tokens_exist():
            return Identity(OPEN_NAME, "admin")
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Refusal(
                401, "this needs an API token: send the header Authorization: Bearer <token> (an administrator "
                "makes one with `joyful token create`)", {"WWW-Authenticate": "Bearer"},
            )
        wait = self.limiter.retry_after(address)
        if wait is not None:
            return Refusal(429, f"too many failed token attempts from this address; try again in {wait} s",
                           {"Retry-After": str(wait)})
        identity = self.identify(token)
        if identity is None:
            self.limiter.failed(address)
            return Refusal(401, "unknown or revoked token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if ROLES.index(identity.role) < ROLES.index(needed):
            detail = f"token {identity.name!r} has role {identity.role}; this needs {needed} or higher"
            return Refusal(403, detail, {}, identity)
        return identity

    def identify(self, token: str) -> Identity | None:
        """The identity of a valid, unrevoked ``token``, or None."""
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        with self._lock:
            cached = self._verified.get(key)
        if cached is not None and now - cached.checked < self.refresh_seconds:
            return cached.identity
        token_id = token_id_of(token)
        record = self.store.token_by_id(token_id) if token_id is not None else None
        if (
            record is None or record.revoked is not None or record.role not in ROLES
            or ((cached is None or cached.digest != record.digest) and not verify_token(token, record.digest))
        ):
            with self._lock:
                self._verified.pop(key, None)
            return None
        identity = Identity(record.name, record.role)
        with self._lock:
            self._verified[key] = _Verified(record.digest, identity, now)
        return identity

    def _tokens_exist(self) -> bool:
        now = self._clock()
        with self._lock:
            if self._active is not None and now - self._active[0] < self.refresh_seconds:
                return self._active[1]
        exist = self.store.active_tokens() > 0
        with self._lock:
            self._active = (now, exist)
        return exist


class Authentication:
    """ASGI middleware: answer 401, 403 or 429 (``{"detail": ...}``) before a route runs, by :func:`required_role`.

    A request let through carries its :class:`Identity` in ``scope[IDENTITY_KEY]``; so does
    one refused with 403, so the audit log can say whose attempt it was. Installed outside
    the body-size limit, so an unauthenticated client cannot make the service buffer a body.
    A store that cannot be read is a 503, as it is for the routes.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required_role(scope["method"], scope["path"])
        if needed is not None:
            client = scope.get("client")
            address = client[0] if client else "-"
            try:
                outcome: Identity | Refusal = await run_in_threadpool(
                    self.authenticator.check, Headers(scope=scope).get("authorization"), address, needed
                )
            except JoyfulError as e:  # the store cannot be read: the server's side, as the app's own handler says
                outcome = Refusal(503, str(e), {})
            if isinstance(outcome, Refusal):
                if outcome.identity is not None:
                    scope[IDENTITY_KEY] = outcome.identity
                await outcome.response()(scope, receive, send)
                return
            scope[IDENTITY_KEY] = outcome
        await self.app(scope, receive, send)


#: The refusals of :class:`Authentication`, as the OpenAPI schema documents them.
REFUSALS = {
    "401": "No token, or one unknown or revoked (while the store holds a token)",
    "403": "The token's role is too low for this route",
    "429": "Too many failed token attempts from this address; see the Retry-After header",
}


def document_tokens(app: FastAPI) -> None:
    """Say in ``app``'s OpenAPI schema which role each route needs and how it may be refused.

    So ``/docs`` offers to send a token, and a client (or a schema-driven fuzzer) knows
    401, 403 and 429 are answers of the API, not failures.
    """
    build = app.openapi
    error = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["token"] = {
                "type": "http", "scheme": "bearer", "description": "An API token made by `joyful token create`.",
            }
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    role = required_role(method.upper(), path)
                    if role is None:
                        continue
                    # Or none: while the store holds no token the service is open (see the module docstring).
                    operation["security"] = [{"token": []}, {}]
                    operation["description"] = f"{operation.get('description', '')}\n\nNeeds role **{role}**.".strip()
                    for status, description in REFUSALS.items():
                        operation.setdefault("responses", {}).setdefault(
                            status, {"description": description, "content": {"application/json": {"schema": error}}}
                        )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def identity_of(scope: Scope) -> Identity | None:
    """Who the request acts as, once :class:`Authentication` has let it through (None on public routes)."""
    return scope.get(IDENTITY_KEY)
