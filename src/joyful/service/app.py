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
- ``DELETE /dialogues/{id}``: forget a dialogue everywhere (session, store, corrections);
- ``GET /``: a web page to try all of the above.

Labels, predictions and corrections take the form of the model's task (``GET /model``
says which): a class name with class probabilities; the list of labels present with a
probability per label (multilabel); or a score in [-3, 3] without probabilities
(regression). See :mod:`joyful.service.schemas`.

The model runs under a lock: a forward pass already uses the cores, and a shared module
must not see two requests at once. Route functions are plain ``def``, so FastAPI runs
them in its thread pool and a long prediction never blocks ``/health``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from joyful import __version__
from joyful.api import Joyful
from joyful.corrections import CorrectionStore, ServedPrediction, checked_label
from joyful.data.context_text import contextual_texts
from joyful.data.label_forms import SENTIMENT_RANGE, Label
from joyful.data.schema import Dialogue, DialogueSet, feature_field, missing_matrix, missing_rows
from joyful.data.text_encoder import TextEncoder
from joyful.data.text_features import ENCODER, ensure_text_features
from joyful.errors import DataError, JoyfulError
from joyful.io.jsonl import dialogue_from_record
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
from joyful.service.sessions import Conflict, NotFound, ServiceError, Session, SessionRegistry

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

    def encode_texts(self, d: Dialogue, rows: Sequence[int]) -> None:
        """Put the text vectors of utterances ``rows`` into ``d.features["t"]`` (NaN where nothing was said).

        Each text is encoded with its previous turns when the model was trained so
        (``text_context``), as :func:`joyful.data.text_features.ensure_text_features` does.
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
        strings = contextual_texts(d, self.clf.config.text_context)
        with self._lock:
            d.features["t"][said] = self.encoder().encode([strings[i] for i in said])

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
) -> FastAPI:
    """The service for ``model`` (a model directory or a loaded :class:`Joyful`), storing into ``store_path``.

    ``keep_text`` also stores utterance texts (otherwise only speakers, feature vectors and
    labels are kept). ``abstain_below`` or ``target_accuracy`` set the default confidence
    threshold under which a prediction is uncertain (a request may give its own);
    ``drift_threshold`` is the PSI past which ``/monitor`` alerts, over the last
    ``drift_window`` predictions. Raises :class:`JoyfulError` for a model or store that
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
    predictor = Predictor(model if isinstance(model, Joyful) else Joyful.load(model))
    if abstain_below is not None and not 0 <= abstain_below <= 1:
        raise JoyfulError(f"--abstain-below is a confidence in [0, 1], not {abstain_below}")
    try:
        predictor.default_threshold = predictor.threshold(abstain_below, target_accuracy)
    except DataError as e:
        raise JoyfulError(e.problem.replace("abstain_below", "--abstain-below")) from None
    store = CorrectionStore(store_path)
    sessions = SessionRegistry(max_sessions, idle_seconds=session_idle_seconds)
    page = resources.files("joyful.service").joinpath("static", "index.html").read_text(encoding="utf-8")
    reference: list[Reference | None] = [None]  # built on the first /monitor: a model without it still serves

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="joyful",
        version=__version__,
        summary="Emotion recognition in conversation: predict, stream, explain, correct.",
        lifespan=lifespan,
    )
    app.state.predictor, app.state.store, app.state.sessions = predictor, store, sessions
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    app.mount("/static", StaticFiles(packages=[("joyful.service", "static")]), name="static")
    _add_error_handlers(app)
    errors = {code: {"model": ErrorOut} for code in (400, 404, 409, 413, 422, 429)}

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
        body: DialogueIn,
        explain: Annotated[bool, Query(description="Add an explanation to every utterance.")] = False,
        store_dialogue: Annotated[bool, Query(alias="store", description="Save the dialogue so it can be corrected.")] = True,
        abstain_below: AbstainBelow = None,
        target_accuracy: TargetAccuracy = None,
    ) -> dict:
        """Label every utterance of one dialogue, given as one line of the JSONL dialogue format."""
        threshold = predictor.threshold(abstain_below, target_accuracy)
        d = predictor.only_model_modalities(
            dialogue_from_record(body.model_dump(exclude_none=True), SOURCE, task=predictor.task)
        )
        d.validate(SOURCE)
        if store_dialogue and sessions.has_dialogue(d.id):
            raise Conflict(f"dialogue {d.id!r} has a live session; send it under another id")
        predictor.add_text_features(d)
        rows = predictor.predict(d, explain=explain, threshold=threshold)
        if store_dialogue:
            store.save_dialogue(d, keep_text=keep_text)
            store.save_predictions(predictor.served(d, rows, keep_text=keep_text), replace_dialogue=True)
        return {"dialogue": d.id, "stored": store_dialogue, "utterances": [_prediction(r) for r in rows]}

    # ------------------------------------------------------------------ streaming
    @app.post("/sessions", response_model=SessionOut, status_code=201, responses=errors)
    def open_session(body: SessionIn | None = None) -> dict:
        """Start streaming a dialogue; answers the session id to send utterances to."""
        body = body or SessionIn()
        if body.dialogue is not None and (store.dialogue(body.dialogue) is not None or store.corrections(body.dialogue)):
            raise Conflict(f"dialogue {body.dialogue!r} is already stored; choose another id or delete it first")
        return _session_out(sessions.open(body.dialogue, body.speakers), predictor.causal)

    @app.get("/sessions/{session_id}", response_model=SessionOut, responses=errors)
    def get_session(session_id: str) -> dict:
        """The session's utterances so far, each with the label it was given when it arrived."""
        session = sessions.get(session_id)
        with session.lock:
            return _session_out(session, predictor.causal)

    @app.delete("/sessions/{session_id}", response_model=SessionOut, responses=errors)
    def end_session(session_id: str) -> dict:
        """End a session (free its slot); its stored dialogue stays for corrections."""
        return _session_out(sessions.close(session_id), predictor.causal)

    @app.post("/sessions/{session_id}/utterances", response_model=UtteranceOut, responses=errors)
    def add_utterance(
        session_id: str,
        body: UtteranceIn,
        explain: Annotated[bool, Query(description="Explain the prediction.")] = True,
        abstain_below: AbstainBelow = None,
        target_accuracy: TargetAccuracy = None,
    ) -> dict:
        """Add one utterance (JSONL utterance shape) and label it from the dialogue so far."""
        session = sessions.get(session_id)
        with session.lock:
            if session.closed:
                raise NotFound(f"session {session_id!r} has ended")
            sessions.check_room(session)
            n = len(session)
            utterance = _parse_utterance(body, session, n, predictor)
            candidate = session.extended(utterance, predictor.widths)
            text_vectors = _text_vectors_from(utterance, session, n, predictor)
            if text_vectors == "service":
                predictor.encode_texts(candidate, [n])
            threshold = predictor.threshold(abstain_below, target_accuracy)
            row = predictor.predict(dataclasses.replace(candidate, labels=None), explain=explain, threshold=threshold)[-1]
            store.save_dialogue(candidate, keep_text=keep_text)
            store.save_predictions(predictor.served(candidate, [row], keep_text=keep_text))
            session.commit(candidate, row, text_vectors)
            return {**_prediction(row), "session": session.id, "dialogue": candidate.id}

    # ------------------------------------------------------------------ corrections and deletion
    @app.post("/corrections", response_model=CorrectionOut, status_code=201, responses=errors)
    def add_correction(body: CorrectionIn) -> dict:
        """Record a human's label for one utterance of a stored dialogue (for `joyful finetune`), in the task's form."""
        label = predictor.checked_label(body.label, body.dialogue, body.index)
        if store.dialogue(body.dialogue) is None:
            raise NotFound(f"dialogue {body.dialogue!r} is not stored (deleted, or predicted with store=false)")
        c = store.add_correction(
            body.dialogue, body.index, label, body.annotator, labels=predictor.labels, task=predictor.task
        )
        return dataclasses.asdict(c)

    @app.get("/review", response_model=list[ReviewItemOut])
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

    @app.get("/corrections", response_model=list[CorrectionOut])
    def list_corrections(dialogue: Annotated[str | None, Query(description="Only this dialogue's.")] = None) -> list:
        """Corrections, oldest first."""
        return [dataclasses.asdict(c) for c in store.corrections(dialogue)]

    @app.delete("/dialogues/{dialogue_id}", response_model=DeletedOut, responses=errors)
    def delete_dialogue(dialogue_id: str) -> dict:
        """Forget a dialogue: its live session, stored speakers, features, texts and labels, and its corrections."""
        removed = {"sessions": sessions.close_dialogue(dialogue_id), **store.delete_dialogue(dialogue_id)}
        if not any(removed.values()):
            raise NotFound(f"nothing is known of dialogue {dialogue_id!r}")
        return {"dialogue": dialogue_id, "removed": removed}

    # ------------------------------------------------------------------ page
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"})

    return app


def _parse_utterance(body: UtteranceIn, session: Session, n: int, predictor: Predictor) -> Dialogue:
    """The utterance as a one-utterance dialogue, checked; every error names utterance ``n`` of the session."""
    did = session.dialogue.id
    try:
        record = {"dialogue": did, "utterances": [body.model_dump(exclude_none=True)]}
        u = predictor.only_model_modalities(dialogue_from_record(record, SOURCE, task=predictor.task))
        u.validate(SOURCE)
        if u.labels is not None:
            u.labels = [predictor.checked_label(u.labels[0], did, 0, gold=True)]
    except DataError as e:
        raise DataError(SOURCE, e.problem, dialogue=did, field=e.field, index=n) from None
    speaker = u.speakers[0]
    if session.declared_speakers is not None and speaker not in session.declared_speakers:
        raise DataError(
            SOURCE, f"speaker {speaker!r} is not one of the session's speakers ({', '.join(session.declared_speakers)})",
            dialogue=did, field="speaker", index=n,
        )
    return u


def _text_vectors_from(utterance: Dialogue, session: Session, n: int, predictor: Predictor) -> str | None:
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
            dialogue=session.dialogue.id, field="text_features", index=n,
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


def _session_out(session: Session, causal: bool) -> dict:
    return {
        "session": session.id,
        "dialogue": session.dialogue.id,
        "speakers": session.declared_speakers,
        "causal": causal,
        "utterances": [_prediction(r) for r in session.predictions],
    }


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal is ``{"detail": "<one readable line>"}`` with a status that says whose fault it is."""

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


def _path(loc: Sequence[Any]) -> str:
    """``("body", "utterances", 2, "audio")`` → ``utterances[2].audio``."""
    parts = list(loc[1:]) if loc and loc[0] == "body" else [f"{loc[0]} parameter", *loc[1:]] if loc else []
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"
