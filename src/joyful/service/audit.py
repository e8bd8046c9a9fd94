"""The audit log: who read or changed stored data, when, through which route, about which dialogue, with what outcome.

:class:`AuditLog` (ASGI middleware) writes one row per request that reaches stored data,
after the response: the token name (``-`` while the service is open), the action (the
route's name, e.g. ``add_correction``), the dialogue (the store pseudonymises it), and the
outcome (the HTTP status). A request refused with 403 is logged too: whose token tried
what is worth knowing. One refused for want of a valid token (401, 429) is not: it names
nobody, and logging it would let anyone who reaches the port fill the log (failed
attempts are what the rate limit of :mod:`joyful.service.auth` is for). Nothing of a request's
content (texts, speakers, labels, features) is ever written; the dialogue id is the only
request value logged, and the store replaces it by its pseudonym.

A route names its dialogue with :func:`note_dialogue`; a route with a ``{dialogue_id}``
path parameter has it noted already, so a refused ``DELETE /dialogues/{id}`` names it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from joyful.service.auth import identity_of, required_role

#: Where the middleware keeps the request's :class:`_Note` in the ASGI scope.
AUDIT_KEY = "joyful.audit"
#: Routes that need a token but read nothing stored (method, path).
NO_STORED_DATA = frozenset({("GET", "/model")})


class AuditStore(Protocol):
    """The part of :class:`joyful.corrections.CorrectionStore` the middleware writes to."""

    def audit(self, token: str | None, action: str, dialogue: str | None, outcome: str) -> None: ...


@dataclass
class _Note:
    """What a route tells the audit log about its request (a holder, so the route can fill it in)."""

    dialogue: str | None = None


def note_dialogue(request: Request, dialogue_id: str | None) -> None:
    """Name the dialogue this request reads or changes, for its audit row (does nothing outside :class:`AuditLog`)."""
    note = request.scope.get(AUDIT_KEY)
    if note is not None:
        note.dialogue = dialogue_id


class AuditLog:
    """ASGI middleware writing ``store.audit(token, action, dialogue, outcome)`` after each data request.

    The action is the name of the route the router chose; a request refused by
    :class:`joyful.service.auth.Authentication` never reaches the router, so its route is
    found here by matching it against the app's routes. A request that matches no route
    (404) names no action and reads nothing, so it is not logged; one that fails inside
    the app is logged as 500; one without an identity (see the module docstring) is not.
    """

    def __init__(self, app: ASGIApp, store: AuditStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _reads_data(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        note = scope[AUDIT_KEY] = _Note()
        status: list[int] = []

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            await self._write(scope, note, status[0] if status else 500)
            raise
        await self._write(scope, note, status[0] if status else 500)

    async def _write(self, scope: Scope, note: _Note, status: int) -> None:
        identity = identity_of(scope)
        route = _route(scope)
        if identity is None or route is None:
            return
        action, path_params = route
        dialogue = note.dialogue if note.dialogue is not None else path_params.get("dialogue_id")
        await run_in_threadpool(self.store.audit, identity.name, action, dialogue, str(status))


def _reads_data(method: str, path: str) -> bool:
    """Whether a request may read or change stored data: every route that needs a token, but ``GET /model``."""
    method = "GET" if method == "HEAD" else method
    return required_role(method, path) is not None and (method, path) not in NO_STORED_DATA


def _route(scope: Scope) -> tuple[str, dict] | None:
    """The name and path parameters of the request's route: the router's choice, else matched here (or None)."""
    routed = scope.get("route")
    if routed is not None:
        return routed.name, scope.get("path_params", {})
    partial: tuple[str, dict] | None = None
    for route in scope["app"].router.routes:
        name = getattr(route, "name", None)  # a router included whole has none: its routes are reached only by routing
        match, child = route.matches(scope)
        if name is not None and match is Match.FULL:
            return name, child.get("path_params", {})
        if name is not None and match is Match.PARTIAL and partial is None:
            partial = name, child.get("path_params", {})
    return partial


class AuditEntryOut(BaseModel):
    """One row of the audit log; ``dialogue`` is the store's pseudonym, ``outcome`` an HTTP status or ``ok``."""

    time: str
    token: str | None
    action: str
    dialogue: str | None
    outcome: str


def add_audit_route(app: FastAPI) -> None:
    """Add ``GET /audit`` to ``app``, as a route of its own so even a refused request names it (:func:`_route`)."""
    app.add_api_route("/audit", audit_log, methods=["GET"], response_model=list[AuditEntryOut])


def audit_log(
    request: Request,
    limit: Annotated[int | None, Query(ge=1, le=100_000, description="Only the last N entries.")] = None,
) -> list:
    """The audit log, oldest first: who read or changed stored data, and every token change (admin only)."""
    return [
        {"time": e.time, "token": e.token, "action": e.action, "dialogue": e.dialogue, "outcome": e.outcome}
        for e in request.app.state.store.audit_log(limit=limit)
    ]
