"""Tool calls on the native wire: the non-streamed message and the SSE chunk sequence.

Why these exact shapes (reference §1.2, §1.4): gateways translate Bailian's stream into OpenAI
deltas, and the quirks are what breaks translators, so the simulator reproduces them:
- non-streamed: ``message = {role, content: "" (text endpoint) or [] (multimodal), tool_calls:
  [{index, id, type:"function", function:{name, arguments}}]}``, ``finish_reason "tool_calls"``
  (``"stop"`` with the ``legacy_tool_finish_reason`` config, as a 2024 non-streamed capture
  showed; streams always end with ``"tool_calls"``);
- ``incremental_output: true``: arguments are cut into ``FRAGMENT``-character pieces. A call's
  first chunk has its ``id``, ``type``, ``function.name`` and first piece; each later piece comes
  alone as ``{index, "id": "", type, function:{arguments}}``. From the second call on, the chunk
  carrying a call's head also carries an empty tail entry of the previous call (two entries in
  one ``tool_calls`` array, as captured). ``finish_reason`` is the string ``"null"`` until the
  chunk with the last piece, which says ``"tool_calls"``; no closing chunk, no [DONE];
- ``incremental_output: false``: the same number of chunks, each repeating every call so far in
  full (``id``, ``name``, arguments up to that point): the cumulative equivalent of text chunks.
Usage is cumulative on every chunk: a call costs 1 output token for its name plus 1 per piece.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.dashscope.sse import sse_event
from gateway.sim.config import SimConfig
from gateway.sim.http_common import sleep_ms
from gateway.sim.tools import ToolCall

FRAGMENT = 8

#: Builds one response body: (tool_calls entries, finish_reason, cumulative output tokens) → dict.
BodyFactory = Callable[[list[dict[str, Any]], str, int], dict[str, Any]]


def fragments(arguments: str) -> list[str]:
    return [arguments[i : i + FRAGMENT] for i in range(0, len(arguments), FRAGMENT)] or [""]


def entries(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """The complete ``tool_calls`` array of a non-streamed reply."""
    return [
        {"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for i, c in enumerate(calls)
    ]


def output_tokens(calls: list[ToolCall]) -> int:
    return sum(1 + len(fragments(c.arguments)) for c in calls)


def finish_reason(config: SimConfig) -> str:
    return "stop" if config.legacy_tool_finish_reason else "tool_calls"


def incremental_frames(calls: list[ToolCall]) -> list[tuple[list[dict[str, Any]], int]]:
    """Per chunk: its ``tool_calls`` entries and the cumulative output tokens."""
    frames: list[tuple[list[dict[str, Any]], int]] = []
    used = 0
    for i, call in enumerate(calls):
        parts = fragments(call.arguments)
        head = {
            "index": i,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": parts[0]},
        }
        used += 2
        tail = [_piece(i - 1, "")] if i else []
        frames.append(([*tail, head], used))
        for part in parts[1:]:
            used += 1
            frames.append(([_piece(i, part)], used))
    return frames


def cumulative_frames(calls: list[ToolCall]) -> list[tuple[list[dict[str, Any]], int]]:
    """The incremental frames replayed: each chunk holds every call so far, arguments accumulated."""
    state: dict[int, dict[str, Any]] = {}
    frames = []
    for pieces, used in incremental_frames(calls):
        for entry in pieces:
            index = entry["index"]
            if index not in state:
                state[index] = copy.deepcopy(entry)
            else:
                state[index]["function"]["arguments"] += entry["function"]["arguments"]
        frames.append(([copy.deepcopy(state[k]) for k in sorted(state)], used))
    return frames


def _piece(index: int, arguments: str) -> dict[str, Any]:
    return {"index": index, "id": "", "type": "function", "function": {"arguments": arguments}}


def tool_events(
    calls: list[ToolCall], incremental: bool, config: SimConfig, body: BodyFactory
) -> Callable[[], AsyncIterator[bytes]]:
    """The SSE chunk source for ``SimStream`` (which applies ``cut_after`` faults per chunk)."""
    frames = incremental_frames(calls) if incremental else cumulative_frames(calls)

    async def events() -> AsyncIterator[bytes]:
        await sleep_ms(config.ttft_ms)
        for n, (pieces, used) in enumerate(frames):
            if n:
                await sleep_ms(config.token_delay_ms)
            final = n == len(frames) - 1
            yield sse_event(n + 1, body(pieces, "tool_calls" if final else "null", used))

    return events


async def wait_whole(calls: list[ToolCall], config: SimConfig) -> None:
    """Sleep as long as streaming the calls would take (for a non-streamed reply)."""
    await sleep_ms(config.ttft_ms + config.token_delay_ms * max(len(incremental_frames(calls)) - 1, 0))
