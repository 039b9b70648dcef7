"""Grounding a spoken turn in the knowledge base: the same rules as grounded chat
(gateway/knowledge_chat.py), for ``/v1/talk``, realtime sessions and the live avatar.

The turn names stores with ``{"vector_store_ids": [...], "max_num_results": 5}`` (or the tenant
has default stores). The last user text is the query; with no passage good enough, the turn
speaks the fixed decline instead of calling the LLM (no invented refund policy, nothing billed);
otherwise the passages go into the prompt and the answer's citation markers become citations
(the markers are shown in transcripts and never read aloud: gateway/conversation/sentences.py).
The retriever is injected (``services.retriever``), so this module knows no storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.knowledge.grounding import Grounding, Retriever
from gateway.knowledge_chat import KnowledgeField, last_user_text, summary


class KnowledgeSpecError(ValueError):
    """A ``knowledge`` value that does not validate; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def parse_spec(raw: Any, prefix: str = "knowledge") -> dict[str, Any] | None:
    """A checked ``knowledge`` object (``None`` stays None: no grounding)."""
    if raw is None:
        return None
    try:
        return KnowledgeField.model_validate(raw).model_dump()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in first["loc"])
        raise KnowledgeSpecError(f"{prefix}.{where}: {first['msg']}", f"{prefix}.{where}") from None


@dataclass(slots=True)
class TurnGrounding:
    grounding: Grounding

    @property
    def answerable(self) -> bool:
        return self.grounding.answerable

    def decline_text(self) -> str:
        return self.grounding.decline_text()

    def ground(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.grounding.ground(messages)

    def summary(self, answer: str) -> dict[str, Any]:
        """``{"citations": [...], "knowledge": {...}}`` for the turn's answer."""
        return summary(self.grounding, answer)


async def ground_turn(
    retriever: Retriever | None,
    settings: Any,
    tenant: str,
    spec: dict[str, Any] | None,
    messages: list[dict[str, Any]],
    ctx: Any,
) -> TurnGrounding | None:
    """The turn's grounding, or None when it names no stores (and the tenant has no defaults).
    Raises LookupError-like ``gateway.knowledge.service.NotFound`` for a store not the tenant's."""
    if spec is None:
        defaults = settings.knowledge.tenant_default_stores.get(tenant)
        if not defaults:
            return None
        spec = {"vector_store_ids": list(defaults), "max_num_results": 5}
    if retriever is None:
        return None
    query = last_user_text(messages)
    if not query:
        return None
    grounding = await retriever.retrieve(
        tenant, query, spec["vector_store_ids"], spec["max_num_results"], parent=ctx
    )
    return TurnGrounding(grounding)
