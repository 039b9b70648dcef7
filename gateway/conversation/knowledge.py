"""Grounding a spoken turn in the knowledge base: the same rules as grounded chat
(gateway/knowledge_chat.py), for ``/v1/talk``, realtime sessions and the live avatar.

The turn names stores with ``{"vector_store_ids": [...], "max_num_results": 5}`` (or its key or
tenant has default stores; gateway/knowledge/spec.py has the rules). The last user text is the query; with no passage good enough, the turn
speaks the fixed decline instead of calling the LLM (no invented refund policy, nothing billed);
otherwise the passages go into the prompt and the answer's citation markers become citations
(the markers are shown in transcripts and never read aloud: gateway/conversation/sentences.py).
The retriever is injected (``services.retriever``), so this module knows no storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.knowledge.grounding import Grounding, Retriever
from gateway.knowledge.spec import (
    KnowledgeScopeError,
    KnowledgeSpecError,
    check_read,
    effective_spec,
    parse_spec,
    principal_default,
    principal_scopes,
)
from gateway.knowledge_chat import last_user_text, summary

__all__ = [
    "KnowledgeScopeError",
    "KnowledgeSpecError",
    "TurnGrounding",
    "check_read",
    "ground_turn",
    "parse_spec",
    "parse_turn_spec",
]


def parse_turn_spec(raw: Any, principal: Any, prefix: str = "knowledge") -> dict[str, Any] | None:
    """``parse_spec`` plus the scope check: raises KnowledgeSpecError (a bad value) or
    KnowledgeScopeError (stores named by a key without knowledge:read)."""
    spec = parse_spec(raw, prefix)
    check_read(spec, principal_scopes(principal), prefix)
    return spec


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
    principal: Any = None,
) -> TurnGrounding | None:
    """The turn's grounding, or None when it names no stores (and neither its key nor its tenant
    has defaults, or it opted out). ``spec`` comes from ``parse_turn_spec`` (scope checked).
    Raises LookupError-like ``gateway.knowledge.service.NotFound`` for a store not the tenant's."""
    spec = effective_spec(
        spec, principal_default(principal), settings.knowledge.tenant_default_stores.get(tenant)
    )
    if spec is None or retriever is None:
        return None
    query = last_user_text(messages)
    if not query:
        return None
    grounding = await retriever.retrieve(
        tenant, query, spec["vector_store_ids"], spec["max_num_results"], parent=ctx
    )
    return TurnGrounding(grounding)
