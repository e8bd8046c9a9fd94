"""The prediction service: a FastAPI app around one loaded Joyful model and a correction store.

Endpoints (all JSON; the OpenAPI schema is at ``/openapi.json``):

- ``GET /health``, ``GET /model``: liveness, and what the model expects and predicts;
- ``POST /predict``: label every utterance of one dialogue (a line of the JSONL format);
- ``POST /sessions``, ``POST /sessions/{id}/utterances``, ``GET /sessions/{id}``,
  ``DELETE /sessions/{id}``: stream a dialogue one utterance at a time, each labelled
  from its past only (final labels with a ``--causal`` model);
- ``POST /corrections``, ``GET /corrections``: human corrections, kept for fine-tuning;
- ``GET /review``: the review queue, uncertain predictions no one has corrected yet;
- ``GET /monitor``: drift of the live stream against the model's validation data;
- ``GET /export``: the stored dialogues as JSONL; ``GET /audit``: who did what;
- ``DELETE /dialogues/{id}``: forget a dialogue everywhere (session, store, corrections);
- ``GET /``: a web page to try all of the above.

Who may call what is decided by API tokens and their roles (:mod:`joyful.service.auth`),
and every request that reads or changes stored data is audited
(:mod:`joyful.service.audit`). What is kept of a dialogue is what its consent scope
allows (``none``, ``store``, ``train``; see :mod:`joyful.corrections`), with ids and
speakers pseudonymised; sessions live in the store, so they survive a restart and are
shared by several workers.

Labels, predictions and corrections take the form of the model's task (``GET /model``
says which): a class name with class probabilities; the list of labels present with a
probability per label (multilabel); or a score in [-3, 3] without probabilities
(regression). See :mod:`joyful.service.schemas`.

The model runs under a lock: a forward pass already uses the cores, and a shared module
must not see two requests at once. Route functions are plain ``def``, so FastAPI runs
them in its thread pool and a long prediction never blocks ``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from joyful import __version__
from joyful.api import Joyful
from joyful.corrections import CorrectionStore, ServedPrediction, SessionState, checked_label
from joyful.data.context_text import contextual_texts, turn, with_context
from joyful.data.label_forms import SENTIMENT_RANGE, Label
from joyful.data.schema import Dialogue, DialogueSet, feature_field, missing_matrix, missing_rows
from joyful.data.text_encoder import TextEncoder
from joyful.data.text_features import ENCODER, ensure_text_features
from joyful.errors import DataError, JoyfulError
from joyful.extract.predict import model_extraction
from joyful.io.jsonl import dialogue_from_record, dialogue_record
from joyful.monitoring import DEFAULT_THRESHOLD, DEFAULT_WINDOW, Reference, drift_report
from joyful.service import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_SESSIONS, DEFAULT_STORE
from joyful.service.schemas import (
    CorrectionIn,
    CorrectionOut,
    DeletedOut,
    DialogueIn,
    ErrorOut,
    HealthOut,
    ModelOut,
    MonitorOut,
    PredictOut,
    ReviewItemOut,
    SessionIn,
    SessionOut,
    UtteranceIn,
    UtteranceOut,
)
from joyful.service.audit import AuditLog, add_audit_route, note_dialogue
from joyful.service.auth import Authentication, Authenticator, document_tokens
from joyful.service.recordings import REQUEST_BODY as UTTERANCE_REQUEST_BODY
from joyful.service.recordings import utterance_body
from joyful.service.sessions import Conflict, NotFound, ServiceError, SessionRegistry, extended

#: Longest dialogue ``POST /predict`` explains: each explanation re-runs the model on the dialogue once per
#: utterance (and modality) left out, so the cost grows with the square of the length (IEMOCAP's longest is 110).
MAX_EXPLAINED_UTTERANCES = 128
#: How often idle sessions are ended and the retention applied.
HOUSEKEEPING_SECONDS = 3600.0
#: Where errors in request data say they come from (as a file name would in the CLI).
SOURCE = "request"
#: The page loads nothing from elsewhere, and the browser is told to enforce that.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class BodySizeLimit:
    """Answer 413 to any request whose body is larger than ``max_bytes``, before it is parsed.

    The declared ``Content-Length`` is checked first; a body without one (chunked) is
    counted as it arrives and buffered up to the limit, so not declaring a length does
    not get a client round the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send, declared)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send, None)
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, declared: str | None) -> None:
        if declared is not None and not declared.isdigit():
            status, detail = 400, f"invalid Content-Length {declared!r}"
        else:
            status, detail = 413, f"request body larger than the limit of {self.max_bytes} bytes (--max-request-bytes)"
        await JSONResponse({"detail": detail}, status_code=status)({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class Predictor:
    """The model, what it expects (labels, modalities, widths), and text encoding that leaves nothing on disk.

    The text encoder runs without its on-disk cache (``persistent_cache=False``): that
    cache keeps a vector per text hash, a trace of a dialogue that a delete request could
    not find again. Texts are encoded here, once per utterance, rather than inside
    :meth:`Joyful.predict`, so a streaming session does not re-encode its whole prefix at
    every utterance, and the vectors can be stored for fine-tuning.
    """

    def __init__(self, clf: Joyful) -> None:
        if clf.model is None or clf.info is None:
            raise JoyfulError("the service needs a trained model: call fit() or Joyful.load() first")
        clf.text_cache = False
        self.clf = clf
        self.info = clf.info
        self.task = self.info.task
        self.labels = list(self.info.label_set.labels)
        self.thresholds = clf.thresholds
        self.widths = {m: int(self.info.widths[m]) for m in clf.config.modality_order}
        self.text_encoder = str(clf.text_encoder_dir or clf.config.text_encoder) if "t" in self.widths else None
        self._lock = threading.Lock()
        self._encoder: TextEncoder | None = None
        self.default_threshold: float | None = None
        """Under this confidence a prediction is uncertain, unless a request says otherwise."""

    @property
    def causal(self) -> bool:
        return bool(self.clf.config.causal)

    def checked_label(self, label: object, dialogue: str, index: int, *, gold: bool = False) -> Label:
        """``label`` in the task's form, checked against the model's labels (see :func:`checked_label`).

        A ``gold`` label sent with an utterance may also be one the label set drops (its
        utterance is then left out of the graph, as in training); a correction may not.
        """
        labels = [*self.labels, *self.info.label_set.dropped] if gold else self.labels
        return checked_label(label, self.task, labels, SOURCE, dialogue, index)

    def only_model_modalities(self, d: Dialogue) -> Dialogue:
        """Drop modalities the model does not use; refuse vectors of the wrong width, naming the utterance."""
        d.features = {m: x for m, x in d.features.items() if m in self.widths}
        for m, x in d.features.items():
            if x.shape[1] != self.widths[m]:
                present = np.flatnonzero(~missing_rows(x))
                raise DataError(
                    SOURCE, f"vector has width {x.shape[1]}, the model expects {self.widths[m]}",
                    dialogue=d.id, field=feature_field(m), index=int(present[0]) if present.size else None,
                )
        return d

    @property
    def text_origin(self) -> str:
        """What text vectors the model learnt from (see :mod:`joyful.data.text_features`)."""
        return self.info.extra.get("text_features") or ENCODER

    def encoder(self) -> TextEncoder:
        """The text encoder, loaded on first use; call with ``_lock`` held."""
        if self._encoder is None:
            self._encoder = TextEncoder(
                self.text_encoder, show_progress=False, persistent_cache=False, device=str(self.clf.device)
            )
        return self._encoder

    def add_text_features(self, d: Dialogue) -> None:
        """Encode the texts of a whole dialogue that come without vectors, by the rule files follow."""
        if self.text_encoder is not None:
            with self._lock:
                ensure_text_features(
                    DialogueSet([d], SOURCE), self.encoder(), self.clf.config.text_context, origin=self.text_origin
                )

    def encode_texts(self, d: Dialogue, rows: Sequence[int], strings: Sequence[str] | None = None) -> None:
        """Put the text vectors of utterances ``rows`` into ``d.features["t"]`` (NaN where nothing was said).

        Each text is encoded with its previous turns when the model was trained so
        (``text_context``), as :func:`joyful.data.text_features.ensure_text_features` does;
        a streaming session gives those strings itself (``strings``, one per row), because
        its stored dialogue holds speakers only as pseudonyms, and the encoder must read
        the names it read in training.
        """
        if "t" not in d.features:
            d.features["t"] = missing_matrix(len(d), self.widths["t"])
        said = [i for i in rows if d.texts[i].strip()]
        if not said:
            return
        if self.text_origin != ENCODER:
            raise DataError(
                SOURCE, "has text but no text_features, and this model was trained on text_features that are not "
                "its text encoder's, so it cannot encode texts; send text_features", dialogue=d.id,
                field="text_features", index=said[0],
            )
        if strings is None:
            text_of = dict(enumerate(contextual_texts(d, self.clf.config.text_context)))
        else:
            text_of = dict(zip(rows, strings, strict=True))
        with self._lock:
            d.features["t"][said] = self.encoder().encode([text_of[i] for i in said])

    def threshold(self, abstain_below: float | None, target_accuracy: float | None) -> float | None:
        """The confidence threshold of a request: its own option if it gives one, else the service's default.

        An option the model cannot honour (a regression model has no confidence; a model
        saved without validation outputs cannot choose P; an unreachable accuracy) is
        the request's fault: a :class:`DataError` (422) naming the option.
        """
        if abstain_below is not None and target_accuracy is not None:
            raise DataError(SOURCE, "give abstain_below or target_accuracy, not both", field="abstain_below")
        if abstain_below is None and target_accuracy is None:
            return self.default_threshold
        field = "abstain_below" if target_accuracy is None else "target_accuracy"
        if self.task == "regression":
            raise DataError(SOURCE, "a regression model's score has no confidence to abstain on", field=field)
        if abstain_below is not None:
            return abstain_below
        try:
            return self.clf.abstain_threshold(target_accuracy)
        except JoyfulError as e:
            raise DataError(SOURCE, str(e), field=field) from None

    def predict(self, d: Dialogue, *, explain: bool, threshold: float | None = None) -> list[dict]:
        """The model's rows for every utterance of ``d`` (see :meth:`Joyful.predict`)."""
        data = DialogueSet([d], SOURCE)
        with self._lock:
            return self.clf.predict(data, explain=explain, abstain_below=threshold)

    def served(self, d: Dialogue, rows: Sequence[dict], *, keep_text: bool) -> list[ServedPrediction]:
        """``rows`` predicted for ``d`` as the store keeps them: with which modalities each utterance lacked."""
        where = {pos: i for i, pos in enumerate(d.positions())}
        out = []
        for r in rows:
            i = where[r["index"]]
            missing = {
                m: bool(missing_rows(d.features[m][i : i + 1])[0]) if m in d.features else True for m in self.widths
            }
            text = d.texts[i] if keep_text and d.texts is not None else None
            out.append(ServedPrediction(
                d.id, r["index"], r["speaker"], _label(r["label"]), r.get("confidence"), r.get("uncertain"),
                r.get("probabilities"), missing, text,
            ))
        return out


def create_app(
    model: str | os.PathLike | Joyful,
    store_path: str | os.PathLike = DEFAULT_STORE,
    *,
    keep_text: bool = False,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    session_idle_seconds: float = 3600.0,
    abstain_below: float | None = None,
    target_accuracy: float | None = None,
    drift_threshold: float = DEFAULT_THRESHOLD,
    drift_window: int = DEFAULT_WINDOW,
    retention_days: float | None = None,
    pseudonymise: bool | None = None,
) -> FastAPI:
    """The service for ``model`` (a model directory or a loaded :class:`Joyful`), storing into ``store_path``.

    ``keep_text`` also stores utterance texts (otherwise only speakers, feature vectors and
    labels are kept). ``abstain_below`` or ``target_accuracy`` set the default confidence
    threshold under which a prediction is uncertain (a request may give its own);
    ``drift_threshold`` is the PSI past which ``/monitor`` alerts, over the last
    ``drift_window`` predictions. ``retention_days`` erases stored dialogues (and their
    corrections) first stored longer ago, at start-up and every hour; ``pseudonymise``
    is the store's setting for a new store (``None``: pseudonymise; see
    :class:`CorrectionStore`). ``store_path`` may also be a ``postgresql://`` URL, for
    several workers or hosts. Raises :class:`JoyfulError` for a model or store that
    cannot be opened, or options that do not fit the model.
    """
    if max_request_bytes < 1:
        raise JoyfulError(f"--max-request-bytes must be at least 1, not {max_request_bytes}")
    if max_sessions < 1:
        raise JoyfulError(f"--max-sessions must be at least 1, not {max_sessions}")
    if drift_window < 1:
        raise JoyfulError(f"--drift-window must be at least 1, not {drift_window}")
    if not drift_threshold > 0:
        raise JoyfulError(f"--drift-threshold must be positive, not {drift_threshold}")
    if retention_days is not None and not retention_days > 0:
        raise JoyfulError(f"--retention-days must be positive, not {retention_days}")
    predictor = Predictor(model if isinstance(model, Joyful) else Joyful.load(model))
    if abstain_below is not None and not 0 <= abstain_below <= 1:
        raise JoyfulError(f"--abstain-below is a confidence in [0, 1], not {abstain_below}")
    try:
        predictor.default_threshold = predictor.threshold(abstain_below, target_accuracy)
    except DataError as e:
        raise JoyfulError(e.problem.replace("abstain_below", "--abstain-below")) from None
    store = CorrectionStore(store_path, pseudonymise=pseudonymise)
    sessions = SessionRegistry(store, max_sessions, idle_seconds=session_idle_seconds)
    page = resources.files("joyful.service").joinpath("static", "index.html").read_text(encoding="utf-8")
    reference: list[Reference | None] = [None]  # built on the first /monitor: a model without it still serves

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        keeper = asyncio.create_task(_housekeeping(sessions, retention_days))
        yield
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        store.close()

    app = FastAPI(
        title="joyful",
        version=__version__,
        summary="Emotion recognition in conversation: predict, stream, explain, correct.",
        lifespan=lifespan,
    )
    app.state.predictor, app.state.store, app.state.sessions = predictor, store, sessions
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    # Outside the body limit, so an unauthenticated body is refused unread; the audit log outside both sees 403s.
    app.state.auth = Authenticator(store)
    app.add_middleware(Authentication, authenticator=app.state.auth)
    app.add_middleware(AuditLog, store=store)
    add_audit_route(app)
    document_tokens(app)
    app.mount("/static", StaticFiles(packages=[("joyful.service", "static")]), name="static")
    _add_error_handlers(app)
    errors = {code: {"model": ErrorOut} for code in (400, 404, 409, 413, 422, 429, 503)}

    # ------------------------------------------------------------------ model
    @app.get("/health", response_model=HealthOut)
    def health() -> dict:
        """Liveness, and how many streaming sessions are open."""
        return {"status": "ok", "sessions": len(sessions), "max_sessions": sessions.max_sessions}

    @app.get("/model", response_model=ModelOut)
    def model_info() -> dict:
        """What the model predicts and what it expects in a request."""
        info = predictor.info
        return {
            "task": predictor.task,
            "labels": predictor.labels,
            "label_set": info.label_set.name,
            "thresholds": (predictor.thresholds or [0.5] * len(predictor.labels)) if predictor.task == "multilabel" else None,
            "score_range": list(SENTIMENT_RANGE) if predictor.task == "regression" else None,
            "modalities": list(predictor.widths),
            "recordings": [m for m, name in model_extraction(info)[0].items() if m in ("a", "v") and name],
            "widths": {feature_field(m): w for m, w in predictor.widths.items()},
            "causal": predictor.causal,
            "text_encoder": predictor.text_encoder,
            "text_context": predictor.clf.config.text_context,
            "n_speakers": info.n_speakers,
            "version": __version__,
            "trained_with": info.extra.get("joyful_version", __version__),  # absent: trained in this process
        }

    # ------------------------------------------------------------------ whole dialogues
    @app.post("/predict", response_model=PredictOut, responses=errors)
    def predict(
        request: Request,
        body: DialogueIn,
        explain: Annotated[bool, Query(description="Add an explanation to every utterance.")] = False,
        store_dialogue: Annotated[bool, Query(alias="store", description="false: keep nothing, whatever the consent.")] = True,
        abstain_below: AbstainBelow = None,
        target_accuracy: TargetAccuracy = None,
    ) -> dict:
        """Label every utterance of one dialogue, given as one line of the JSONL dialogue format.

        The dialogue is kept only with ``consent`` ``store`` or ``train`` (and not with
        ``store=false``): its speakers and id pseudonymised, its texts only if the service
        keeps texts.
        """
        threshold = predictor.threshold(abstain_below, target_accuracy)
        if explain and len(body.utterances) > MAX_EXPLAINED_UTTERANCES:
            raise DataError(
                SOURCE, f"explain=true is limited to dialogues of at most {MAX_EXPLAINED_UTTERANCES} utterances (an "
                f"explanation re-runs the model once per utterance left out); this one has {len(body.utterances)}: "
                "send it without explain", dialogue=body.dialogue, field="explain",
            )
        d = predictor.only_model_modalities(
            dialogue_from_record(body.model_dump(exclude_none=True, exclude={"consent"}), SOURCE, task=predictor.task)
        )
        d.validate(SOURCE)
        keep = store_dialogue and body.consent != "none"
        if keep and store.session_of_dialogue(d.id) is not None:
            raise Conflict(f"dialogue {d.id!r} has a live session; send it under another id")
        predictor.add_text_features(d)
        rows = predictor.predict(d, explain=explain, threshold=threshold)
        if keep:
            note_dialogue(request, d.id)
            store.save_dialogue(d, keep_text=keep_text, consent=body.consent)
            store.save_predictions(predictor.served(d, rows, keep_text=keep_text), replace_dialogue=True)
        return {
            "dialogue": d.id, "stored": keep, "stored_as": store.dialogue_key(d.id) if keep else None,
            "utterances": [_prediction(r) for r in rows],
        }

    # ------------------------------------------------------------------ streaming
    @app.post("/sessions", response_model=SessionOut, status_code=201, responses=errors)
    def open_session(request: Request, body: SessionIn | None = None) -> dict:
        """Start streaming a dialogue; answers the session id to send utterances to."""
        body = body or SessionIn()
        if body.dialogue is not None and (store.dialogue(body.dialogue) is not None or store.corrections(body.dialogue)):
            raise Conflict(f"dialogue {body.dialogue!r} is already stored; choose another id or delete it first")
        session_id, state = sessions.open(body.dialogue, body.speakers, body.consent)
        note_dialogue(request, state.dialogue)
        return _session_out(session_id, state, predictor.causal)

    @app.get("/sessions/{session_id}", response_model=SessionOut, responses=errors)
    def get_session(request: Request, session_id: str) -> dict:
        """The session's utterances so far, each with the label it was given when it arrived."""
        state = sessions.get(session_id)
        note_dialogue(request, state.dialogue)
        return _session_out(session_id, state, predictor.causal)

    @app.delete("/sessions/{session_id}", response_model=SessionOut, responses=errors)
    def end_session(request: Request, session_id: str) -> dict:
        """End a session (free its slot): a ``none``-scope dialogue is erased, a stored one stays for corrections."""
        with sessions.lock(session_id):
            state = sessions.close(session_id)
        note_dialogue(request, state.dialogue)
        return _session_out(session_id, state, predictor.causal)

    @app.post(
        "/sessions/{session_id}/utterances", response_model=UtteranceOut, responses={**errors, 415: {"model": ErrorOut}},
        openapi_extra={"requestBody": UTTERANCE_REQUEST_BODY},
    )
    def add_utterance(
        request: Request,
        session_id: str,
        body: Annotated[UtteranceIn, Depends(utterance_body)],
        explain: Annotated[bool, Query(description="Explain the prediction.")] = True,
        abstain_below: AbstainBelow = None,
        target_accuracy: TargetAccuracy = None,
    ) -> dict:
        """Add one utterance (JSONL utterance shape) and label it from the dialogue so far."""
        with sessions.lock(session_id):
            state = sessions.get(session_id, touch=False)  # committing the utterance marks it used
            note_dialogue(request, state.dialogue)
            sessions.check_room(state)
            n = state.length
            utterance = _parse_utterance(body, state, n, predictor, store)
            speaker = utterance.speakers[0]
            spoken = turn(speaker, utterance.texts[0] if utterance.texts else "")
            utterance.speakers = [store.speaker_key(speaker)]
            candidate = extended(sessions.dialogue(state), utterance, predictor.widths)
            text_vectors = _text_vectors_from(utterance, state, n, predictor)
            context = predictor.clf.config.text_context
            if text_vectors == "service":
                predictor.encode_texts(candidate, [n], [with_context(spoken, state.context_texts) if context else candidate.texts[n]])
            threshold = predictor.threshold(abstain_below, target_accuracy)
            row = predictor.predict(dataclasses.replace(candidate, labels=None), explain=explain, threshold=threshold)[-1]
            sessions.commit(
                dataclasses.replace(
                    state, predictions=[*state.predictions, _prediction(row)], length=n + 1,
                    text_vectors=state.text_vectors or text_vectors,
                    context_texts=[*state.context_texts, spoken][-context:] if context else [],
                ),
                candidate,
                predictor.served(candidate, [row], keep_text=keep_text) if state.consent != "none" else [],
                keep_text=keep_text, expected_length=n,
            )
            return {**_prediction(row), "speaker": speaker, "session": session_id, "dialogue": state.dialogue}

    # ------------------------------------------------------------------ corrections and deletion
    @app.post("/corrections", response_model=CorrectionOut, status_code=201, responses=errors)
    def add_correction(request: Request, body: CorrectionIn) -> dict:
        """Record a human's label for one utterance of a stored dialogue (for `joyful finetune`), in the task's form."""
        note_dialogue(request, body.dialogue)
        label = predictor.checked_label(body.label, body.dialogue, body.index)
        consent = store.dialogue_consent(body.dialogue)
        if consent is None:
            raise NotFound(f"dialogue {body.dialogue!r} is not stored (deleted, or predicted with consent none)")
        if consent == "none":
            raise Conflict(f"dialogue {body.dialogue!r} was shared with consent none: nothing of it is kept, "
                           "so it cannot be corrected")
        c = store.add_correction(
            body.dialogue, body.index, label, body.annotator, labels=predictor.labels, task=predictor.task
        )
        return dataclasses.asdict(c)

    @app.get("/review", response_model=list[ReviewItemOut], responses=errors)
    def review() -> list:
        """Uncertain predictions of stored dialogues that no correction has answered yet, oldest first."""
        return [
            {"dialogue": p.dialogue, "index": p.index, "speaker": p.speaker, "text": p.text, "label": _label_out(p.label),
             "confidence": p.confidence, "probabilities": p.probabilities}
            for p in store.review_queue()
        ]

    @app.get("/monitor", response_model=MonitorOut, responses=errors)
    def monitor() -> dict:
        """Drift of the last predictions served against the model's validation outputs (PSI per statistic)."""
        if reference[0] is None:
            try:
                reference[0] = Reference.from_validation(
                    predictor.info.extra.get("validation_outputs"), predictor.task, predictor.labels,
                    list(predictor.widths), predictor.default_threshold,
                )
            except JoyfulError as e:
                raise Conflict(str(e)) from None
        return drift_report(store.recent_predictions(drift_window), reference[0], threshold=drift_threshold)

    @app.get("/corrections", response_model=list[CorrectionOut], responses=errors)
    def list_corrections(
        request: Request, dialogue: Annotated[str | None, Query(description="Only this dialogue's.")] = None
    ) -> list:
        """Corrections, oldest first (dialogues by their pseudonyms)."""
        note_dialogue(request, dialogue)
        return [dataclasses.asdict(c) for c in store.corrections(dialogue)]

    @app.get("/export", response_class=Response, responses={**errors, 200: {"content": {"application/x-ndjson": {}},
             "description": "One JSONL dialogue per line, with its consent scope."}})
    def export(request: Request) -> Response:
        """Every stored dialogue (consent store or train) in the JSONL dialogue format, ids and speakers as pseudonyms.

        Texts appear only when the service keeps them; gold labels as sent (corrections
        are at GET /corrections). Read again by `joyful train` and every other command.
        """
        note_dialogue(request, None)
        lines = [
            json.dumps({**dialogue_record(d), "consent": store.dialogue_consent(d.id)}, ensure_ascii=False) + "\n"
            for d in map(store.dialogue, store.dialogue_ids()) if d is not None
        ]
        return Response("".join(lines), media_type="application/x-ndjson")

    @app.delete("/dialogues/{dialogue_id}", response_model=DeletedOut, responses=errors)
    def delete_dialogue(request: Request, dialogue_id: str) -> dict:
        """Forget a dialogue: its live session, stored speakers, features, texts and labels, and its corrections."""
        note_dialogue(request, dialogue_id)
        removed = {"sessions": sessions.close_dialogue(dialogue_id, erase=False), **store.delete_dialogue(dialogue_id)}
        if not any(removed.values()):
            raise NotFound(f"nothing is known of dialogue {dialogue_id!r}")
        return {"dialogue": dialogue_id, "removed": removed}

    # ------------------------------------------------------------------ page
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"})

    return app


def _parse_utterance(
    body: UtteranceIn, session: SessionState, n: int, predictor: Predictor, store: CorrectionStore
) -> Dialogue:
    """The utterance as a one-utterance dialogue, checked; every error names utterance ``n`` of the session."""
    did = session.dialogue
    try:
        record = {"dialogue": did, "utterances": [body.model_dump(exclude_none=True)]}
        u = predictor.only_model_modalities(dialogue_from_record(record, SOURCE, task=predictor.task))
        u.validate(SOURCE)
        if u.labels is not None:
            u.labels = [predictor.checked_label(u.labels[0], did, 0, gold=True)]
    except DataError as e:
        raise DataError(SOURCE, e.problem, dialogue=did, field=e.field, index=n) from None
    speaker = u.speakers[0]
    if session.declared_speakers is not None and store.speaker_key(speaker) not in session.declared_speakers:
        raise DataError(
            SOURCE, f"speaker {speaker!r} is not one of the speakers declared when the session was opened",
            dialogue=did, field="speaker", index=n,
        )
    return u


def _text_vectors_from(utterance: Dialogue, session: SessionState, n: int, predictor: Predictor) -> str | None:
    """Who gives utterance ``n`` its text vector: ``"client"``, ``"service"`` (its text is encoded) or nobody.

    A session takes text vectors from the client for every utterance or for none: a
    streamed utterance cannot be checked against the encoder the way a whole file is (see
    :mod:`joyful.data.text_features`), and two encoders' vectors must not meet in one graph.
    """
    if predictor.text_encoder is None:
        return None
    if "t" in utterance.features:
        source = "client"
    elif utterance.texts and utterance.texts[0].strip():
        source = "service"
    else:
        return None
    if session.text_vectors not in (None, source):
        earlier = "came with text_features" if session.text_vectors == "client" else "sent text without text_features"
        raise DataError(
            SOURCE, f"{'brings' if source == 'client' else 'lacks'} text_features, but earlier utterances of this "
            f"session {earlier}; send text_features with every utterance of a session, or with none",
            dialogue=session.dialogue, field="text_features", index=n,
        )
    return source


AbstainBelow = Annotated[
    float | None, Query(ge=0, le=1, description="Mark predictions with a lower confidence uncertain (default: the service's).")
]
TargetAccuracy = Annotated[
    float | None, Query(gt=0, le=1, description="Or: the threshold chosen on validation for this accuracy on the rest."),
]


def _prediction(row: dict) -> dict:
    keys = ("index", "speaker", "label", "probabilities", "confidence", "uncertain", "explanation")
    return {k: row[k] for k in keys if k in row}


def _label(label: Any) -> Label:
    """A served label as the store keeps labels (a list of emotions as a tuple)."""
    return tuple(label) if isinstance(label, list) else label


def _label_out(label: Label) -> Any:
    return list(label) if isinstance(label, tuple) else label


def _session_out(session_id: str, state: SessionState, causal: bool) -> dict:
    """A session as the client sees it: dialogue and speakers as stored (pseudonyms unless the store keeps names)."""
    return {
        "session": session_id,
        "dialogue": state.dialogue,
        "speakers": state.declared_speakers,
        "consent": state.consent,
        "causal": causal,
        "utterances": state.predictions,
    }


async def _housekeeping(sessions: SessionRegistry, retention_days: float | None) -> None:
    """At start-up and then every hour: end idle sessions (erasing ``none``-scope ones) and apply the retention.

    Run in the thread pool, since a purge ends with a VACUUM; an error is kept from
    stopping the loop (the next round tries again) but never hidden: it goes to stderr.
    """
    while True:
        try:
            await run_in_threadpool(sessions.evict_idle)
            if retention_days is not None:
                await run_in_threadpool(sessions.store.purge, retention_days)
        except JoyfulError as e:
            print(f"joyful serve: housekeeping failed: {e}", file=sys.stderr)
        await asyncio.sleep(HOUSEKEEPING_SECONDS)


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal is ``{"detail": "<one readable line>"}`` with a status that says whose fault it is.

    The OpenAPI schema documents each refusal wherever it can happen, so a client (or a
    schema-driven fuzzer) knows them for answers of the API: 400 and 413 of the body limit
    on every operation (it reads any request's body), 415 on one that takes a body, and
    422 in this shape (not FastAPI's default) on one that takes a body or parameters.
    """

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if any(p["loc"] == ("body",) for p in problems) and not (
            media_type == "application/json" or media_type.endswith("+json")
        ):
            # FastAPI parses only JSON-typed bodies, which also keeps cross-site forms out.
            return JSONResponse({"detail": "send the body as JSON, with the header Content-Type: application/json"},
                                status_code=415)
        bad_json = next((p for p in problems if p.get("type") == "json_invalid"), None)
        if bad_json is not None:
            where = bad_json["loc"][-1]
            reason = bad_json.get("ctx", {}).get("error", "JSON decode error")
            return JSONResponse({"detail": f"malformed JSON: {reason} at character {where}"}, status_code=400)
        detail = "; ".join(f"{_path(p['loc'])}: {p['msg']}" for p in problems[:5])
        if len(problems) > 5:
            detail += f"; and {len(problems) - 5} more"
        # The offending input is not echoed back: it can be the whole body, and is the client's own data anyway.
        listed = [{k: v for k, v in p.items() if k not in ("input", "url")} for p in problems]
        return JSONResponse({"detail": detail, "errors": jsonable_encoder(listed)}, status_code=422)

    @app.exception_handler(DataError)
    async def bad_data(_: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ServiceError)
    async def refused(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(JoyfulError)
    async def unavailable(_: Request, exc: JoyfulError) -> JSONResponse:
        # What remains is the server's side: e.g. a text encoder that cannot be loaded.
        return JSONResponse({"detail": str(exc)}, status_code=503)

    build = app.openapi
    refusals = {
        "400": "Malformed JSON, or an invalid Content-Length",
        "413": "The body is larger than the limit (--max-request-bytes)",
        "415": "The body is not sent as JSON (or as a form where the operation takes one)",
        "422": "A field or parameter does not fit the schema, or the data does not fit the model; the detail names it",
    }

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault("ErrorOut", ErrorOut.model_json_schema())
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
            for operation in (op for ops in schema.get("paths", {}).values() for op in ops.values()):
                responses = operation.setdefault("responses", {})
                takes = {"400", "413"} | ({"415", "422"} if "requestBody" in operation else set())
                takes |= {"422"} if operation.get("parameters") or "422" in responses else set()
                for status in sorted(takes):
                    responses.setdefault(status, {"description": refusals[status]})
                    responses[status]["content"] = error
            for default in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, replaced above
                schemas.pop(default, None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _path(loc: Sequence[Any]) -> str:
    """``("body", "utterances", 2, "audio")`` → ``utterances[2].audio``."""
    parts = list(loc[1:]) if loc and loc[0] == "body" else [f"{loc[0]} parameter", *loc[1:]] if loc else []
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"
