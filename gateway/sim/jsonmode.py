"""Simulated JSON mode: ``parameters.response_format`` on the native endpoints (reference §2).

Why: gateways map OpenAI ``response_format`` onto Bailian and validate what comes back, so the
simulator enforces Bailian's request rules and returns checkable content:
- ``{"type":"json_object"}``: a system or user message must contain "json" (any case), else 400
  InvalidParameter with Bailian's sentence; the content is ``{"answer": "<simulated answer>"}``
  pretty-printed, or the scripted answer itself when that is a JSON object text;
- ``{"type":"json_schema","json_schema":{"name","schema","strict"}}``: the content is an instance
  of ``schema`` from ``schema_gen`` (``strict`` is accepted inside ``json_schema`` or beside it);
- ``{"type":"text"}`` or no ``response_format``: ordinary text.
Both JSON modes are refused in thinking mode and on models without the capability. The
``invalid_output`` fault makes the content invalid on purpose (see ``json_text``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.dashscope.bodies import content_text
from gateway.dashscope.errors import invalid
from gateway.sim.capabilities import Caps
from gateway.sim.schema_gen import generate, invalid_instance

JSON_WORD_MESSAGE = (
    "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."
)


@dataclass(frozen=True, slots=True)
class JsonMode:
    kind: str  # "json_object" | "json_schema"
    schema: Any = None


def parse_response_format(
    params: dict[str, Any], caps: Caps, model: str, messages: list[dict[str, Any]], thinking: bool
) -> JsonMode | None:
    """The requested JSON mode, None for plain text; raises DashScopeError as Bailian would."""
    raw = params.get("response_format")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid("response_format must be an object.")
    kind = raw.get("type")
    if kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise invalid("response_format.type must be one of 'text', 'json_object', 'json_schema'.")
    if thinking:
        raise invalid(
            f"response_format {kind} is not supported in thinking mode; set enable_thinking to false."
        )
    if kind == "json_object":
        if not caps.json_object:
            raise invalid(f"The model {model} does not support response_format json_object.")
        if not _mentions_json(messages):
            raise invalid(JSON_WORD_MESSAGE)
        return JsonMode("json_object")
    if not caps.json_schema:
        raise invalid(f"The model {model} does not support response_format json_schema.")
    spec = raw.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise invalid("response_format.json_schema.schema must be a JSON Schema object.")
    return JsonMode("json_schema", schema)


def _mentions_json(messages: list[dict[str, Any]]) -> bool:
    return any(
        "json" in content_text(m.get("content")).casefold()
        for m in messages
        if m.get("role") in ("system", "user")
    )


def json_text(mode: JsonMode, answer: str, prompt: str, broken: bool) -> str:
    """The reply content for ``mode``, pretty-printed like Bailian's (two-space indent, newlines).

    ``broken`` (the ``invalid_output`` fault): json_object content is cut short (not parseable);
    json_schema content is valid JSON that violates the schema (an object without the required
    properties, or a value of the wrong type), or cut short if the schema accepts any JSON.
    """
    if mode.kind == "json_object":
        value = _as_object(answer)
        text = json.dumps(value if value is not None else {"answer": answer}, indent=2, ensure_ascii=False)
        return text[:-1] if broken else text
    if broken:
        found, bad = invalid_instance(mode.schema)
        if found:
            return json.dumps(bad, indent=2, ensure_ascii=False)
        return json.dumps(generate(mode.schema, prompt), indent=2, ensure_ascii=False)[:-1]
    return json.dumps(generate(mode.schema, prompt), indent=2, ensure_ascii=False)


def _as_object(text: str) -> dict[str, Any] | None:
    """A scripted answer that already is a JSON object is returned as the content."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
