"""OpenAI vector-store attribute filters, evaluated on a file's attributes.

Comparison: ``{"key", "type": eq|ne|gt|gte|lt|lte|in|nin, "value"}``; compound:
``{"type": and|or, "filters": [...]}`` (openai/types/shared_params/comparison_filter.py,
compound_filter.py). Attributes belong to a store's file, so a filter is evaluated once per file
and becomes a mask over that file's chunks. ``check`` refuses a malformed filter up front (400),
so evaluation never fails halfway through a search.
"""

from __future__ import annotations

from typing import Any

COMPARISONS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"})
COMPOUNDS = frozenset({"and", "or"})
MAX_DEPTH = 8


class FilterError(ValueError):
    pass


def check(spec: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(f"filters nest deeper than {MAX_DEPTH} levels")
    if not isinstance(spec, dict):
        raise FilterError("a filter must be an object")
    kind = spec.get("type")
    if kind in COMPOUNDS:
        inner = spec.get("filters")
        if not isinstance(inner, list) or not inner:
            raise FilterError(f"an '{kind}' filter needs a non-empty 'filters' list")
        for item in inner:
            check(item, depth + 1)
        return
    if kind not in COMPARISONS:
        raise FilterError(f"filter type must be one of {sorted(COMPARISONS | COMPOUNDS)}")
    if not isinstance(spec.get("key"), str):
        raise FilterError("a comparison filter needs a string 'key'")
    value = spec.get("value")
    if kind in ("in", "nin"):
        if not isinstance(value, list):
            raise FilterError(f"'{kind}' needs a list 'value'")
    elif not isinstance(value, str | int | float | bool):
        raise FilterError("a comparison 'value' must be a string, number or boolean")


def matches(spec: dict[str, Any], attributes: dict[str, Any]) -> bool:
    kind = spec["type"]
    if kind == "and":
        return all(matches(f, attributes) for f in spec["filters"])
    if kind == "or":
        return any(matches(f, attributes) for f in spec["filters"])
    if spec["key"] not in attributes:
        return kind in ("ne", "nin")
    have, want = attributes[spec["key"]], spec["value"]
    if kind == "eq":
        return have == want
    if kind == "ne":
        return have != want
    if kind == "in":
        return have in want
    if kind == "nin":
        return have not in want
    try:
        return {"gt": have > want, "gte": have >= want, "lt": have < want, "lte": have <= want}[kind]
    except TypeError:  # comparing a string with a number: no match
        return False
