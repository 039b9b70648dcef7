"""Native DashScope request and response bodies, server side (reference §1.3-§2.3, §4.2).

Shared by the simulator (``gateway/sim/``) and the gateway's front door (``gateway/routes/
dashscope.py``): how the key is sent, when a call streams, what ``input`` holds, and the shapes
of ``output`` and ``usage`` for text generation and qwen3-asr-flash. Nothing here knows a
fault, a canned answer or a provider.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.dashscope.errors import DashScopeError
from gateway.inputs.data_url import DataUrl, DataUrlError
from gateway.inputs.data_url import decode_data_url as decode_base64_url

#: The native text-generation and multimodal-generation paths (under ``/api/v1``).
GENERATION_PATH = "/api/v1/services/aigc/text-generation/generation"
MULTIMODAL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
#: The inference WebSocket; the docs write it with a trailing slash, the SDK without (§1.1).
INFERENCE_WS_PATHS = ("/api-ws/v1/inference", "/api-ws/v1/inference/")
#: Bailian's limit on an inline (data URL) audio input, qwen3-asr-flash (§4.2).
MAX_DATA_URL_CHARS = 10 * 1024 * 1024


def new_request_id() -> str:
    return str(uuid.uuid4())


def bearer_key(headers: Any) -> str | None:
    """The API key of ``Authorization: Bearer <key>`` (HTTP and the WebSocket handshake, §1.2)."""
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def wants_sse(headers: Any) -> bool:
    """Native endpoints stream when either ``X-DashScope-SSE: enable`` or an event-stream Accept
    asks for it (§1.3); ``stream`` is never in the body."""
    if (headers.get("x-dashscope-sse") or "").lower() == "enable":
        return True
    return "text/event-stream" in (headers.get("accept") or "")


def parse_json(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The body as a JSON object, or (None, reason) for the 400 answer."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, "Request body is not valid JSON."
    if not isinstance(body, dict):
        return None, "Request body must be a JSON object."
    return body, None


async def read_json(request: Request) -> tuple[dict[str, Any] | None, str | None]:
    return parse_json(await request.body())


def parameters(body: dict[str, Any]) -> dict[str, Any]:
    """``body["parameters"]`` when it is an object, else an empty one."""
    params = body.get("parameters")
    return params if isinstance(params, dict) else {}


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts (``{"text": ...}`` / OpenAI parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return " ".join(parts)
    return ""


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def generation_input(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str] | None:
    """(messages, last user text) from ``input.messages`` or ``input.prompt`` (§2.1); None if
    neither is there (Bailian: 400 InvalidParameter)."""
    data = body.get("input")
    if not isinstance(data, dict):
        return None
    messages = data.get("messages")
    if isinstance(messages, list) and messages:
        clean = [m for m in messages if isinstance(m, dict)]
        return clean, last_user_text(clean)
    prompt = data.get("prompt")
    if isinstance(prompt, str) and prompt:
        return [{"role": "user", "content": prompt}], prompt
    return None


EMPTY_INPUT = "Input should contain a non-empty 'prompt' or 'messages'."


def bad_max_tokens(value: Any) -> str | None:
    """Bailian's complaint about a ``max_tokens`` below 1 or not an integer; None if acceptable."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return f"Range of max_tokens should be [1, 8192], got {value!r}."
    return None


def max_tokens(params: dict[str, Any]) -> int | None:
    value = params.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def result_format(params: dict[str, Any]) -> str:
    """``message`` or ``text`` (the default of the native API, §2.2)."""
    return "message" if params.get("result_format") == "message" else "text"


def generation_output(
    text: str,
    finish_reason: str,
    fmt: str,
    tool_calls: list[dict[str, Any]] | None = None,
    parts: bool = False,
) -> dict[str, Any]:
    """``output`` of a text-generation answer or chunk; tool calls need the message format.
    ``parts``: the multimodal endpoint's shape (Qwen-VL), whose content is a list of
    ``{"text"}`` items (empty beside tool calls), always in the message format."""
    if fmt == "message" or tool_calls or parts:
        content: Any = text
        if parts:
            content = [] if tool_calls and not text else [{"text": text}]
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {"choices": [{"finish_reason": finish_reason, "message": message}]}
    return {"text": text, "finish_reason": finish_reason}


def generation_usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def audio_ref(body: dict[str, Any]) -> str:
    """The first ``{"audio": ...}`` part of the messages of a qwen3-asr-flash request (§4.2);
    raises ``DashScopeError`` 400 when there is none."""
    data = body.get("input")
    messages = data.get("messages") if isinstance(data, dict) else None
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and isinstance(part.get("audio"), str) and part["audio"]:
                return part["audio"]
    raise DashScopeError(400, "InvalidParameter", "No audio found in input.messages content.")


def multimodal_kind(body: dict[str, Any]) -> str | None:
    """What a multimodal-generation call asks for, when its body says: ``tts`` when
    ``input.text`` is there (qwen-tts, §5.3), ``asr`` when a message carries an ``{"audio"}``
    part (qwen3-asr-flash, §4.2); None otherwise (Qwen-VL, or a malformed call that only its
    model can place)."""
    data = body.get("input")
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("text"), str) and "messages" not in data:
        return "tts"
    messages = data.get("messages")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and "audio" in p for p in content):
            return "asr"
    return None


def decode_data_url(ref: str) -> tuple[bytes, str | None]:
    """Bytes and a format hint (the MIME subtype) of an audio ``data:`` URL (``media_data_url``)."""
    url = media_data_url(ref, "audio")
    return url.data, url.subtype


def media_data_url(ref: str, kind: str) -> DataUrl:
    """A base64 ``data:`` URL of ``kind`` ("audio", "image") as Bailian refuses one:
    ``DashScopeError`` 413 past 10 MB, 400 for anything that is not base64."""
    what = kind.capitalize()
    try:
        return decode_base64_url(ref, max_chars=MAX_DATA_URL_CHARS)
    except DataUrlError as exc:
        if exc.reason == "too_large":
            raise DashScopeError(413, "BadRequest.TooLarge", f"The {kind} data URL exceeds 10 MB.") from None
        if exc.reason == "bad_base64":
            raise DashScopeError(400, "InvalidParameter", f"{what} data URL is not valid base64.") from None
        raise DashScopeError(400, "InvalidParameter", f"{what} data URL must be base64-encoded.") from None


def asr_body(
    request_id: str, text: str, finish_reason: str, output_tokens: int, seconds: int, language: str
) -> dict[str, Any]:
    """A qwen3-asr-flash answer or chunk (§4.2)."""
    message = {
        "role": "assistant",
        "content": [{"text": text}],
        "annotations": [{"type": "audio_info", "language": language, "emotion": "neutral"}],
    }
    return {
        "request_id": request_id,
        "output": {"choices": [{"finish_reason": finish_reason, "message": message}]},
        "usage": {
            "input_tokens_details": {"text_tokens": 0},
            "output_tokens_details": {"text_tokens": output_tokens},
            "seconds": seconds,
        },
    }
