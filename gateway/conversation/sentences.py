"""Cutting a streamed LLM reply into sentences, so speech and video start before the reply ends.

A sentence ends at ``. ! ? …`` followed by whitespace (so "3.14" and "e.g.x" do not cut),
at CJK full stops ``。！？；`` immediately, or at a newline. Overlong runs without an end
mark are cut at a comma or space so one run-on reply cannot hold back the first video.

The first piece of a reply may also end at a clause mark (``, ; :`` before whitespace, or CJK
``，、：``) once it holds ``first_phrase_chars``, or, failing one, before an English word that
opens a phrase ("from", "because", "which": where a speaker may pause anyway): the person hears
the answer start while the model is still writing the rest of its first sentence. On the local
model (~20 ms a token) and piper (~45 ms a second of speech) "The store is open | from 9:00 AM to
12:00 PM," starts about 0.4 s sooner than at its comma.
"""

from __future__ import annotations

import re

_END = re.compile(r"(?:[.!?…]+[\"'”’)\]]*\s)|(?:[。！？；]+[”’」』）]*)|\n")
_ABBREVIATIONS = ("mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "etc.", "e.g.", "i.e.", "no.")
_CLAUSE = re.compile(r"(?:[,;:]+\s)|(?:[，、：]+)")
#: A first phrase ended before an opener holds this many words ("Yes, we open | at nine" would not).
PHRASE_MIN_WORDS = 4
#: Words before which a first phrase may end (conjunctions, prepositions, relatives); whole words
#: only, with the next word begun, so "to" never cuts "today".
_PHRASE_OPENER = re.compile(
    r"\s(?=(?:and|but|or|so|because|from|to|at|in|on|with|for|when|if|which|that|until|after|"
    r"before|since|while|by|about|between|during|through|where|unless)\s+\S)",
    re.IGNORECASE,
)
_SPEAKABLE = re.compile(r"\w", re.UNICODE)
_MARKUP = re.compile(r"[*_#`~>|]+")
#: Citation markers of grounded answers ("[1]", "【2】"): shown in text, never read aloud.
_CITATION = re.compile(r"\[\d{1,2}\]|【\d{1,2}】")


def clean_for_speech(text: str) -> str:
    """Drop markdown symbols and citation markers, collapse whitespace; what remains is read aloud."""
    return " ".join(_MARKUP.sub(" ", _CITATION.sub(" ", text)).split())


def speakable(text: str) -> bool:
    return bool(_SPEAKABLE.search(text))


class SentenceSplitter:
    def __init__(self, soft_limit: int = 120, hard_limit: int = 240, first_phrase_chars: int = 0) -> None:
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit
        self.first_phrase_chars = first_phrase_chars  # 0: the first piece is a whole sentence too
        self._buffer = ""
        self._emitted = False

    def feed(self, delta: str) -> list[str]:
        """Add streamed text; returns the sentences it completed (stripped, non-empty)."""
        self._buffer += delta
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            head, self._buffer = self._buffer[:cut], self._buffer[cut:]
            head = head.strip()
            if head:
                out.append(head)
                self._emitted = True
        return out

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []

    def _find_cut(self) -> int | None:
        start = 0
        while True:
            m = _END.search(self._buffer, start)
            if m is None:
                break
            word = self._buffer[: m.start() + 1].rsplit(None, 1)[-1].lower() if m.group()[0] == "." else ""
            if word in _ABBREVIATIONS:
                start = m.end()
                continue
            return m.end()
        if self.first_phrase_chars and not self._emitted:
            for m in _CLAUSE.finditer(self._buffer):
                if len(self._buffer[: m.start()].strip()) >= self.first_phrase_chars:
                    return m.end()
            for m in _PHRASE_OPENER.finditer(self._buffer):
                head = self._buffer[: m.start()].strip()
                if len(head) >= self.first_phrase_chars and len(head.split()) >= PHRASE_MIN_WORDS:
                    return m.start() + 1
        if len(self._buffer) > self.soft_limit:
            comma = max(
                self._buffer.rfind(", ", 0, self.hard_limit), self._buffer.rfind("，", 0, self.hard_limit)
            )
            if comma >= self.soft_limit // 2:
                return comma + 1
        if len(self._buffer) > self.hard_limit:
            space = self._buffer.rfind(" ", 0, self.hard_limit)
            return space + 1 if space > 0 else self.hard_limit
        return None
