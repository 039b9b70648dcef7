"""Sections → chunks of about ``max_tokens`` Qwen tokens, with overlap, never across a heading.

Why Qwen tokens: the chunks are embedded by text-embedding-v4 and reranked by qwen3-rerank, whose
limits (8,192 and 4,000 tokens per item) are in Qwen tokens; the dashscope package ships the Qwen
BPE vocabulary (``dashscope/resources/qwen.tiktoken``) and loads it from disk, so counting needs no
network. Why ~400 with ~50 overlap: the middle of common defaults (Dify 500/50, LlamaIndex 1024/20,
RAGFlow 128) and small enough that one chunk answers one customer question.

Text is split on paragraphs, then sentences (Chinese and Western end punctuation), then, for a
sentence longer than a chunk, on token windows. Units are packed greedily; a new chunk starts
with the last units of the previous one up to ``overlap`` tokens. FAQ rows (atomic sections) are
one chunk each, cut only if a row alone exceeds the limit.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.knowledge.sections import Section

#: Ends of sentences: Chinese full-width marks always; Western ones when followed by a space.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?])|(?<=[.;])(?=\s)")
#: Model whose tokenizer counts (every Qwen text model shares the one bundled vocabulary).
TOKENIZER_MODEL = "qwen-turbo"


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    heading: tuple[str, ...]
    page: int | None
    n_tokens: int

    @property
    def heading_text(self) -> str:
        return " > ".join(self.heading)

    def indexed_text(self) -> str:
        """What is embedded and indexed: the heading path gives a short section its subject."""
        return f"{self.heading_text}\n{self.text}" if self.heading else self.text


@functools.cache
def _encoder() -> object:
    from dashscope import get_tokenizer

    return get_tokenizer(TOKENIZER_MODEL)


def count_tokens(text: str) -> int:
    return len(_encoder().encode(text))  # type: ignore[attr-defined]


def _token_windows(text: str, size: int) -> list[str]:
    encoder = _encoder()
    ids = encoder.encode(text)  # type: ignore[attr-defined]
    return [encoder.decode(ids[i : i + size]) for i in range(0, len(ids), size)]  # type: ignore[attr-defined]


def _units(text: str, limit: int, count: Callable[[str], int]) -> list[tuple[str, int]]:
    """Paragraphs, or their sentences, or token windows: each unit at most ``limit`` tokens."""
    units: list[tuple[str, int]] = []
    for paragraph in re.split(r"\n\s*\n|\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        n = count(paragraph)
        if n <= limit:
            units.append((paragraph, n))
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            sentence = sentence.strip()
            if not sentence:
                continue
            n = count(sentence)
            if n <= limit:
                units.append((sentence, n))
            else:
                units += [(w, count(w)) for w in _token_windows(sentence, limit)]
    return units


def chunk_sections(
    sections: list[Section],
    max_tokens: int = 400,
    overlap: int = 50,
    count: Callable[[str], int] = count_tokens,
) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in sections:
        head = " > ".join(section.heading)
        budget = max(32, max_tokens - (count(head) + 1 if head else 0))
        if section.atomic:
            n = count(section.text)
            pieces = [section.text] if n <= budget else _token_windows(section.text, budget)
            chunks += [Chunk(p, section.heading, section.page, count(p)) for p in pieces]
            continue
        current: list[tuple[str, int]] = []
        size = 0
        for unit, n in _units(section.text, budget, count):
            if current and size + n > budget:
                chunks.append(_make(current, section))
                carried: list[tuple[str, int]] = []
                carried_size = 0
                for prev in reversed(current):
                    if carried_size + prev[1] > overlap or carried_size + prev[1] + n > budget:
                        break
                    carried.insert(0, prev)
                    carried_size += prev[1]
                current, size = carried, carried_size
            current.append((unit, n))
            size += n
        if current:
            chunks.append(_make(current, section))
    return chunks


def _make(units: list[tuple[str, int]], section: Section) -> Chunk:
    text = "\n".join(u for u, _ in units)
    return Chunk(text, section.heading, section.page, sum(n for _, n in units))
