"""Simulated function calling: which tools a request offers, which ones the "model" calls, and how.

Why deterministic rules instead of a model: gateway tests must know in advance whether a prompt
yields a call, to which tool, with which arguments.

Matching rule: the words of the last user message are compared with each tool's words (its name
split at ``_``/``-``/camelCase, plus its description). Words are lower-cased Latin/digit runs of 3+
characters minus a short stop list, with a plural "s" dropped; runs of CJK characters contribute
their 2-character pairs. Score = 2 × shared name words + shared description-only words; a tool
with score > 0 matches. ``tool_choice``:
- ``"auto"`` (default): the best match (highest score, earliest in ``tools`` on a tie), or every
  match, in ``tools`` order, when ``parallel_tool_calls`` is true; no match → a text answer;
- ``"none"``: never calls;
- ``"required"``: like auto, but with no match it calls the first tool;
- ``{"type":"function","function":{"name":X}}``: calls X once (also with parallel calls).
After a tool result (the last message has role ``tool``) ``"auto"`` answers in text, while a
forcing choice calls again, as Bailian's docs warn. Arguments come from ``schema_gen``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.dashscope.bodies import content_text
from gateway.dashscope.errors import DashScopeError, invalid
from gateway.sim.capabilities import Caps
from gateway.sim.schema_gen import generate, invalid_instance
from gateway.sim.text import count_tokens

# fmt: off
_STOP = frozenset({
    "the", "and", "for", "with", "from", "are", "was", "were", "what", "whats", "which", "who", "how",
    "when", "where", "why", "can", "could", "would", "should", "will", "please", "tell", "show",
    "give", "get", "set", "use", "call", "tool", "function", "about", "this", "that", "these", "those",
    "you", "your", "its", "into", "than", "then", "there", "their", "have", "has", "had", "does",
    "did", "not", "any", "all", "some", "one", "two",
})
# fmt: on
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_THINKING_CHOICE = (
    "The tool_choice parameter does not support being set to required or object in thinking mode"
)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``mode`` is "auto", "none", "required" or "named" (then ``name`` is the function)."""

    mode: str
    name: str | None = None

    @property
    def forcing(self) -> bool:
        return self.mode in ("required", "named")


def parse_tools(params: dict[str, Any]) -> list[Tool]:
    """``parameters.tools`` as Tool objects; an absent or empty list means no tools."""
    raw = params.get("tools")
    if raw is None or raw == []:
        return []
    if not isinstance(raw, list):
        raise invalid("'tools' must be a list.")
    tools = []
    for i, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(item, dict) or item.get("type", "function") != "function":
            raise invalid(f"tools[{i}].type must be 'function'.")
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise invalid(f"tools[{i}].function.name is required.")
        schema = function.get("parameters")
        if schema is not None and not isinstance(schema, dict):
            raise invalid(f"tools[{i}].function.parameters must be a JSON Schema object.")
        description = function.get("description")
        tools.append(Tool(function["name"], description if isinstance(description, str) else "", schema))
    return tools


def parse_tool_choice(params: dict[str, Any], tools: list[Tool], caps: Caps, thinking: bool) -> ToolChoice:
    """Validate ``tool_choice`` against the tools, the model and thinking mode (reference §1.1)."""
    raw = params.get("tool_choice")
    allowed = ["none", "auto", "required"] if caps.forced_tool_choice else ["none", "auto"]
    listing = "[" + ", ".join(f'"{a}"' for a in allowed) + "]"
    if raw is None:
        choice = ToolChoice("auto")
    elif isinstance(raw, str):
        if raw not in allowed:
            raise invalid(f"tool_choice is one of the strings that should be {listing}")
        choice = ToolChoice(raw)
    elif isinstance(raw, dict):
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if raw.get("type") != "function" or not isinstance(name, str):
            raise invalid('tool_choice object must be {"type": "function", "function": {"name": ...}}.')
        if not caps.forced_tool_choice:
            raise invalid(f"tool_choice is one of the strings that should be {listing}")
        if name not in {t.name for t in tools}:
            raise invalid(f"tool_choice names function '{name}', which is not in tools.")
        choice = ToolChoice("named", name)
    else:
        raise invalid(f"tool_choice is one of the strings that should be {listing}")
    if thinking and choice.forcing:
        raise DashScopeError(400, "InternalError.Algo.InvalidParameter", _THINKING_CHOICE)
    return choice


def words(text: str) -> set[str]:
    """The matching words of ``text`` (see the module notes)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text)
    out = set()
    for word in re.findall(r"[a-z0-9]+", spaced.lower()):
        if len(word) < 3 or word in _STOP:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.add(word)
    for run in _CJK_RUN.findall(text):
        out.update([run] if len(run) == 1 else (run[i : i + 2] for i in range(len(run) - 1)))
    return out


def score(tool: Tool, prompt_words: set[str]) -> int:
    name_words = words(tool.name.replace("_", " ").replace("-", " "))
    described = words(tool.description) - name_words
    return 2 * len(name_words & prompt_words) + len(described & prompt_words)


def choose(
    tools: list[Tool], choice: ToolChoice, parallel: bool, prompt: str, after_tool_result: bool
) -> list[Tool]:
    """The tools the simulated model calls this turn, in call order (empty: answer in text)."""
    if not tools or choice.mode == "none":
        return []
    if choice.mode == "named":
        return [t for t in tools if t.name == choice.name][:1]
    if after_tool_result and choice.mode == "auto":
        return []
    prompt_words = words(prompt)
    scores = [score(t, prompt_words) for t in tools]
    matches = [t for t, s in zip(tools, scores, strict=True) if s > 0]
    if not matches:
        return [tools[0]] if choice.mode == "required" else []
    if parallel:
        return matches
    best = max(scores)
    return [tools[scores.index(best)]]


def arguments_for(tool: Tool, prompt: str, broken: bool) -> str:
    """The JSON arguments string; ``broken`` (the ``invalid_output`` fault) violates the schema."""
    schema = tool.parameters or {"type": "object"}
    if broken:
        found, bad = invalid_instance(schema)
        if found:
            return json.dumps(bad, ensure_ascii=False)
        return json.dumps(generate(schema, prompt), ensure_ascii=False)[:-1]
    value = generate(schema, prompt)
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


def make_calls(selected: list[Tool], prompt: str, broken: bool) -> list[ToolCall]:
    return [
        ToolCall(f"call_{uuid.uuid4().hex[:24]}", t.name, arguments_for(t, prompt, broken)) for t in selected
    ]


def ends_with_tool_result(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and messages[-1].get("role") == "tool"


def tool_result_answer(messages: list[dict[str, Any]]) -> str | None:
    """ "Simulated answer using <tool>: <result>" for the trailing tool messages, else None.

    The tool name is found through ``tool_call_id`` in the assistant turn that made the calls
    (then the message's own ``name``, then "tool"); several results are joined with "; ".
    """
    if not ends_with_tool_result(messages):
        return None
    trailing: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        trailing.insert(0, message)
    names: dict[str, str] = {}
    for message in messages:
        for entry in message.get("tool_calls") or [] if message.get("role") == "assistant" else []:
            function = entry.get("function") if isinstance(entry, dict) else None
            if isinstance(function, dict) and isinstance(entry.get("id"), str):
                names[entry["id"]] = str(function.get("name") or "tool")
    parts = []
    for message in trailing:
        name = names.get(message.get("tool_call_id") or "") or message.get("name") or "tool"
        parts.append(f"{name}: {' '.join(content_text(message.get('content')).split())}")
    return "Simulated answer using " + "; ".join(parts)


def tools_input_tokens(tools: list[Tool]) -> int:
    """Tool definitions are billed as input (reference §1.3): count their words too."""
    return sum(
        count_tokens(f"{t.name} {t.description} {json.dumps(t.parameters or {}, ensure_ascii=False)}")
        for t in tools
    )
