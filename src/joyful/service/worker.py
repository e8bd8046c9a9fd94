"""The app of one worker process when ``joyful serve --workers N`` runs several.

uvicorn starts each worker in a fresh process and builds its app from an import string,
so the options of ``joyful serve`` reach the workers through one environment variable
(:data:`SETTINGS_VARIABLE`, JSON) that the command sets before they start. Every worker
loads the model itself and opens the same store; sessions live in the store (see
:mod:`joyful.service.sessions`), so any worker can take any request.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI

from joyful.errors import JoyfulError

SETTINGS_VARIABLE = "JOYFUL_SERVE_SETTINGS"


def settings_for_workers(
    *, model: str, device: str, threads: int, require_tokens: bool, options: dict[str, Any]
) -> str:
    """The value of :data:`SETTINGS_VARIABLE` for :func:`app`: the model, :func:`create_app`'s options, and
    whether requests need a token even when the store has none (a public address; see :mod:`joyful.service.auth`)."""
    return json.dumps(
        {"model": model, "device": device, "threads": threads, "require_tokens": require_tokens, "options": options}
    )


def app() -> FastAPI:
    """The service as configured by ``joyful serve`` in :data:`SETTINGS_VARIABLE` (a uvicorn app factory)."""
    import torch

    from joyful.api import Joyful
    from joyful.service.app import create_app

    raw = os.environ.get(SETTINGS_VARIABLE)
    if raw is None:
        raise JoyfulError(f"{SETTINGS_VARIABLE} is not set: start workers with `joyful serve --workers N`")
    settings = json.loads(raw)
    torch.set_num_threads(int(settings["threads"]))
    service = create_app(Joyful.load(settings["model"], device=settings["device"]), **settings["options"])
    service.state.auth.require_tokens = bool(settings["require_tokens"])
    return service
