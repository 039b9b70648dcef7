"""Request schemas of the OpenAI-compatible endpoints.

Only requests are pydantic models: responses are plain dicts serialised with orjson, since
a validation round trip on every response would cost more than the whole routing hop.
Unknown request fields are ignored (OpenAI SDKs send optional fields we do not use), except
chat fields that would change the shape of the answer and that talkgate does not honour (the
legacy ``functions``/``function_call``, logprobs): those are refused with 400
``unsupported_parameter`` so a client never gets plain text it did not ask for. Tools, tool
choice and response formats are checked in ``gateway/structured/requests.py``.

Identifier fields (model, voice, user, name, language) have length limits: they are names, and
an unbounded name is only a way to make the gateway carry (and, in errors, reflect) megabytes.
A longer value fails validation like any other bad field (the shared handler in
``gateway.errors``, which names the field and never quotes the value).
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, Literal

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from gateway.audio import SpeechFormat
from gateway.errors import APIError
from gateway.inputs.echo import echo

#: Longest model, voice, user or message name accepted (real ones are a few dozen characters).
IDENTIFIER_MAX_CHARS = 256
#: Longest language tag accepted ("en", "zh-CN", "yue"; BCP 47 tags in practice stay short).
LANGUAGE_MAX_CHARS = 64

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Lenient):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=IDENTIFIER_MAX_CHARS)
    #: an assistant message repeating the calls an earlier answer made
    tool_calls: list[Any] | None = None
    #: a ``tool`` message: the id of the call it answers
    tool_call_id: str | None = Field(default=None, max_length=IDENTIFIER_MAX_CHARS)


class StreamOptions(_Lenient):
    include_usage: bool = False


def _unsupported(field: str, why: str) -> APIError:
    return APIError(
        400,
        f"'{field}' is not supported by this gateway: {why}.",
        code="unsupported_parameter",
        param=field,
    )


def _refuse_shape_changing_fields(payload: dict[str, Any]) -> None:
    """Fields whose effect talkgate cannot honour; ignoring them would silently change the answer."""
    if payload.get("functions"):  # None or [] ask for nothing
        raise _unsupported("functions", "the legacy functions field is not accepted; use 'tools'")
    if payload.get("function_call") not in (None, "none"):
        raise _unsupported(
            "function_call", "the legacy function_call field is not accepted; use 'tool_choice'"
        )
    if payload.get("logprobs"):
        raise _unsupported("logprobs", "token log-probabilities are not returned")


class ChatCompletionRequest(_Lenient):
    model: str = Field(min_length=1, max_length=IDENTIFIER_MAX_CHARS)
    messages: list[ChatMessage]
    #: strict: "yes" or 1 must not quietly switch the response to SSE
    stream: bool = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=IDENTIFIER_MAX_CHARS)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    #: checked in gateway/structured/requests.py (JSON Schema, names), where errors name their path
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: Any = None
    #: talkgate extension: ground the answer in vector stores (gateway/knowledge_chat.py checks it)
    knowledge: Any = None

    @model_validator(mode="before")
    @classmethod
    def _supported_fields_only(cls, data: Any) -> Any:
        # APIError is not a ValueError, so pydantic lets it through untouched: the client gets
        # 400 unsupported_parameter naming the field, not a generic 422.
        if isinstance(data, dict):
            _refuse_shape_changing_fields(data)
        return data

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        # An empty stop sequence means "no stop sequence" (some clients send "" for none);
        # forwarding it could end the answer before its first token.
        if isinstance(v, str):
            return v or None
        if isinstance(v, list):
            v = [s for s in v if s]
            if len(v) > 4:
                raise ValueError("at most 4 stop sequences are allowed")
            return v or None
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class SpeechRequest(_Lenient):
    model: str = Field(min_length=1, max_length=IDENTIFIER_MAX_CHARS)
    input: str
    voice: str = Field(default="", max_length=IDENTIFIER_MAX_CHARS)
    response_format: SpeechFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    instructions: str | None = None
    #: talkgate extension: "auto", "off" or one emotion (gateway/conversation/emotion.py); None: off
    emotion: str | None = Field(default=None, max_length=IDENTIFIER_MAX_CHARS)


TranscriptionFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]


class TranscriptionForm(_Lenient):
    """The non-file fields of a multipart transcription request."""

    model: str = Field(min_length=1, max_length=IDENTIFIER_MAX_CHARS)
    language: str | None = Field(default=None, max_length=LANGUAGE_MAX_CHARS)
    prompt: str | None = None
    response_format: TranscriptionFormat = "json"
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)


# --------------------------------------------------------------------------- reading bodies


def too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"The request body is larger than this gateway's limit of {limit} bytes ({limit / 1048576:.0f} MiB).",
        code="request_too_large",
        # Close the connection: otherwise the server reads and drops the rest of a huge upload.
        headers={"connection": "close"},
    )


def check_content_length(request: Request, limit: int) -> None:
    """Refuse an oversized body from its declared length, before reading a byte of it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise APIError(400, "The Content-Length header is not a number.") from None
        if size > limit:
            raise too_large(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, but never more than ``limit`` bytes in memory (413 beyond)."""
    check_content_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: Room for multipart boundaries and small text fields on top of the files themselves.
FORM_OVERHEAD_BYTES = 1024 * 1024


async def read_form(request: Request, limit: int, files: str, max_files: int = 2) -> FormData:
    """multipart/form-data with the body counted as it arrives: 413 once past ``limit``.

    Starlette spools file parts to disk above 1 MiB, so memory stays small; counting on the
    receive channel keeps the disk use bounded too. ``files`` names the expected fields in
    the 400 answered to a body that is not multipart.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise APIError(
            400,
            f"Expected a multipart/form-data body with {files}, got '{echo(content_type or 'none')}'.",
            code="invalid_content_type",
        )
    body_limit = limit + FORM_OVERHEAD_BYTES
    check_content_length(request, body_limit)
    received = 0
    upstream = request.receive

    async def counting_receive() -> Any:
        nonlocal received
        message = await upstream()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > body_limit:
                raise too_large(limit)
        return message

    counted = Request(request.scope, counting_receive)
    try:
        async with aclosing(counted.stream()) as stream:
            parser = _Utf8MultiPartParser(
                counted.headers, stream, max_files=max_files, max_fields=32, max_part_size=1024 * 1024
            )
            return await parser.parse()
    except MultiPartException as exc:
        raise APIError(400, exc.message, code="invalid_multipart") from None


class _Utf8MultiPartParser(MultiPartParser):
    """Starlette's parser, but a text field that is not valid UTF-8 is an error.

    Starlette decodes such a field as latin-1 without a word, which would send mojibake
    upstream (a prompt, a talk text). A part that declares another charset is left alone.
    """

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None and self._charset == "utf-8":
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise MultiPartException(
                    f"The form field '{echo(part.field_name)}' is not valid UTF-8 text."
                ) from None
        super().on_part_end()


def parse_json_body(raw: bytes) -> Any:
    """orjson parse with a 400 that says what is wrong (FastAPI's default is a 422)."""
    if not raw.strip():
        raise APIError(400, "The request body is empty: expected a JSON object.", code="invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from exc


def validate(model: type[Any], payload: Any) -> Any:
    """Validate against a schema; failures go through the shared 422 handler naming the field."""
    if not isinstance(payload, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
