"""Deterministic minimal JSON Schema instances, for simulated tool arguments and JSON-schema replies.

Why: a client validates what Bailian returns against the schema it sent, so the simulator must
produce a valid instance without a model. The rule is "the smallest obviously valid instance":
required properties only (plus properties the prompt names, below), ``minItems`` items, the first
``enum`` value, ``const``, the number closest to 0 that the bounds allow, ``false``, a short
placeholder string (``"sim-<property>"``, or a sample for a known ``format``). The same schema and
prompt always give the same instance.

Prompt hints: a property whose name appears in the prompt followed by a value (``city Paris``,
``city: Paris``, ``city = "New York"``, ``unit is celsius``; underscores/hyphens in the name also
match spaces) takes that value when it fits the property's schema (type, enum, bounds); an
optional property named that way is included too.

Honoured: type (also lists), enum, const, properties, required, minProperties, items, prefixItems
(and draft-4 tuple ``items``), minItems, uniqueItems, contains, minLength, maxLength, format (date,
date-time, time, email, uri, uuid, ipv4, ipv6, hostname), minimum, maximum, exclusiveMinimum/
exclusiveMaximum (draft-6 numbers and draft-4 booleans), multipleOf, local ``$ref`` (``#/...``),
allOf (merged), anyOf (first branch that is not only null), oneOf (first branch whose instance
matches exactly one branch). Not honoured: pattern, patternProperties, not, if/then/else,
dependentRequired/dependentSchemas, remote ``$ref``; recursion stops after 24 levels.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DEPTH = 24
_FORMATS = {
    "date": "2025-01-01",
    "date-time": "2025-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "sim@example.com",
    "idn-email": "sim@example.com",
    "uri": "https://example.com/sim",
    "iri": "https://example.com/sim",
    "uri-reference": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "example.com",
}
_VALUE = r"\s*(?:[:=]|\bis\b)?\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s,;!?\"'()\[\]{}]+))"
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def generate(schema: Any, prompt: str = "") -> Any:
    """A valid (see the module notes for limits) instance of ``schema``."""
    return _Gen(schema, prompt).value(schema, "", 0)


def invalid_instance(schema: Any) -> tuple[bool, Any]:
    """(True, a JSON value that violates ``schema``), or (False, None) if every JSON value is valid.

    Tries an object without the required properties first (the most realistic model mistake),
    then values of the wrong type; jsonschema decides which one the schema rejects.
    """
    for candidate in ({"_sim_invalid": True}, ["_sim_invalid"], "_sim_invalid", True, 12345.5, None):
        if _is_valid(schema, candidate) is False:
            return True, candidate
    return False, None


def _is_valid(schema: Any, instance: Any) -> bool | None:
    """jsonschema's verdict, or None when the schema itself cannot be used."""
    try:
        from jsonschema import Draft202012Validator
        from jsonschema.validators import validator_for

        cls = validator_for(schema, default=Draft202012Validator)
        return bool(cls(schema).is_valid(instance))
    except Exception:  # a malformed schema or unresolvable $ref: no verdict
        return None


def _camel_split(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [p for p in re.split(r"[\s_\-]+", spaced) if p]


class _Gen:
    def __init__(self, root: Any, prompt: str) -> None:
        self.root = root
        self.prompt = prompt or ""

    # -- schema plumbing ---------------------------------------------------------------------
    def _pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return {}
        return node

    def resolve(self, schema: Any) -> dict[str, Any] | None:
        """A dict schema with ``$ref`` and ``allOf`` folded in; None for "anything"/"nothing"."""
        if not isinstance(schema, dict):
            return None
        s = dict(schema)
        for _ in range(32):
            ref = s.pop("$ref", None)
            if not isinstance(ref, str):
                break
            target = self._pointer(ref)
            s = {**target, **s} if isinstance(target, dict) else s
        parts = s.pop("allOf", None)
        if isinstance(parts, list):
            for part in parts:
                s = _merge(s, self.resolve(part) or {})
        return s

    def hint(self, name: str) -> str | None:
        parts = _camel_split(name)
        if not parts or not self.prompt:
            return None
        pattern = r"(?<!\w)" + r"[\s_\-]*".join(map(re.escape, parts)) + r"(?!\w)" + _VALUE
        match = re.search(pattern, self.prompt, re.IGNORECASE)
        if match is None:
            return None
        value = next(g for g in match.groups() if g is not None)
        return value if match.group(1) is not None or match.group(2) is not None else value.rstrip(".")

    # -- generation --------------------------------------------------------------------------
    def value(self, schema: Any, name: str, depth: int, variant: int = 0) -> Any:
        s = self.resolve(schema)
        if s is None or depth > MAX_DEPTH:
            return None
        if "const" in s:
            return s["const"]
        hint = self.hint(name) if name else None
        enum = s.get("enum")
        if isinstance(enum, list) and enum:
            if hint is not None:
                for option in enum:
                    if isinstance(option, str) and option.casefold() == hint.casefold():
                        return option
            return enum[variant % len(enum)]
        for key in ("anyOf", "oneOf"):
            branches = s.get(key)
            if isinstance(branches, list) and branches:
                rest = {k: v for k, v in s.items() if k not in ("anyOf", "oneOf")}
                return self._branch(s, rest, key, branches, name, depth, variant)
        kind = _type_of(s)
        if kind == "object":
            return self._object(s, depth)
        if kind == "array":
            return self._array(s, name, depth)
        if kind == "string":
            return self._string(s, name, hint, variant)
        if kind in ("integer", "number"):
            return _number(s, kind == "integer", hint, variant)
        if kind == "boolean":
            if hint is not None and hint.lower() in _TRUE | _FALSE:
                return hint.lower() in _TRUE
            return variant % 2 == 1
        return None

    def _branch(
        self,
        whole: dict[str, Any],
        rest: dict[str, Any],
        key: str,
        branches: list[Any],
        name: str,
        depth: int,
        variant: int,
    ) -> Any:
        ordered = [b for b in branches if _type_of(self.resolve(b) or {}) != "null"] + [
            b for b in branches if _type_of(self.resolve(b) or {}) == "null"
        ]
        candidates = [
            self.value(_merge(rest, self.resolve(b) or {}), name, depth + 1, variant) for b in ordered
        ]
        if key == "oneOf":
            # Exactly one branch may match: also try the next few variants of each branch
            # (0 fits both "integer" and "number"; 0.5 fits only the latter).
            defs = _defs(self.root)
            merged = [_merge(rest, self.resolve(b) or {}) for b in ordered]
            tries = candidates + [self.value(m, name, depth + 1, variant + v) for v in (1, 2) for m in merged]
            for candidate in tries:
                hits = sum(
                    _is_valid({**defs, **(self.resolve(b) or {})}, candidate) is not False for b in branches
                )
                if hits == 1:
                    return candidate
        return candidates[0]

    def _object(self, s: dict[str, Any], depth: int) -> dict[str, Any]:
        props = s.get("properties") if isinstance(s.get("properties"), dict) else {}
        required = [r for r in s.get("required", []) if isinstance(r, str)]
        keys = list(dict.fromkeys(required + [k for k in props if self.hint(k) is not None]))
        minimum = s.get("minProperties")
        if isinstance(minimum, int):
            for k in props:
                if len(keys) >= minimum:
                    break
                if k not in keys:
                    keys.append(k)
        extra = s.get("additionalProperties")
        fallback = extra if isinstance(extra, dict) else {}
        return {k: self.value(props.get(k, fallback), k, depth + 1) for k in keys}

    def _array(self, s: dict[str, Any], name: str, depth: int) -> list[Any]:
        items = s.get("items")
        prefix = s.get("prefixItems") if isinstance(s.get("prefixItems"), list) else []
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, s.get("additionalItems", {})
        count = s.get("minItems") if isinstance(s.get("minItems"), int) else 0
        contains = s.get("contains")
        need = 0
        if isinstance(contains, dict):
            need = s.get("minContains") if isinstance(s.get("minContains"), int) else 1
            count = max(count, need)
        unique = s.get("uniqueItems") is True
        out = []
        for i in range(count):
            sub: Any = prefix[i] if i < len(prefix) else (items if items is not None else {})
            if i < need:
                sub = {"allOf": [sub if isinstance(sub, dict) else {}, contains]}
            out.append(self.value(sub, name, depth + 1, variant=i if unique else 0))
        return out

    def _string(self, s: dict[str, Any], name: str, hint: str | None, variant: int) -> str:
        low = s.get("minLength") if isinstance(s.get("minLength"), int) else 0
        high = s.get("maxLength") if isinstance(s.get("maxLength"), int) else None
        if hint is not None and len(hint) >= low and (high is None or len(hint) <= high):
            return hint
        fmt = s.get("format")
        text = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        if text is None:
            text = f"sim-{name}" if name else "simulated"
            if variant:
                text = f"{text}-{variant}"
        if len(text) < low:
            text += "x" * (low - len(text))
        if high is not None and len(text) > high:
            suffix = str(variant) if variant else ""
            text = (text[: max(high - len(suffix), 0)] + suffix)[:high]
        return text


def _defs(root: Any) -> dict[str, Any]:
    """The definition sections of the root, so a sub-schema's local ``$ref`` still resolves."""
    if not isinstance(root, dict):
        return {}
    return {k: root[k] for k in ("$defs", "definitions") if k in root}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Shallow allOf merge: properties joined, required united, other keywords from ``b`` win."""
    out = {**a, **b}
    if isinstance(a.get("properties"), dict) and isinstance(b.get("properties"), dict):
        props = dict(a["properties"])
        for k, v in b["properties"].items():
            props[k] = {"allOf": [props[k], v]} if k in props else v
        out["properties"] = props
    if isinstance(a.get("required"), list) and isinstance(b.get("required"), list):
        out["required"] = list(dict.fromkeys(a["required"] + b["required"]))
    if "type" in a and "type" in b and a["type"] != b["type"]:
        wanted = {a["type"]} if isinstance(a["type"], str) else set(a["type"])
        out["type"] = b["type"] if isinstance(b["type"], str) and b["type"] in wanted else a["type"]
    return out


def _type_of(s: dict[str, Any]) -> str | None:
    kind = s.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list) and kind:
        return next((k for k in kind if k != "null"), "null")
    if any(k in s for k in ("properties", "required", "additionalProperties", "minProperties")):
        return "object"
    if any(k in s for k in ("items", "prefixItems", "minItems", "contains")):
        return "array"
    if any(k in s for k in ("minLength", "maxLength", "format", "pattern")):
        return "string"
    if any(k in s for k in ("minimum", "maximum", "multipleOf", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return None


def _fits(x: float, s: dict[str, Any], integer: bool) -> bool:
    if integer and x != int(x):
        return False
    lo, hi = s.get("minimum"), s.get("maximum")
    xlo, xhi = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    if isinstance(xlo, bool):  # draft 4: a flag on minimum
        xlo = lo if xlo else None
        lo = None if xlo is not None else lo
    if isinstance(xhi, bool):
        xhi = hi if xhi else None
        hi = None if xhi is not None else hi
    checks = (
        (lo, lambda v: x >= v),
        (hi, lambda v: x <= v),
        (xlo, lambda v: x > v),
        (xhi, lambda v: x < v),
    )
    if any(isinstance(v, int | float) and not ok(v) for v, ok in checks):
        return False
    step = s.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        quotient = x / step
        return quotient == int(quotient)
    return True


def _number(s: dict[str, Any], integer: bool, hint: str | None, variant: int) -> int | float:
    """The ``variant``-th valid number closest to 0 (a prompt hint first, when it fits)."""
    step = s.get("multipleOf")
    step = step if isinstance(step, int | float) and not isinstance(step, bool) and step > 0 else None
    if hint is not None and variant == 0:
        try:
            wanted = float(hint)
        except ValueError:
            wanted = math.nan
        if math.isfinite(wanted) and _fits(wanted, s, integer):
            return _tidy(wanted)
    bounds = {
        k: float(v)
        for k, v in s.items()
        if k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        and isinstance(v, int | float)
        and not isinstance(v, bool)
    }
    anchors = [0.0, *bounds.values()]
    lows = [v for k, v in bounds.items() if k.endswith("inimum")]
    highs = [v for k, v in bounds.items() if k.endswith("aximum")]
    if lows and highs:
        anchors.append((max(lows) + min(highs)) / 2)
    candidates: set[float] = set()
    for anchor in anchors:
        span = range(-2, 3 + variant)
        if step:
            base = math.ceil(anchor / step)
            candidates.update((base + k) * step for k in span)
        elif integer:
            candidates.update(math.ceil(anchor) + k for k in span)
        else:
            candidates.update(anchor + k * 0.5 for k in span)
    valid = sorted((c for c in candidates if _fits(c, s, integer)), key=lambda c: (abs(c), c))
    if not valid:
        return 0
    return _tidy(valid[min(variant, len(valid) - 1)])


def _tidy(x: float) -> int | float:
    return int(x) if x == int(x) else x
