"""Utterances that arrive as recordings: features extracted in the service, as ``joyful extract`` made the model's.

``POST /sessions/{id}/utterances`` takes an utterance as JSON (feature vectors computed by
the caller) or as ``multipart/form-data``: fields ``speaker``, optional ``text`` and
``label``, and a recording in file ``audio`` and/or ``video``, as a browser's
``MediaRecorder`` makes them. The service extracts the features with the settings
recorded in the model's meta (``info.extra["extraction"]``) through the same function
``joyful extract`` runs per utterance, because features made any other way are numbers
the model never learnt to read. A video gives the visual features, and the audio ones
too when no separate audio file is sent (as one media file of a manifest row does).
The result is an :class:`UtteranceIn`, so the route predicts exactly as for JSON.

What is kept: the uploaded bytes live in the request's spooled upload (memory, or a
private anonymous temporary file past 1 MiB) and, while they are decoded, in one
private temporary file deleted as soon as its features are computed, error or not;
neither goes to the store, which keeps the features only, as for a JSON utterance.

Extraction runs in the thread pool, one recording at a time per process: it computes on
one BLAS thread (its values must equal those of the training data, see
:func:`joyful.extract.runner.utterance_vector`), and that limit is process-wide state
that two extractions at once would restore out of order. The first extraction warms
librosa's compiled code up (see :func:`joyful.extract.audio.warm_up`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from joyful.data.schema import MODALITY_NAMES, feature_field
from joyful.errors import DataError
from joyful.extract.audio import AudioFeatureSet, warm_up
from joyful.extract.media import MediaError, probe
from joyful.extract.predict import media_feature_set, model_extraction
from joyful.extract.runner import check_packages, utterance_vector
from joyful.extract.visual import VisualFeatureSet
from joyful.service.schemas import MAX_NAME_CHARS, MAX_TEXT_CHARS, UtteranceIn
from joyful.service.sessions import ServiceError

if TYPE_CHECKING:
    from joyful.training.checkpoint import ModelInfo

#: Where errors in request data say they come from (as :data:`joyful.service.app.SOURCE`).
SOURCE = "request"
MULTIPART = "multipart/form-data"
TEXT_FIELDS = ("speaker", "text", "label")
#: The recording fields, and the modalities each can give: its own, then (a video) its sound.
FILE_FIELDS = {"audio": ("a",), "video": ("v", "a")}
#: Form fields parsed at most: the known ones and a few a client may add; each is held in memory.
MAX_FORM_FIELDS = 16
#: A recording is read up to this point: an utterance is one turn of speech, and decoding costs
#: time in proportion (a small file can hold hours of silence). A shorter one is read whole.
MAX_RECORDING_SECONDS = 60.0
#: Filenames are the client's; shown in messages at most this long.
MAX_NAME_SHOWN = 80

_one_at_a_time = threading.Lock()
_warmed: set[str] = set()

_AUDIO_FILE = (
    "A recording of the utterance in any format FFmpeg or libsndfile reads (WebM/Opus as browsers record, WAV, ...): "
    "its audio features are extracted with the model's extraction settings."
)
_VIDEO_FILE = (
    "A video of the speaker: its visual features, and its audio features when no audio file is sent. Recordings are "
    f"read up to {MAX_RECORDING_SECONDS:g} s."
)
#: ``requestBody`` of the route in the OpenAPI schema: the route reads its body itself (see
#: :func:`utterance_body`), so FastAPI cannot describe it.
REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": UtteranceIn.model_json_schema()},
        MULTIPART: {
            "schema": {
                "type": "object",
                "required": ["speaker"],
                "properties": {
                    "speaker": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
                    "text": {"type": "string", "maxLength": MAX_TEXT_CHARS,
                             "description": "What was said, if known: encoded as for JSON."},
                    "label": {
                        "type": "string",
                        "description": "A known (gold) label: a class name; a score or the list of labels as JSON.",
                    },
                    "audio": {"type": "string", "format": "binary", "description": _AUDIO_FILE},
                    "video": {"type": "string", "format": "binary", "description": _VIDEO_FILE},
                },
            },
        },
    },
}


class UnsupportedMediaType(ServiceError):
    status = 415


async def utterance_body(request: Request) -> UtteranceIn:
    """The utterance of a request: its JSON body, or the form of a recording with the features extracted.

    A JSON body is refused as FastAPI refuses a declared body (400 malformed, 422 with the
    field's path, 415 neither JSON nor a form), so reading it here changes nothing for JSON clients.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == MULTIPART:
        return await _from_form(request)
    main, _, sub = media_type.partition("/")
    if main == "application" and (sub == "json" or sub.endswith("+json")):
        return _from_json(await request.body())
    raise UnsupportedMediaType(
        "send the utterance as JSON, with the header Content-Type: application/json, or a recording as "
        f"{MULTIPART} (fields speaker, text, label; files audio, video)"
    )


def _from_json(raw: bytes) -> UtteranceIn:
    try:
        value = json.loads(raw) if raw else None
    except json.JSONDecodeError as e:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error", "ctx": {"error": e.msg}}]
        ) from None
    except UnicodeDecodeError:
        raise ServiceError("malformed JSON: the body is not UTF-8 text") from None
    if value is None:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    return _validated(value)


def _validated(value: object) -> UtteranceIn:
    """``value`` as an :class:`UtteranceIn`; problems are reported with their path, as for a declared body."""
    try:
        return UtteranceIn.model_validate(value)
    except ValidationError as e:
        raise RequestValidationError(
            [{**p, "loc": ("body", *p["loc"])} for p in e.errors(include_url=False)]
        ) from None


async def _from_form(request: Request) -> UtteranceIn:
    async with request.form(max_files=len(FILE_FIELDS), max_fields=MAX_FORM_FIELDS) as form:
        fields = {name: value for name in TEXT_FIELDS if (value := _field(form, name))}
        if "label" in fields:
            fields["label"] = _label(fields["label"])
        body = _validated(fields)  # a bad speaker is refused before any decoding
        files = {name: upload for name in FILE_FIELDS if (upload := _file(form, name)) is not None}
        if not files:
            raise DataError(
                SOURCE, f"a {MULTIPART} utterance needs a recording, in file field audio or video "
                "(or send the utterance as JSON)", field="audio",
            )
        predictor = request.app.state.predictor
        plan, fps = _plan(predictor.info, files)
        vectors = await run_in_threadpool(_extract, plan, files, fps)
    return body.model_copy(update={feature_field(m): [float(x) for x in v] for m, v in vectors.items()})


def _field(form: FormData, name: str) -> str | None:
    """Text field ``name``, ``None`` when absent or empty (as a browser sends an empty input)."""
    value = _single(form, name)
    if isinstance(value, UploadFile):
        raise DataError(SOURCE, "send it as a text field, not a file", field=name)
    return value or None


def _file(form: FormData, name: str) -> UploadFile | None:
    value = _single(form, name)
    if isinstance(value, str):
        raise DataError(SOURCE, "send the recording as a file, not a text field", field=name)
    return value


def _single(form: FormData, name: str) -> UploadFile | str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise DataError(SOURCE, f"sent {len(values)} times; send it once", field=name)
    return values[0] if values else None


def _label(text: str) -> object:
    """A form field is text: a score or a list of labels present is read as JSON, anything else is a class name."""
    try:
        value = json.loads(text, parse_constant=_not_a_number)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, list)) and not isinstance(value, bool) else text


def _not_a_number(name: str) -> None:
    """``NaN`` and ``Infinity`` are no scores: read them as class names."""
    raise ValueError(name)


Plan = dict[str, list[tuple[str, AudioFeatureSet | VisualFeatureSet]]]
"""Per file field, the modalities to extract from it and their feature sets."""


def _plan(info: ModelInfo, files: dict[str, UploadFile]) -> tuple[Plan, float]:
    """What to extract from which file, refused before any decoding if the model cannot take it."""
    names, fps = model_extraction(info)
    plan: Plan = {}
    for field in files:
        # The audio of a video only when no audio file came: one recording per modality.
        offered = [m for m in FILE_FIELDS[field] if not (m == "a" and field == "video" and "audio" in files)]
        wanted = [m for m in offered if m in names]
        if not wanted:
            kinds = " or ".join(MODALITY_NAMES[m] for m in FILE_FIELDS[field])
            raise DataError(SOURCE, f"this model uses no {kinds} features, so it cannot take this recording",
                            field=field)
        for m in wanted:
            if names[m] is None:
                raise DataError(
                    SOURCE, f"this model's {MODALITY_NAMES[m]} features were not made by `joyful extract` (its meta "
                    "holds no extraction settings for them), so they cannot be extracted from a recording; send the "
                    f"{feature_field(m)} vector as JSON", field=field,
                )
        plan[field] = [(m, media_feature_set(info, m, names[m], "the model")) for m in wanted]
    check_packages(*{spec.name: spec for jobs in plan.values() for _, spec in jobs}.values())
    return plan, fps


def _extract(plan: Plan, files: dict[str, UploadFile], fps: float) -> dict[str, np.ndarray]:
    """The vectors of every planned modality (none for a video without a face); runs in the thread pool."""
    vectors = {}
    with _one_at_a_time:
        for field, jobs in plan.items():
            for _, spec in jobs:
                if isinstance(spec, AudioFeatureSet) and spec.name not in _warmed:
                    warm_up(spec.name)
                    _warmed.add(spec.name)
            upload = files[field]
            try:
                vectors |= _vectors(upload, jobs, fps)
            except (MediaError, ValueError) as e:  # ValueError: NaN features, as the runner reports per recording
                name = (upload.filename or "")[:MAX_NAME_SHOWN]
                raise DataError(SOURCE, f"cannot extract features from {name!r}: {e}", field=field) from None
    return vectors


def _vectors(upload: UploadFile, jobs: list[tuple[str, AudioFeatureSet | VisualFeatureSet]], fps: float) -> dict:
    """The vectors of ``jobs`` from one upload, decoded from a private copy that is removed on leaving, error or not.

    A stream the file lacks is a missing modality, as in ``joyful extract``, unless the
    file has nothing the model uses: then the recording is surely not what was meant.
    """
    with tempfile.NamedTemporaryFile(prefix="joyful-upload-") as copy:  # created with mode 0600
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, copy)
        copy.flush()
        path = Path(copy.name)
        streams = probe(path)
        held = [(m, spec) for m, spec in jobs if (streams.has_audio if m == "a" else streams.has_video)]
        if not held:
            kinds = " or ".join("audio" if m == "a" else "video" for m, _ in jobs)
            raise MediaError(f"the file holds no {kinds} stream, which is what this model would use")
        found = {m: utterance_vector(m, spec.name, path, None, MAX_RECORDING_SECONDS, fps) for m, spec in held}
    return {m: vector for m, vector in found.items() if vector is not None}
