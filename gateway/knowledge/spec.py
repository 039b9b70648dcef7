"""The ``knowledge`` field of chat, ``/v1/talk`` and realtime sessions: its shape, who may name
stores, and which stores a request that names none is grounded in.

One place for the rules the three surfaces share (each turns the errors into its own wire form):

- ``{"vector_store_ids": [...], "max_num_results": 5}`` names stores. Naming them needs the key's
  ``knowledge:read`` scope: grounding is a search whose passages the caller reads back (in the
  answer and its citations), so it needs the scope that ``/v1/vector_stores/{id}/search`` needs.
- A request that names none is grounded in its key's default (set with the admin API), else in
  its tenant's (``knowledge.tenant_default_stores``). Defaults are an operator's choice, checked
  against the tenant when they are set, and need no scope on the key.
- ``{"vector_store_ids": []}`` opts out: no grounding, not even a default. (``"knowledge": null``
  cannot mean that: in a JSON body it is indistinguishable from a missing field.)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

READ_SCOPE = "knowledge:read"
DEFAULT_RESULTS = 5
MAX_RESULTS = 20
#: Stores one request (or one key's default) may name.
MAX_DEFAULT_STORES = 10


class KnowledgeField(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: empty: this request opts out of grounding (and of the key's or tenant's default stores)
    vector_store_ids: list[str] = Field(max_length=MAX_DEFAULT_STORES)
    max_num_results: int = Field(default=DEFAULT_RESULTS, ge=1, le=MAX_RESULTS)


class KnowledgeSpecError(ValueError):
    """A ``knowledge`` value that does not validate; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class KnowledgeScopeError(PermissionError):
    """The request names stores but its key lacks ``knowledge:read``."""

    def __init__(self, param: str) -> None:
        super().__init__(
            f"Grounding in vector stores ({param}) needs an API key with the '{READ_SCOPE}' scope; "
            "this key lacks it. Ask for a key with that scope, or leave the field out."
        )
        self.param = param


def parse_spec(raw: Any, prefix: str = "knowledge") -> dict[str, Any] | None:
    """A checked ``knowledge`` object (``None`` stays None: the request names nothing)."""
    if raw is None:
        return None
    try:
        return KnowledgeField.model_validate(raw).model_dump()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in first["loc"])
        param = f"{prefix}.{where}" if where else prefix
        raise KnowledgeSpecError(f"{param}: {first['msg']}", param) from None


def check_read(spec: dict[str, Any] | None, scopes: Collection[str], param: str = "knowledge") -> None:
    """Raises KnowledgeScopeError when ``spec`` names stores and ``scopes`` lack knowledge:read."""
    if spec is not None and spec["vector_store_ids"] and READ_SCOPE not in scopes:
        raise KnowledgeScopeError(param)


def effective_spec(
    spec: dict[str, Any] | None, key_default: dict[str, Any] | None, tenant_stores: list[str] | None
) -> dict[str, Any] | None:
    """The stores a turn is grounded in: the request's own, else the key's default, else the
    tenant's; None for no grounding (nothing configured, or the request opted out)."""
    if spec is None:
        if key_default and key_default.get("vector_store_ids"):
            spec = {"max_num_results": DEFAULT_RESULTS, **key_default}
        elif tenant_stores:
            spec = {"vector_store_ids": list(tenant_stores), "max_num_results": DEFAULT_RESULTS}
    if spec is None or not spec["vector_store_ids"]:
        return None
    return spec


def principal_scopes(principal: Any) -> Collection[str]:
    """The scopes of a caller (gateway.auth.Principal); no principal (in-process use) has all."""
    if principal is None:
        return (READ_SCOPE,)
    return principal.scopes


def principal_default(principal: Any) -> dict[str, Any] | None:
    return getattr(principal, "knowledge", None) if principal is not None else None
