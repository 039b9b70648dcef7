"""Deterministic text content for the simulated LLM and ASR: answers, tokens, usage, words.

Tokens are "words": a CJK character each, otherwise a run of non-space characters, with the
whitespace before it attached, so ``"".join(tokens(s)) == s`` (minus trailing space) and streamed
chunks concatenate back to the exact answer. Usage counts are the number of such tokens.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.dashscope.bodies import content_text
from gateway.sim.config import SimConfig

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN_RE = re.compile(rf"\s*(?:[{_CJK}]|[^\s{_CJK}]+)")
# A spoken word: CJK characters one by one, otherwise letters/digits with inner apostrophes or hyphens.
_WORD_RE = re.compile(rf"[{_CJK}]|[^\W_]+(?:['’-][^\W_]+)*")
_SENTENCE_END_RE = re.compile(r"[。！？；!?;]|[.](?=\s|$)|\n")
_TAG_RE = re.compile(r"<[^>]+>")


def tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def prompt_tokens(messages: list[Any]) -> int:
    total = sum(count_tokens(content_text(m.get("content"))) for m in messages if isinstance(m, dict))
    return max(total, 1)


def answer_for(config: SimConfig, user_text: str) -> str:
    """Scripted answer for the last user message, else ``"<prefix> <user text>"`` (deterministic)."""
    scripted = config.scripted_answer(user_text)
    if scripted is not None:
        return scripted
    echo = " ".join(user_text.split()) or "(empty prompt)"
    return f"{config.default_answer_prefix} {echo}".strip()


def truncate(answer: str, max_tokens: int | None) -> tuple[list[str], str]:
    """Split the answer into tokens and apply ``max_tokens``; returns (tokens, finish_reason)."""
    pieces = tokens(answer)
    if max_tokens is not None and 0 < max_tokens < len(pieces):
        return pieces[:max_tokens], "length"
    return pieces, "stop"


def strip_markup(text: str) -> str:
    """Drop SSML / XML tags: the simulator speaks the text content only."""
    return _TAG_RE.sub(" ", text)


def words_with_spans(text: str) -> list[tuple[str, int, int]]:
    """Spoken words with their [begin, end) character indexes in ``text``."""
    return [(m.group(0), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def split_sentences(text: str, final: bool) -> tuple[list[str], str]:
    """Cut complete sentences off the front of ``text``; returns (sentences, rest).

    An ASCII full stop ends a sentence only when followed by whitespace, so "3.5" and a period at
    the very end of a streamed fragment wait for more text, unless ``final``.
    """
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(text):
        if match.group(0) == "." and match.end() == len(text) and not final:
            break
        piece = text[start : match.end()].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    rest = text[start:]
    if final:
        if rest.strip():
            sentences.append(rest.strip())
        rest = ""
    return sentences, rest


def default_transcript(duration_s: float) -> str:
    """What the simulated ASR hears when no transcript is configured: deterministic per duration."""
    return f"This is a simulated transcript of {duration_s:.1f} seconds of audio."
