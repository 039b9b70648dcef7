"""A chat stream as every surface opens it: plain, or checked whole when its shape matters.

Shared by ``/v1/chat/completions``, the realtime session and the spoken answer of ``/v1/talk``
(and the DashScope front door): a request with tools or a JSON format is collected and checked
inside each router attempt (gateway/structured/answers.py), then replayed, so a broken call
falls over before anything reaches the client; any other request streams as it comes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from gateway.structured.answers import AnswerCheck, assemble, collect, is_structured
from policies.targets import Target
from providers.base import ChatChunk, ChatRequest


async def replay(chunks: list[ChatChunk]) -> AsyncIterator[ChatChunk]:
    """A checked answer, streamed as it came (the finish reason says ``tool_calls`` when it has calls)."""
    calls = any(chunk.tool_calls for chunk in chunks)
    for chunk in chunks:
        if calls and chunk.finish_reason:
            chunk = replace(chunk, finish_reason="tool_calls")
        yield chunk


async def open_chat_stream(
    router: Any,
    request: ChatRequest,
    ctx: Any,
    skip: Callable[[Target], str | None] | None = None,
    metrics: Any = None,
) -> AsyncIterator[ChatChunk]:
    """The router's stream for ``request``; raises the router's errors before the first chunk."""
    if not is_structured(request):
        return await router.chat_stream(request, ctx, skip)
    check = AnswerCheck(request)
    collected = await router.chat_collected(request, ctx, lambda s: collect(s, check), skip)
    if metrics is not None:
        metrics.tool_calls(ctx.provider, len(assemble(collected).tool_calls))
    return replay(collected)
