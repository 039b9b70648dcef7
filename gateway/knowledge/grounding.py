"""Grounded answers: retrieve passages, put them in the prompt, check the citations in the answer.

``Retriever`` is the seam the chat route, ``/v1/talk`` and the realtime session share (they get an
instance injected; this package knows no chat wire format). ``retrieve`` returns a ``Grounding``:

- ``answerable`` is False when none of the top 3 passages reaches ``answer_min_score`` nor covers
  ``answer_min_support`` of the question's words: callers then answer with ``decline_text()``
  without calling the model (a customer-service bot must not invent a refund policy, and even a
  small local model cannot if it is not asked). Two signals because scores mean different things
  per mode (reranker relevance, cosine, saturated BM25) while word coverage means the same in all.
- ``system_message()`` numbers the passages [1]..[n] and tells the model to cite them and to say
  it does not know when they do not answer; the local fallback model gets the same prompt.
- ``citations(answer)`` maps the answer's [n] / 【n】 markers back to passages; a number that names
  no retrieved passage is dropped (and counted), so every citation's text is text that was
  actually retrieved for this question (the "[5] of 4 sources" complaint of reference §6.3).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.knowledge.search import Hit

_MARKER = re.compile(r"\[(\d{1,2})\]|【(\d{1,2})】")
_CJK = re.compile(r"[\u4e00-\u9fff]")
QUOTE_CHARS = 200

INSTRUCTIONS = (
    "Answer the customer's question using ONLY the numbered passages below from the company's "
    "knowledge base. After each statement, cite the passage(s) it comes from by number in square "
    "brackets, e.g. [1] or [2][3]. If the passages do not contain the answer, say plainly that you do "
    "not know and offer to connect the customer with a human agent; never invent policies, prices, "
    "dates or procedures. Answer in the customer's language.\n"
    "请只根据下面编号的资料回答，并在每句后用方括号标注引用的资料编号（如 [1]）；"
    "资料中没有答案时请直接说明不知道，并建议转人工客服，不要编造政策、价格或日期。"
)
DECLINE_ZH = "抱歉，我们的知识库里没有找到这个问题的答案。我可以为您转接人工客服。"
DECLINE_EN = (
    "Sorry, I could not find the answer to that in our knowledge base. I can connect you with a human agent."
)


@dataclass(frozen=True, slots=True)
class Passage:
    number: int  # 1-based, as shown to the model
    hit: Hit


@dataclass(slots=True)
class Grounding:
    query: str
    passages: list[Passage]
    answerable: bool
    mode: str = "lexical"
    searched: int = 0  # passages retrieved before the score threshold
    dropped_citations: list[int] = field(default_factory=list)

    def system_message(self) -> dict[str, str]:
        blocks = []
        for p in self.passages:
            where = " > ".join(x for x in (p.hit.filename, p.hit.heading) if x)
            blocks.append(f"[{p.number}] ({where})\n{p.hit.text}")
        return {"role": "system", "content": INSTRUCTIONS + "\n\nPassages:\n\n" + "\n\n".join(blocks)}

    def ground(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation with the passages as a system message after the caller's own ones."""
        lead = 0
        while lead < len(messages) and messages[lead].get("role") == "system":
            lead += 1
        return [*messages[:lead], self.system_message(), *messages[lead:]]

    def decline_text(self) -> str:
        return DECLINE_ZH if _CJK.search(self.query) else DECLINE_EN

    def citations(self, answer: str) -> list[dict[str, Any]]:
        """One entry per distinct cited passage, in order of first mention."""
        by_number = {p.number: p for p in self.passages}
        seen: list[int] = []
        self.dropped_citations = []
        for match in _MARKER.finditer(answer):
            number = int(match.group(1) or match.group(2))
            if number not in by_number:
                self.dropped_citations.append(number)
            elif number not in seen:
                seen.append(number)
        return [citation(by_number[n]) for n in seen]

    def annotations(self, answer: str) -> list[dict[str, Any]]:
        """OpenAI ``url_citation`` annotations over each valid marker (the SDK parses these)."""
        by_number = {p.number: p for p in self.passages}
        found = []
        for match in _MARKER.finditer(answer):
            passage = by_number.get(int(match.group(1) or match.group(2)))
            if passage is not None:
                hit = passage.hit
                title = " > ".join(x for x in (hit.filename, hit.heading) if x)
                url = f"kb://{hit.store_id}/{hit.file_id}#chunk={hit.ordinal}"
                span = {"start_index": match.start(), "end_index": match.end(), "title": title, "url": url}
                found.append({"type": "url_citation", "url_citation": span})
        return found


def citation(passage: Passage) -> dict[str, Any]:
    hit = passage.hit
    return {
        "type": "file_citation",
        "index": passage.number,
        "vector_store_id": hit.store_id,
        "file_id": hit.file_id,
        "filename": hit.filename,
        "chunk": {"id": hit.chunk_id, "index": hit.ordinal, "heading": hit.heading, "page": hit.page},
        "score": hit.score,
        "quote": hit.text[:QUOTE_CHARS],
    }


class Retriever(Protocol):
    """What a turn needs from the knowledge base (injected; gateway/services.py wires it)."""

    async def retrieve(
        self,
        tenant: str,
        query: str,
        vector_store_ids: Sequence[str],
        max_results: int = 5,
        parent: Any | None = None,
    ) -> Grounding: ...


class KnowledgeRetriever:
    """``Retriever`` over the knowledge service. Raises ``service.NotFound`` for a store that is
    not the tenant's (callers answer 404, as the API does)."""

    #: Passages looked at for the answer/decline decision.
    DECIDING = 3

    def __init__(self, knowledge: Any, min_score: float, min_support: float) -> None:
        self.knowledge = knowledge
        self.min_score = min_score
        self.min_support = min_support

    async def retrieve(
        self,
        tenant: str,
        query: str,
        vector_store_ids: Sequence[str],
        max_results: int = 5,
        parent: Any | None = None,
    ) -> Grounding:
        result = await self.knowledge.search(
            tenant, list(vector_store_ids), query, max_results=max_results, parent=parent
        )
        deciding = result.hits[: self.DECIDING]
        answerable = any(h.score >= self.min_score or h.support >= self.min_support for h in deciding)
        passages = [Passage(i + 1, h) for i, h in enumerate(result.hits)] if answerable else []
        grounding = Grounding(query, passages, answerable, result.mode, len(result.hits))
        metrics = getattr(self.knowledge, "metrics", None)
        if metrics is not None:
            metrics.grounded_answer(tenant, grounding.answerable)
        return grounding
