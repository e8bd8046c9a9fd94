"""Request and response bodies of the prediction service, as pydantic models.

They exist so that the OpenAPI schema (``/docs``, ``/openapi.json``) tells a client
exactly what to send and what comes back, and so that type errors are answered with the
offending field's path before any model code runs. The request shapes are those of the
JSONL dialogue format (a dialogue is one line of a file, an utterance one element of its
``utterances``), so a client can send what it would write to a file.

A label has the form of the model's task (``GET /model`` says which): a class name
(classification), the list of labels present (multilabel: CMU-MOSEI's emotions; ``[]`` for
none), or a score in [-3, 3] (regression: sentiment). Predictions use the same form.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, FiniteFloat, StrictFloat, StrictInt, StringConstraints


def _int_as_str(value: object) -> object:
    """Integers become strings, as the JSONL reader takes them (speaker 1, dialogue 42)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# Limits of single fields, far above what a conversation needs. The body limit alone
# (--max-request-bytes) would let one utterance carry 8 MiB of text to encode, or a
# dialogue thousands of utterances to build a graph of; a field past its limit is refused
# with 422 naming it, and the OpenAPI schema shows each limit (maxLength, maxItems).
#: Characters of an utterance's text (some pages of speech).
MAX_TEXT_CHARS = 10_000
#: Numbers in one feature vector (text_features, audio, visual): wider than any extractor's output.
MAX_VECTOR_WIDTH = 100_000
#: Utterances of one posted dialogue, as many as a streaming session may hold.
MAX_UTTERANCES = 1000
#: Speakers a session may declare.
MAX_SPEAKERS = 100
#: Labels in a multilabel label (labels present).
MAX_LABELS = 1000
#: Characters of an id, a speaker's or annotator's name, or a label.
MAX_NAME_CHARS = 200

Vector = Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_VECTOR_WIDTH)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
# The constraints come before the validator so that they apply to the string it makes.
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS), BeforeValidator(_int_as_str)]
Id = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[^\x00-\x1f/]+$"),
    BeforeValidator(_int_as_str), Field(description="No '/' or control characters."),
]
# Strict numbers, so that true is not a score of 1, and integers kept: the task reads them
# (a class name "3" for a classification model, a score for a regression model).
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS)]
LabelIn = Annotated[
    LabelName | Annotated[list[LabelName], Field(max_length=MAX_LABELS)] | StrictInt
    | Annotated[StrictFloat, Field(allow_inf_nan=False)],
    Field(description="A class name, the list of labels present ([] for none), or a score in [-3, 3], as the model's task."),
]
Consent = Annotated[
    Literal["none", "store", "train"],
    Field(description=(
        "What the service may keep. none: labels are returned and nothing is kept once the session ends (a POST "
        "/predict writes nothing); store: speakers (pseudonymised), features, gold labels, predictions and corrections "
        "are kept (texts only with --keep-text); train: as store, and finetune --corrections may also learn from it."
    )),
]
LabelOut = Annotated[
    str | list[str] | float,
    Field(description="A class name, the list of labels present (multilabel), or the score (regression)."),
]


class UtteranceIn(BaseModel):
    """One utterance, as in the JSONL dialogue format; a feature field left out (or null) marks that modality missing."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"speaker": "F", "text": "Excuse me.", "audio": [0.1, -0.3]}]},
    )
    speaker: Name
    text: Text | None = Field(None, description="What was said; encoded by the model's text encoder when text_features is absent.")
    label: LabelIn | None = Field(None, description="A known (gold) label, stored with the dialogue; not used to predict.")
    text_features: Vector | None = None
    audio: Vector | None = None
    visual: Vector | None = None


class DialogueIn(BaseModel):
    """One dialogue, exactly one line of the JSONL dialogue format."""

    model_config = ConfigDict(extra="ignore")
    dialogue: Id
    utterances: Annotated[list[UtteranceIn], Field(min_length=1, max_length=MAX_UTTERANCES)]
    consent: Consent = "none"


class SessionIn(BaseModel):
    """A new streaming session; both fields are optional."""

    model_config = ConfigDict(extra="forbid")
    dialogue: Id | None = Field(None, description="Dialogue id to store the session under (default: a new random id).")
    speakers: Annotated[list[Name], Field(max_length=MAX_SPEAKERS)] | None = Field(
        None, description="If given, every utterance's speaker must be one of these.",
    )
    consent: Consent = "none"


class CorrectionIn(BaseModel):
    """A human's label for one utterance of a stored dialogue."""

    model_config = ConfigDict(extra="forbid")
    dialogue: Id
    index: Annotated[
        int, Field(ge=0, lt=MAX_UTTERANCES, description="The utterance's position in the dialogue (as in predictions)."),
    ]
    label: LabelIn
    annotator: Name | None = None


class ContextInfluence(BaseModel):
    index: int
    speaker: str
    influence: float = Field(description="Drop in the label's support when this utterance is left out.")


class Explanation(BaseModel):
    """Why the model chose a label: leave-one-modality-out and leave-one-utterance-out drops in its support.

    The support is the label's probability (classification), the mean confidence in the
    decision over the labels (multilabel: p for one present, 1 - p for one absent), or the
    score itself (regression: a positive drop means the part raised the score).
    """

    model_config = ConfigDict(extra="allow")
    modalities: dict[str, float] = Field(description="Per modality (text, audio, visual): drop in the support without it.")
    context: list[ContextInfluence] = Field(description="The context utterances whose removal changes the support most.")


class PredictionOut(BaseModel):
    index: int = Field(description="The utterance's position in the dialogue as sent.")
    speaker: str
    label: LabelOut
    probabilities: dict[str, float] | None = Field(
        None, description="Per class (summing to 1) or per label (each on its own); none for a score.",
    )
    confidence: float | None = Field(
        None, description="How sure the model is of the decision, in [0, 1] (the class's probability; multilabel: the "
        "mean over labels of p or 1 - p); none for a score.",
    )
    uncertain: bool | None = Field(
        None, description="Confidence below the threshold (the request's or the service's); none without a threshold.",
    )
    explanation: Explanation | None = None


class PredictOut(BaseModel):
    dialogue: str
    stored: bool = Field(description="Whether the dialogue (speakers, features, labels) was saved for corrections.")
    stored_as: str | None = Field(
        None, description="The id it is stored under (its pseudonym, unless the store keeps ids as given); use it or "
        "the id sent to correct or delete it.",
    )
    utterances: list[PredictionOut]


class SessionOut(BaseModel):
    session: str = Field(description="Use in /sessions/{session}/utterances; keep it private, it gives access to the session.")
    dialogue: str = Field(description="The id the dialogue is stored under: its pseudonym, unless the store keeps ids as given.")
    speakers: list[str] | None = Field(description="The speakers declared at the start, as stored (pseudonyms).")
    consent: str = Field(description="The session's consent scope: none, store or train.")
    causal: bool = Field(description="Whether labels are final when given (a causal model never revises them).")
    utterances: list[PredictionOut]


class UtteranceOut(PredictionOut):
    session: str
    dialogue: str


class CorrectionOut(BaseModel):
    dialogue: str
    index: int
    label: LabelOut
    annotator: str | None
    created: str = Field(description="ISO-8601 time in UTC.")


class ReviewItemOut(BaseModel):
    """An uncertain prediction waiting for a person; answer it with POST /corrections (dialogue, index)."""

    dialogue: str
    index: int
    speaker: str
    text: str | None = Field(description="What was said, when the service keeps texts (--keep-text).")
    label: LabelOut
    confidence: float | None
    probabilities: dict[str, float] | None


class StatisticOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    value: float | dict[str, float] | None = Field(description="On the live window (a share per class for labels).")
    reference: float | dict[str, float] | None = Field(description="On the model's validation data.")
    psi: float | None = Field(description="Population stability index of live against reference; none until enough data.")


class MonitorOut(BaseModel):
    alert: bool = Field(description="Some statistic's PSI is past the threshold, over a window of at least min_utterances.")
    shifted: list[str] = Field(description="The statistics past the threshold.")
    n: int = Field(description="Predictions in the window.")
    threshold: float
    label_threshold: float = Field(description="The higher threshold of the predicted label mix (see joyful.monitoring).")
    min_utterances: int
    statistics: dict[str, StatisticOut]


class DeletedOut(BaseModel):
    dialogue: str
    removed: dict[str, int] = Field(description="What was removed: live sessions, and rows per table of the store.")


class ModelOut(BaseModel):
    task: str = Field(description="classification (one class), multilabel (the labels present) or regression (a score).")
    labels: list[str] = Field(description="The classes, or the labels of a multilabel model; ['sentiment'] for a score.")
    label_set: str
    thresholds: list[float] | None = Field(
        None, description="Multilabel: the probability from which each label (in `labels` order) counts as present.",
    )
    score_range: list[float] | None = Field(None, description="Regression: the lowest and highest score.")
    modalities: list[str] = Field(description="Modality keys the model uses: t (text), a (audio), v (visual).")
    recordings: list[str] = Field(
        [], description="Modality keys (a, v) the service can extract from uploaded recordings (the model was trained "
        "on `joyful extract` output); the others must come as vectors.",
    )
    widths: dict[str, int] = Field(description="Expected vector width per request field (text_features, audio, visual).")
    causal: bool
    text_encoder: str | None = Field(description="What encodes texts sent without text_features (None: no text modality).")
    text_context: int
    n_speakers: int
    version: str = Field(description="Version of joyful serving the model.")
    trained_with: str | None = Field(description="Version of joyful that trained the model.")


class HealthOut(BaseModel):
    status: str
    sessions: int
    max_sessions: int


class ErrorOut(BaseModel):
    detail: str = Field(description="What is wrong, on one line, naming the field and utterance where known.")
    errors: list[dict] | None = Field(None, description="For a body that does not fit the schema: each problem found.")
