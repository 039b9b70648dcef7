"""An OpenAI chat body → the provider-facing ``ChatRequest``: every check the schema cannot express.

Shared by ``/v1/chat/completions`` and the DashScope front door (``gateway/dashscope/
front_generation.py``), so tools, JSON mode, images and token limits are judged the same
whichever protocol a client speaks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.errors import APIError
from gateway.inputs.echo import echo
from gateway.schemas import ChatCompletionRequest
from gateway.structured.capabilities import chat_features
from gateway.structured.images import content_parts
from gateway.structured.requests import (
    check_response_format,
    check_tool_calls,
    check_tool_choice,
    check_tool_results,
    check_tools,
)
from policies.targets import Target
from providers.base import ChatRequest


def build_chat_request(body: ChatCompletionRequest, services: Any) -> ChatRequest:
    """Check what the schema cannot express and translate to the provider-facing request."""
    if body.n is not None and body.n != 1:
        raise APIError(
            400,
            "n must be 1: talkgate returns a single choice per request.",
            param="n",
            code="unsupported_parameter",
        )
    if not body.messages:
        raise APIError(400, "messages must contain at least one message.", param="messages")
    messages: list[dict[str, Any]] = []
    has_text = False
    for i, m in enumerate(body.messages):
        if isinstance(m.content, list):  # text parts, and images (gateway/structured/images.py)
            content: str | list[dict[str, Any]] = content_parts(m.content, f"messages[{i}].content")
        else:
            content = m.content or ""
        has_text = has_text or bool(content if isinstance(content, list) else content.strip())
        role = "system" if m.role == "developer" else m.role
        msg: dict[str, Any] = {"role": role, "content": content}
        if m.name:
            msg["name"] = m.name
        if m.tool_calls is not None and role == "assistant":
            msg["tool_calls"] = check_tool_calls(m.tool_calls, f"messages[{i}]")
            has_text = True
        if role == "tool":
            msg["tool_call_id"] = m.tool_call_id
        messages.append(msg)
    if not has_text:
        raise APIError(400, "messages contain no text: every message content is empty.", param="messages")
    check_tool_results(messages)
    tools = check_tools(body.tools)
    tool_choice = check_tool_choice(body.tool_choice, tools)
    response_format = check_response_format(body.response_format)
    limit = body.token_limit()
    ceiling = services.settings.max_tokens_ceiling
    if limit is not None and limit > ceiling:
        raise APIError(
            400,
            f"max_tokens is {limit}, above this gateway's limit of {ceiling}.",
            param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        )
    extra: dict[str, Any] = {}
    if body.presence_penalty is not None:
        extra["presence_penalty"] = body.presence_penalty
    if body.frequency_penalty is not None:
        extra["frequency_penalty"] = body.frequency_penalty
    return ChatRequest(
        model=body.model,
        messages=messages,
        max_tokens=limit,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        extra=extra,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=response_format,
    )


def target_skip(services: Any, request: ChatRequest, images: int) -> Callable[[Target], str | None] | None:
    """Targets a request may not use: with images, those that take none (and a 400 when no target of
    the chain takes images); with tools and ``routes.chat.local_tools: false``, the local models."""
    no_local_tools = bool(request.tools) and not services.settings.routes["chat"].local_tools
    if images:
        chain = services.router.resolve("chat", request.model)
        if not any(chat_features(t)["vision"] for t in chain):
            raise APIError(
                400,
                f"The request has images, and no model of the '{echo(request.model)}' chain takes images; "
                "ask for a vision model (e.g. qwen-vl-max).",
                param="model",
                code="model_cannot_see",
            )
    if not images and not no_local_tools:
        return None

    def skip(target: Target) -> str | None:
        if images and not chat_features(target)["vision"]:
            return "not tried: it takes no images"
        if no_local_tools and target.provider == "local":
            return "not tried: tool calls may not fall back to local models (routes.chat.local_tools)"
        return None

    return skip
