"""What the simulated chat model says this turn: tool calls or text (JSON-mode text included).

Why one planner: the text-generation and multimodal-generation endpoints accept the same
``tools``/``tool_choice``/``response_format`` parameters and must refuse and answer them alike;
only the wire shape differs (string vs list content), which the endpoints handle.

Text precedence: a reply to trailing tool results ("Simulated answer using ..."), then a scripted
answer for the last user message, then the endpoint's own default (an image description), then
``"<default_answer_prefix> <last user message>"``; JSON mode wraps whichever was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.dashscope.errors import invalid
from gateway.sim.capabilities import capabilities, thinking_enabled
from gateway.sim.config import SimConfig
from gateway.sim.jsonmode import json_text, parse_response_format
from gateway.sim.state import Fault
from gateway.sim.text import answer_for
from gateway.sim.tools import (
    ToolCall,
    choose,
    ends_with_tool_result,
    make_calls,
    parse_tool_choice,
    parse_tools,
    tool_result_answer,
    tools_input_tokens,
)


@dataclass(frozen=True, slots=True)
class Plan:
    """Either ``calls`` (non-empty) or ``text``; ``tool_tokens`` are extra billed input tokens."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    tool_tokens: int = 0


def plan_reply(
    config: SimConfig,
    model: str,
    messages: list[dict[str, Any]],
    user_text: str,
    params: dict[str, Any],
    fault: Fault | None,
    default_text: str | None = None,
) -> Plan:
    """Validate the feature parameters for ``model`` and decide the reply; raises DashScopeError."""
    caps = capabilities(model, config.model_capabilities)
    thinking = thinking_enabled(caps, params)
    tools = parse_tools(params)
    if tools and not caps.tools:
        raise invalid(f"The model {model} does not support tools (function calling).")
    broken = bool(fault and fault.invalid_output)
    tool_tokens = tools_input_tokens(tools)
    mode = parse_response_format(params, caps, model, messages, thinking)
    if tools:
        choice = parse_tool_choice(params, tools, caps, thinking)
        parallel = params.get("parallel_tool_calls") is True
        selected = choose(tools, choice, parallel, user_text, ends_with_tool_result(messages))
        if selected:
            return Plan(calls=make_calls(selected, user_text, broken), tool_tokens=tool_tokens)
    text = tool_result_answer(messages)
    if text is None:
        scripted = config.scripted_answer(user_text)
        text = scripted if scripted is not None else default_text or answer_for(config, user_text)
    if mode is not None:
        text = json_text(mode, text, user_text, broken)
    return Plan(text=text, tool_tokens=tool_tokens)
