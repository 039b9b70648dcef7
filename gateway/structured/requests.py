"""Tools, tool choice and response formats of a chat request: checked before any provider runs.

Why: a tool whose ``parameters`` is not a JSON Schema, a ``tool_choice`` naming a tool that was
not offered, or a ``tool`` result answering no call would otherwise reach the upstream and come
back as an opaque upstream error (or, on the local path, as a grammar that cannot compile). Each
is a 400 here, naming the path of the problem (``tools[0].function.parameters.properties.city``).
Schemas are checked against JSON Schema 2020-12 with the ``jsonschema`` library.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from gateway.errors import APIError
from gateway.inputs.echo import echo

#: OpenAI's rule for function names.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 128


def _bad(message: str, param: str, code: str = "invalid_request_error") -> APIError:
    return APIError(400, message, param=param, code=code)


def check_schema(schema: Any, param: str) -> dict[str, Any]:
    """A JSON Schema object, or a 400 naming where it is wrong."""
    if not isinstance(schema, dict):
        raise _bad(f"{param} must be a JSON Schema object.", param, "invalid_schema")
    try:
        problem = _schema_problem(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    except TypeError:  # not JSON at all (cannot come from a parsed body)
        problem = ("", "it is not JSON")
    if problem is not None:
        where, message = problem
        raise _bad(
            f"{param}{where} is not valid JSON Schema: {echo(message)}", f"{param}{where}", "invalid_schema"
        )
    return schema


@lru_cache(maxsize=1024)
def _schema_problem(schema_json: bytes) -> tuple[str, str] | None:
    """Checking against the 2020-12 meta-schema takes ~0.5 ms a schema; clients send the same
    tools on every turn, so results are kept per schema text (bench/structured.py)."""
    try:
        Draft202012Validator.check_schema(orjson.loads(schema_json))
    except SchemaError as exc:
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path), exc.message
    return None


def check_tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI function tools, each with a valid name and parameter schema."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad("tools must be a list of function tools.", "tools")
    if len(tools) > MAX_TOOLS:
        raise _bad(f"at most {MAX_TOOLS} tools are accepted, got {len(tools)}.", "tools")
    seen: set[str] = set()
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(tool.get("function"), dict)
        ):
            raise _bad(f'{where} must be {{"type": "function", "function": {{...}}}}.', where)
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _bad(f"{where}.function.name must match ^[A-Za-z0-9_-]{{1,64}}$.", f"{where}.function.name")
        if name in seen:
            raise _bad(f"{where}: the tool name '{name}' is used twice.", f"{where}.function.name")
        seen.add(name)
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        check_schema(parameters, f"{where}.function.parameters")
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise _bad(f"{where}.function.description must be a string.", f"{where}.function.description")
        clean: dict[str, Any] = {"name": name, "parameters": parameters}
        if description:
            clean["description"] = description
        if function.get("strict") is not None:
            clean["strict"] = bool(function["strict"])
        out.append({"type": "function", "function": clean})
    return out


def check_tool_choice(choice: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    names = {t["function"]["name"] for t in tools}
    if choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise _bad("tool_choice 'required' needs at least one tool in 'tools'.", "tool_choice")
        return choice
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
    ):
        name = choice["function"].get("name")
        if name not in names:
            raise _bad(
                f"tool_choice names the function '{echo(name)}', which is not among the tools offered.",
                "tool_choice.function.name",
            )
        return {"type": "function", "function": {"name": name}}
    raise _bad(
        'tool_choice must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}.',
        "tool_choice",
    )


def check_response_format(fmt: Any) -> dict[str, Any] | None:
    """``None`` for plain text; the format otherwise (json_object, or json_schema with a valid schema)."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad('response_format.type must be "text", "json_object" or "json_schema".', "response_format")
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    spec = fmt.get("json_schema")
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("name"), str)
        or not TOOL_NAME.match(spec["name"])
    ):
        raise _bad(
            "response_format.json_schema needs a 'name' (^[A-Za-z0-9_-]{1,64}$) and a 'schema'.",
            "response_format.json_schema",
        )
    schema = check_schema(spec.get("schema", {}), "response_format.json_schema.schema")
    return {
        "type": "json_schema",
        "json_schema": {"name": spec["name"], "schema": schema, "strict": bool(spec.get("strict", False))},
    }


def check_tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` (what an earlier answer returned), normalised."""
    if not isinstance(calls, list) or not calls:
        raise _bad(f"{where}.tool_calls must be a non-empty list.", f"{where}.tool_calls")
    out = []
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(function, dict)
        ):
            raise _bad(f'{at} must have an "id" and a "function".', at)
        if not isinstance(function.get("name"), str) or not isinstance(function.get("arguments", ""), str):
            raise _bad(f"{at}.function needs a 'name' and 'arguments' as a JSON string.", f"{at}.function")
        out.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": function.get("arguments", "")},
            }
        )
    return out


def check_tool_results(messages: list[dict[str, Any]]) -> None:
    """Every ``tool`` message answers a call made by an earlier assistant message."""
    called: set[str] = set()
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            called.update(c["id"] for c in message.get("tool_calls") or ())
        elif message["role"] == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in called:
                raise _bad(
                    f"messages[{i}] is a tool result for '{echo(call_id)}', but no earlier assistant "
                    "message made a call with that id.",
                    f"messages[{i}].tool_call_id",
                )
