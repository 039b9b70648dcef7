"""Unknown keys in the YAML config file: a typo there must stop start-up, not be ignored.

Pydantic ignores keys it has no field for (the settings allow extra keys so that unrelated
``TALKGATE_*`` variables do not break start-up), so ``saas: {usage_flush_intervl_s: 5}``
would silently keep the default. The YAML source checks its keys against the settings'
models before they are validated, and names every unknown key with its dotted path and the
nearest known name.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from pydantic import AliasChoices, BaseModel


def _known_names(model: type) -> dict[str, Any]:
    """Field name (and alias) -> annotation, for a pydantic model or a dataclass."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        names: dict[str, Any] = {}
        for name, field in model.model_fields.items():
            names[name] = field.annotation
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias or field.alias]
            for choice in choices:
                if isinstance(choice, str):
                    names[choice] = field.annotation
        return names
    if dataclasses.is_dataclass(model):
        hints = typing.get_type_hints(model)
        return {f.name: hints.get(f.name) for f in dataclasses.fields(model)}
    return {}


def _structured(annotation: Any) -> tuple[type | None, type | None]:
    """``(model, None)`` for a model field, ``(None, model)`` for ``dict[str, model]``; else Nones."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # Optional[...]
        for arg in typing.get_args(annotation):
            found = _structured(arg)
            if found != (None, None):
                return found
        return None, None
    if origin is dict:
        args = typing.get_args(annotation)
        value = args[1] if len(args) == 2 else None
        return None, value if _known_names(value) else None
    return (annotation if _known_names(annotation) else None), None


def unknown_keys(model: type, data: Any, prefix: str = "") -> list[str]:
    """``"path.key (did you mean 'name'?)"`` for each key of ``data`` that ``model`` does not have."""
    if not isinstance(data, dict):
        return []  # a wrong type is pydantic's to report
    known = _known_names(model)
    problems: list[str] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            problems.append(f"{path} (did you mean '{close[0]}'?)" if close else path)
            continue
        nested, mapped = _structured(known[key])
        if nested is not None:
            problems += unknown_keys(nested, value, f"{path}.")
        elif mapped is not None and isinstance(value, dict):
            for name, item in value.items():
                problems += unknown_keys(mapped, item, f"{path}.{name}.")
    return problems
