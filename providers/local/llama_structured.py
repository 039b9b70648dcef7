"""JSON mode, JSON Schema answers and tool calls on the llama.cpp path, through one grammar.

Why not llama-cpp-python's own chat handlers (reference "tools-structured-vision" section 6):
they ignore OpenAI's ``{"type": "json_schema"}`` (no grammar at all), never parse calls with
``tool_choice: "auto"``, fail on ``"required"`` (an assert) and on streamed ``"auto"``, and the
SmolLM2 chat template has no tool section, so the tools never reach the prompt. Instead every
structured request becomes ONE JSON Schema for the whole answer:

- ``json_object``: any JSON object; ``json_schema``: the client's schema, as is;
- tools: ``{"answer": <text, or the response_format's JSON>}`` or ``{"tool_calls": [{"name":
  <const>, "arguments": <that tool's parameters>}, ...]}``. ``"required"`` and a named function
  admit only the ``tool_calls`` branch (a named one only that function); ``"none"`` is a plain
  text request. At most one call unless ``parallel_tool_calls`` is true: left unset, a small
  model would otherwise be free to repeat calls until ``max_tokens`` runs out.

llama.cpp compiles that schema to a GBNF grammar (``LlamaGrammar.from_json_schema``'s
converter), so the model can only produce a parseable answer of that shape. The grammar is
invisible to the model, so a system message also describes the format and the schemas.

The gateway side builds the plan (pure Python, cheap); the worker compiles the grammar
(``grammar_text``), generates, and reads the answer (``read_answer``). An answer cut short by
``max_tokens`` or a stop sequence is an error (``IncompleteStructuredOutput``), never broken
JSON. What the grammar does not enforce: numeric bounds, ``multipleOf``, ``format`` other than
date/time/date-time/uuid, ``uniqueItems``, ``not``/``if``/``then``/``else``, ``patternProperties``,
min/max properties, and ``oneOf`` exclusivity; those are left to the prompt and the gateway's
answer check.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    ErrorKind,
    ProviderError,
    ToolCall,
    ToolCallDelta,
)

ANSWER = "answer"
CALLS = "tool_calls"
#: JSON Schema types llama.cpp's converter has rules for.
_TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
#: Keywords whose values are subschemas (or maps/lists of them) the converter visits.
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAX_DEPTH = 48
#: Streamed argument fragments of a buffered call (characters).
_FRAGMENT = 16
_WORDS = re.compile(r"\s*\S+|\s+")
#: The start of the converter's string-character rule, and the same without control characters.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def _bad(message: str) -> ProviderError:
    return ProviderError(ErrorKind.BAD_REQUEST, message, code="UnsupportedSchema")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- plan (gateway side)


def plan(request: ChatRequest) -> dict[str, Any] | None:
    """The picklable plan for a structured request, or None for plain text.

    ``{"mode": "json" | "tools", "schema": <whole answer>, "instructions": <system text>}``;
    in tools mode ``"answer_json"`` says whether the text answer is JSON (a response_format).
    """
    fmt = _format_schema(request.response_format)
    tools = request.tools if request.tool_choice != "none" else []
    if not tools and request.tool_choice not in (None, "auto", "none"):
        raise ProviderError(
            ErrorKind.BAD_REQUEST,
            "tool_choice asks for a tool call, but no tools were offered",
            code="InvalidToolChoice",
        )
    if not tools:
        if fmt is None:
            return None
        schema, where = fmt
        check_schema(schema, where)
        defs: dict[str, Any] = {}
        body = _embed(schema, "answer", defs)
        return {
            "mode": "json",
            "schema": {**body, "$defs": defs} if defs else body,
            "instructions": _json_instructions(schema),
        }
    offered = _tools(tools)
    choice = request.tool_choice or "auto"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        offered = [t for t in offered if t["name"] == name]
        if not offered:
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                f"tool_choice names the function {name!r}, which is not among the tools offered",
                code="InvalidToolChoice",
            )
    elif choice not in ("auto", "required"):
        raise ProviderError(
            ErrorKind.BAD_REQUEST, f"unsupported tool_choice {choice!r}", code="InvalidToolChoice"
        )
    for tool in offered:
        check_schema(tool["parameters"], f"tools.{tool['name']}.parameters")
    if fmt is not None:
        check_schema(*fmt)
    answer = fmt[0] if fmt is not None else None
    parallel = bool(request.parallel_tool_calls)
    return {
        "mode": "tools",
        "schema": _tools_schema(offered, answer, only_calls=choice != "auto", parallel=parallel),
        "answer_json": answer is not None,
        "instructions": _tool_instructions(offered, choice, answer, parallel),
    }


def _tools_schema(
    tools: list[dict[str, Any]], answer: dict[str, Any] | None, *, only_calls: bool, parallel: bool
) -> dict[str, Any]:
    """``{"tool_calls": [...]}`` (with ``only_calls``), or that or ``{"answer": ...}``."""
    defs: dict[str, Any] = {}
    items = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool["name"]},
                "arguments": _embed(tool["parameters"], f"{tool['name']}-arguments", defs),
            },
            "required": ["name", "arguments"],
        }
        for tool in tools
    ]
    calls_list: dict[str, Any] = {"type": "array", "items": {"anyOf": items}, "minItems": 1}
    if not parallel:
        calls_list["maxItems"] = 1
    calls = {"type": "object", "properties": {CALLS: calls_list}, "required": [CALLS]}
    if only_calls:
        schema = calls
    else:
        value = _embed(answer, "answer", defs) if answer is not None else {"type": "string"}
        text = {"type": "object", "properties": {ANSWER: value}, "required": [ANSWER]}
        schema = {"anyOf": [text, calls]}
    return {**schema, "$defs": defs} if defs else schema


def _embed(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` that works inside the answer's schema, where every ``$ref`` resolves
    from the answer's root: its ``$defs``/``definitions`` move to the root's ``$defs`` under
    prefixed names (two tools may both define ``Address``, and llama.cpp's converter names a
    rule after the last part of a ref), and its refs are rewritten to match."""

    def move(ref: str) -> str:
        for key in ("$defs", "definitions"):
            head = f"#/{key}/"
            if ref.startswith(head):
                return f"#/$defs/{prefix}-{ref[len(head) :]}"
        if ref == "#" or ref.startswith("#/"):  # into the schema itself: keep a copy reachable
            defs[prefix] = body
            return f"#/$defs/{prefix}{ref[1:]}"
        return ref

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: move(v) if k == "$ref" and isinstance(v, str) else rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    own = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
    body: dict[str, Any] = {}
    body.update(rewrite(own))
    for key in ("definitions", "$defs"):
        for name, sub in (schema.get(key) or {}).items():
            defs[f"{prefix}-{name}"] = rewrite(sub)
    return body


def _format_schema(fmt: dict[str, Any] | None) -> tuple[dict[str, Any], str] | None:
    if not fmt or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "object"}, "response_format"
    if fmt["type"] == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema is None:  # OpenAI allows a json_schema without a schema: any JSON object
            schema = {"type": "object"}
        if not isinstance(schema, dict):
            raise _bad("response_format.json_schema.schema must be a JSON Schema object")
        return schema, "response_format.json_schema.schema"
    raise ProviderError(
        ErrorKind.BAD_REQUEST,
        f"unsupported response_format type {fmt['type']!r}",
        code="InvalidResponseFormat",
    )


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
            or not function.get("name")
        ):
            raise ProviderError(
                ErrorKind.BAD_REQUEST, "local chat models accept function tools only", code="InvalidTools"
            )
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        out.append(
            {
                "name": function["name"],
                "description": function.get("description") or "",
                "parameters": parameters,
            }
        )
    return out


def _json_instructions(schema: dict[str, Any]) -> str:
    if schema == {"type": "object"}:
        return "Reply with one JSON object only, and keep it short."
    return f"Reply with one JSON object only, matching this JSON Schema: {_compact(schema)}"


def _tool_instructions(
    tools: list[dict[str, Any]], choice: Any, answer: dict[str, Any] | None, parallel: bool
) -> str:
    lines = ["You can call these tools:"]
    for tool in tools:
        about = f" {tool['description']}" if tool["description"] else ""
        lines.append(f"- {tool['name']}:{about} Arguments: {_compact(tool['parameters'])}")
    call = '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}'
    many = " (several calls may go in the list)" if parallel else ""
    if isinstance(choice, dict):
        lines.append(f"You must call the tool {tools[0]['name']}. Reply with JSON only: {call}{many}")
    elif choice == "required":
        lines.append(f"You must call a tool. Reply with JSON only: {call}{many}")
    else:
        reply = '{"answer": "<your reply>"}'
        if answer is not None:
            reply = '{"answer": <a JSON object>}, the object matching this JSON Schema: ' + _compact(answer)
        lines.append(f"Reply with JSON only. To answer directly: {reply}. To call a tool: {call}{many}")
    return "\n".join(lines)


def check_schema(schema: Any, where: str, depth: int = 0) -> None:
    """Refuse, naming the place, what llama.cpp's schema-to-grammar converter cannot turn into a
    grammar (it would fail with a bare assertion) or would turn into one no valid answer fits."""
    if depth > _MAX_DEPTH:
        raise _bad(f"{where}: the schema nests deeper than {_MAX_DEPTH} levels")
    if not isinstance(schema, dict):
        raise _bad(
            f"{where}: llama.cpp's grammar converter needs a schema object here, not {_compact(schema)}"
        )
    kind = schema.get("type")
    for name in kind if isinstance(kind, list) else [kind] if kind is not None else []:
        if name not in _TYPES:
            raise _bad(f"{where}: unsupported type {_compact(name)}")
    ref = schema.get("$ref")
    if ref is not None and not (isinstance(ref, str) and (ref == "#" or ref.startswith("#/"))):
        raise _bad(f"{where}: only local $ref ('#/...') is supported, not {_compact(ref)}")
    pattern = schema.get("pattern")
    if pattern is not None and not (
        isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")
    ):
        raise _bad(f"{where}.pattern: llama.cpp needs patterns anchored as '^...$', got {_compact(pattern)}")
    if "enum" in schema and not schema["enum"]:
        raise _bad(f"{where}.enum is empty: no value can match")
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    if isinstance(properties, dict) and extra is not True and not isinstance(extra, dict):
        missing = [name for name in schema.get("required") or [] if name not in properties]
        if missing:
            raise _bad(
                f"{where} requires {', '.join(map(repr, missing))}, which is not among its properties: "
                "the grammar only produces listed properties"
            )
    for key in _SUBSCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items():
            check_schema(sub, f"{where}.{key}.{name}", depth + 1)
    for key in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            check_schema(sub, f"{where}.{key}[{i}]", depth + 1)
    items = schema.get("items")
    if isinstance(items, list):
        for i, sub in enumerate(items):
            check_schema(sub, f"{where}.items[{i}]", depth + 1)
    elif items is not None and items is not False:
        check_schema(items, f"{where}.items", depth + 1)
    if isinstance(extra, dict):
        check_schema(extra, f"{where}.additionalProperties", depth + 1)


# --------------------------------------------------------------------------- messages


def with_instructions(messages: list[dict[str, str]], instructions: str) -> list[dict[str, str]]:
    """The messages with the format instructions added to (or as) the leading system message."""
    if messages and messages[0]["role"] == "system":
        first = messages[0]["content"].rstrip()
        head = {"role": "system", "content": f"{first}\n\n{instructions}" if first else instructions}
        return [head, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


# --------------------------------------------------------------------------- worker side


def grammar_text(schema: dict[str, Any]) -> str:
    """GBNF for ``schema`` with llama.cpp's converter; its failures become a BAD_REQUEST.

    One repair: the converter's string character rule admits raw control characters (a
    newline inside a string), which JSON forbids, so such an answer would not parse; here a
    string character is anything but a quote, a backslash or a control character (as in
    llama.cpp's own json.gbnf), and escapes such as ``\\n`` stay allowed.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        text = json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:
        raise _bad(
            "llama.cpp cannot turn the requested JSON Schema into a grammar: it recurses too deeply"
        ) from None
    except Exception as exc:  # the converter reports problems as assertions and KeyErrors
        raise _bad(
            f"llama.cpp cannot turn the requested JSON Schema into a grammar: {exc or type(exc).__name__}"
        ) from None
    return text.replace(_LOOSE_CHAR, _JSON_CHAR)


def read_answer(text: str, structured: dict[str, Any], finish: str, model: str, tokens: int) -> ChatResult:
    """The generated JSON as a result: the text, or the tool calls. Raises when it is incomplete."""
    try:
        value = json.loads(text)
    except ValueError:
        if finish == "length":
            why = (
                f"reached max_tokens ({tokens} tokens) before its JSON answer was complete; raise max_tokens"
            )
        else:
            why = "was cut by a stop sequence before its JSON answer was complete"
        raise ProviderError(
            ErrorKind.UNAVAILABLE, f"the local model '{model}' {why}", code="IncompleteStructuredOutput"
        ) from None
    if structured["mode"] != "tools":
        return ChatResult(text=text, finish_reason="stop", model=model)
    if CALLS in value:
        calls = [
            ToolCall(
                id=f"call_{secrets.token_hex(12)}",
                name=call["name"],
                arguments=json.dumps(call["arguments"], ensure_ascii=False),
                index=i,
            )
            for i, call in enumerate(value[CALLS])
        ]
        return ChatResult(text="", finish_reason="tool_calls", model=model, tool_calls=calls)
    answer = value[ANSWER]
    if structured.get("answer_json"):
        answer = json.dumps(answer, ensure_ascii=False)
    return ChatResult(text=answer, finish_reason="stop", model=model)


def replay(result: ChatResult) -> list[ChatChunk]:
    """A buffered answer as stream chunks: text in word-sized pieces, or each call as a piece with
    its id, name and first arguments, then argument fragments; last, finish_reason and usage."""
    chunks = [ChatChunk(delta=piece) for piece in _WORDS.findall(result.text)]
    for call in result.tool_calls:
        args = call.arguments
        head = ToolCallDelta(call.index, id=call.id, name=call.name, arguments=args[:_FRAGMENT])
        chunks.append(ChatChunk(tool_calls=[head]))
        for at in range(_FRAGMENT, len(args), _FRAGMENT):
            chunks.append(
                ChatChunk(tool_calls=[ToolCallDelta(call.index, arguments=args[at : at + _FRAGMENT])])
            )
    chunks.append(ChatChunk(finish_reason=result.finish_reason, usage=result.usage))
    return chunks
