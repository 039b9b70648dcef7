"""The three capability protocols every backend implements, and the one error taxonomy.

A provider knows its backend and nothing else: no retries, no fallback, no caching.
Those are policies (see ``policies/``). Audio crosses this boundary as 16-bit mono PCM
so that format handling lives in one place (``gateway/audio.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

Capability = Literal["chat", "asr", "tts", "embedding", "rerank"]
#: The client-facing capabilities (listed by /v1/models, admin views).
CAPABILITIES: tuple[Capability, ...] = ("chat", "asr", "tts")
#: Capabilities the knowledge base uses internally (gateway/knowledge/): routed like the others.
KNOWLEDGE_CAPABILITIES: tuple[Capability, ...] = ("embedding", "rerank")


# --------------------------------------------------------------------------- errors


class ErrorKind(StrEnum):
    """How a failure should be treated by the policies above the provider."""

    RETRYABLE = "retryable"  # transient upstream fault (5xx, dropped connection)
    RATE_LIMITED = "rate_limited"  # upstream throttling (429); may carry retry_after
    TIMEOUT = "timeout"  # deadline or first-byte timeout passed
    AUTH = "auth"  # upstream refused our credentials (InvalidApiKey, Arrearage)
    BAD_REQUEST = "bad_request"  # the request itself is wrong; retrying cannot help
    CONTENT_FILTERED = "content_filtered"  # content-safety rejection; never bypassed
    UNAVAILABLE = "unavailable"  # backend not reachable / not configured / not loaded


#: Kinds worth another attempt on the same target.
RETRYABLE_KINDS = frozenset({ErrorKind.RETRYABLE, ErrorKind.RATE_LIMITED, ErrorKind.TIMEOUT})
#: Kinds after which the router may move on to the next target in the chain.
FAILOVER_KINDS = frozenset(
    {ErrorKind.RETRYABLE, ErrorKind.RATE_LIMITED, ErrorKind.TIMEOUT, ErrorKind.UNAVAILABLE, ErrorKind.AUTH}
)
#: Kinds that count against a circuit breaker (the backend is unhealthy, not the request).
BREAKER_KINDS = frozenset(
    {ErrorKind.RETRYABLE, ErrorKind.RATE_LIMITED, ErrorKind.TIMEOUT, ErrorKind.UNAVAILABLE, ErrorKind.AUTH}
)


class ProviderError(Exception):
    """A classified backend failure. ``code``/``status`` keep the upstream's own words."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.provider = provider

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __repr__(self) -> str:
        return (
            f"ProviderError(kind={self.kind.value!r}, code={self.code!r}, status={self.status!r}, "
            f"provider={self.provider!r}, message={self.message!r})"
        )


# --------------------------------------------------------------------------- chat


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class ToolCall:
    """One function call the model asked for. ``arguments`` is JSON text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str
    index: int = 0


@dataclass(slots=True)
class ToolCallDelta:
    """A streamed piece of a call. The first piece of each ``index`` carries ``id`` and ``name``;
    later pieces carry only ``arguments`` fragments, which concatenate to the JSON text (the
    order in which the OpenAI SDK assembles calls)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class ChatRequest:
    """An OpenAI-style chat request, already validated; ``model`` is the backend's own name.

    ``tools`` are OpenAI function tools (``{"type": "function", "function": {"name",
    "description", "parameters"}}``), ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"``
    or ``{"type": "function", "function": {"name": ...}}``, and ``response_format`` is OpenAI's
    (``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``).
    Messages may carry assistant ``tool_calls`` and ``tool`` results as in OpenAI's wire format.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    def sampling(self) -> dict[str, Any]:
        """The sampling values the client set (temperature, top_p, seed); an unset one is left
        out so that each backend keeps its own default for it."""
        values = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(slots=True)
class ChatResult:
    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "tool_calls" | "content_filter"
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(slots=True)
class ChatChunk:
    """One streamed increment. The last chunk carries ``finish_reason`` and, if known, ``usage``;
    a provider that reports cumulative usage mid-stream (DashScope) may put it on every chunk,
    so that a stream cut short is still billed with the provider's own count."""

    delta: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


# --------------------------------------------------------------------------- speech


@dataclass(slots=True)
class AudioData:
    """Mono signed 16-bit little-endian PCM."""

    pcm: bytes
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate if self.sample_rate else 0.0


@dataclass(slots=True)
class WordTiming:
    text: str
    start: float  # seconds
    end: float


@dataclass(slots=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[WordTiming] = field(default_factory=list)


@dataclass(slots=True)
class TranscribeRequest:
    model: str
    audio: AudioData
    language: str | None = None  # ISO 639-1 hint; None = detect
    prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Transcript:
    text: str
    language: str | None = None
    duration_s: float = 0.0
    segments: list[Segment] = field(default_factory=list)


@dataclass(slots=True)
class TranscriptPart:
    """One step of a streamed transcription. ``text`` is the whole transcript so far (sentences
    finished plus the one being heard), not an increment: a recogniser may still revise the words
    of the sentence in progress. The last part has ``final`` set and carries the ``transcript``."""

    text: str
    final: bool = False
    transcript: Transcript | None = None


@dataclass(slots=True)
class SynthesizeRequest:
    model: str
    text: str
    voice: str
    speed: float = 1.0
    sample_rate: int | None = None  # None = the backend's native rate
    language: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SpeechResult:
    audio: AudioData
    words: list[WordTiming] = field(default_factory=list)
    characters: int = 0


@dataclass(slots=True)
class SpeechChunk:
    """A piece of PCM in order; ``words`` are timings (relative to the whole utterance) that became known."""

    pcm: bytes
    sample_rate: int
    words: list[WordTiming] = field(default_factory=list)


# --------------------------------------------------------------------------- protocols


@dataclass(slots=True)
class Health:
    ok: bool
    detail: str = ""
    #: models that cannot serve now (e.g. a worker that keeps crashing), name -> why; the
    #: provider may still be ok through its other models
    unhealthy_models: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Lifecycle(Protocol):
    #: Backend family in targets and headers: "bailian" or "local".
    name: str

    async def load(self) -> None:
        """Acquire heavy resources (models, connection pools). Idempotent."""

    async def unload(self) -> None:
        """Release what ``load`` acquired. Idempotent."""

    async def health(self) -> Health:
        """Cheap liveness check that never touches the network on a degraded host."""

    def models(self) -> list[str]:
        """Backend model names this provider serves."""


@runtime_checkable
class ChatProvider(Lifecycle, Protocol):
    async def chat(self, request: ChatRequest) -> ChatResult: ...

    def chat_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...


@runtime_checkable
class TranscribeProvider(Lifecycle, Protocol):
    async def transcribe(self, request: TranscribeRequest) -> Transcript: ...


@runtime_checkable
class StreamingTranscribeProvider(TranscribeProvider, Protocol):
    """Optional: recognition while the audio is still arriving (partials, then the final).

    ``request.audio`` holds only the sample rate (its ``pcm`` is empty): the PCM comes through
    ``audio`` as it arrives, and the stream ends when ``audio`` does. Closing the returned
    iterator early abandons the upstream call (its connection is closed, not pooled).
    """

    def streams_transcription(self, model: str) -> bool:
        """Whether ``model`` can be streamed (a provider may serve some models whole only)."""

    def transcribe_stream(
        self, request: TranscribeRequest, audio: AsyncIterator[bytes]
    ) -> AsyncIterator[TranscriptPart]: ...


def streams_transcription(provider: Any, model: str) -> bool:
    """Whether ``provider`` (possibly wrapped) streams ``model``: the router's capability check."""
    check = getattr(provider, "streams_transcription", None)
    return callable(check) and bool(check(model))


@runtime_checkable
class SynthesizeProvider(Lifecycle, Protocol):
    async def synthesize(self, request: SynthesizeRequest) -> SpeechResult: ...

    def synthesize_stream(self, request: SynthesizeRequest) -> AsyncIterator[SpeechChunk]: ...


# --------------------------------------------------------------------------- knowledge


@dataclass(slots=True)
class EmbedRequest:
    """Texts to embed. ``text_type`` is ``document`` for stored chunks, ``query`` for searches
    (DashScope and e5 embed them asymmetrically); ``dimension`` None keeps the model's default.
    A model with one size (local e5: 384) answers in that size whatever ``dimension`` says: the
    result's ``model`` names the space it produced, and a caller that needs an exact size checks
    it (``/v1/embeddings`` does)."""

    model: str
    texts: list[str]
    text_type: Literal["document", "query"] = "document"
    dimension: int | None = None


@dataclass(slots=True)
class EmbedResult:
    """One vector per input text, in order. ``model`` names the space: vectors of two different
    ``model`` values (name and dimension) must never be compared."""

    vectors: list[list[float]]
    model: str
    tokens: int = 0


def space_name(model: str, dimension: int) -> str:
    """The vector space of an embedding result: model and dimension (``text-embedding-v4/512``,
    ``e5-small/384``). The model part is the route's model name, so a space can be asked for again."""
    return f"{model}/{dimension}"


def split_space(space: str) -> tuple[str, int | None]:
    """``space_name``'s inverse: (model, dimension); dimension None when the name has none."""
    model, _, dimension = space.rpartition("/")
    if not model or not dimension.isdigit():
        return space, None
    return model, int(dimension)


@dataclass(slots=True)
class RerankRequest:
    model: str
    query: str
    documents: list[str]
    top_n: int | None = None


@dataclass(slots=True)
class RerankResult:
    """``(index into documents, relevance in [0, 1])``, best first."""

    ranking: list[tuple[int, float]]
    model: str = ""
    tokens: int = 0


@runtime_checkable
class EmbeddingProvider(Lifecycle, Protocol):
    async def embed(self, request: EmbedRequest) -> EmbedResult: ...


@runtime_checkable
class RerankProvider(Lifecycle, Protocol):
    async def rerank(self, request: RerankRequest) -> RerankResult: ...
