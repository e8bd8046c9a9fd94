"""The live prediction service (``joyful serve``): a FastAPI app, its streaming sessions and web page.

Needs the ``serve`` extra (FastAPI, uvicorn). :func:`joyful.service.app.create_app`
builds the app; :mod:`joyful.service.commands` holds the ``serve`` and ``correct``
commands. The defaults live here, where the command line can read them without
importing FastAPI or PyTorch.
"""

from pathlib import Path

#: The store is created in the working directory unless ``--store`` says otherwise.
DEFAULT_STORE = Path("joyful-store.sqlite")
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_SESSIONS = 64
