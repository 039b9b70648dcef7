"""An answer to a structured request is checked before a client sees it.

Why: a backend may not guarantee the shape asked for (Bailian documents JSON Schema mode for a
few models only; a small local model follows a grammar but can run out of tokens), and a client
that asked for a schema or offered tools must never get JSON it cannot parse, arguments its
function rejects, or a call to a tool it did not offer. ``AnswerCheck`` raises a retryable
``ProviderError`` (code ``SchemaViolation``) for such an answer, inside the router's attempt,
so the router retries it and then moves to the next chain entry like any failed attempt.

Streams of structured requests are collected first (``collect``) and checked whole, then
replayed to the client: a tool call is useful only complete, and a call cut in the middle
then fails over instead of reaching the client half-made.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from jsonschema import Draft202012Validator

from providers.base import ChatChunk, ChatRequest, ChatResult, ErrorKind, ProviderError, ToolCall, Usage


def is_structured(request: ChatRequest) -> bool:
    """Requests whose answers are checked: tools offered (and not switched off) or a JSON format."""
    return bool(request.tools and request.tool_choice != "none") or request.response_format is not None


def _violation(message: str) -> ProviderError:
    return ProviderError(
        ErrorKind.RETRYABLE, f"the answer broke the requested shape: {message}", code="SchemaViolation"
    )


class AnswerCheck:
    """``check(result)`` raises ``SchemaViolation`` unless ``result`` has the shape ``request`` asked for."""

    def __init__(self, request: ChatRequest) -> None:
        self.tools = {
            t["function"]["name"]: Draft202012Validator(t["function"].get("parameters") or {})
            for t in request.tools
        }
        choice = request.tool_choice
        self.must_call = choice == "required" or isinstance(choice, dict)
        self.only = choice["function"]["name"] if isinstance(choice, dict) else None
        self.no_calls = choice == "none" or not request.tools
        fmt = request.response_format or {}
        self.json = fmt.get("type") in ("json_object", "json_schema")
        schema = (fmt.get("json_schema") or {}).get("schema")
        self.schema = Draft202012Validator(schema) if fmt.get("type") == "json_schema" and schema else None

    def __call__(self, result: ChatResult) -> None:
        if result.tool_calls:
            self._check_calls(result.tool_calls)
            return
        if self.must_call:
            raise _violation("a tool call was required, the answer was text")
        if self.json and result.finish_reason != "length":
            self._check_json(result.text)

    def _check_calls(self, calls: list[ToolCall]) -> None:
        if self.no_calls:
            raise _violation("the answer called a tool although no call was allowed")
        for call in calls:
            validator = self.tools.get(call.name)
            if validator is None or (self.only and call.name != self.only):
                raise _violation(f"the answer called '{call.name[:64]}', a tool that was not offered")
            try:
                arguments = json.loads(call.arguments or "{}")
            except ValueError:
                raise _violation(f"the arguments of '{call.name}' are not JSON") from None
            error = next(iter(validator.iter_errors(arguments)), None)
            if error is not None:
                raise _violation(
                    f"the arguments of '{call.name}' do not match its parameters: {error.message[:200]}"
                )

    def _check_json(self, text: str) -> None:
        try:
            value = json.loads(text)
        except ValueError:
            raise _violation("the answer is not JSON") from None
        if self.schema is None:
            if not isinstance(value, dict):
                raise _violation("the answer is not a JSON object")
            return
        error = next(iter(self.schema.iter_errors(value)), None)
        if error is not None:
            raise _violation(f"the answer does not match the schema: {error.message[:200]}")


def assemble(chunks: list[ChatChunk]) -> ChatResult:
    """The whole answer a stream of chunks spells out (text, complete tool calls, finish, usage)."""
    text: list[str] = []
    calls: dict[int, ToolCall] = {}
    finish, usage = "stop", None
    for chunk in chunks:
        text.append(chunk.delta)
        for piece in chunk.tool_calls:
            call = calls.get(piece.index)
            if call is None:
                call = calls[piece.index] = ToolCall(
                    id=piece.id or "", name=piece.name or "", arguments="", index=piece.index
                )
            call.id = call.id or piece.id or ""
            call.name = call.name or piece.name or ""
            call.arguments += piece.arguments
        if chunk.finish_reason:
            finish = chunk.finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
    ordered = [calls[i] for i in sorted(calls)]
    return ChatResult(
        text="".join(text),
        finish_reason="tool_calls" if ordered else finish,
        usage=usage or Usage(),
        tool_calls=ordered,
    )


async def collect(stream: AsyncIterator[ChatChunk], check: AnswerCheck) -> list[ChatChunk]:
    """Every chunk of ``stream``, once the answer they make is checked (raises SchemaViolation)."""
    chunks = [chunk async for chunk in stream]
    check(assemble(chunks))
    return chunks
