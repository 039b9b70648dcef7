"""The consent statement a speaker reads aloud, and how well a transcript matches it.

Why a generated statement with a one-time code: a recording made for another purpose (or an old
consent replayed) cannot contain this code, so a matching transcript shows that the speaker read
this statement, naming this tenant and purpose, after it was issued (cf. Azure's consent
statement, the "voice consent gate" pattern). The match is word-level (characters for Chinese)
after normalising case, punctuation and digits, so "four seven two" and "472" compare equal.
"""

from __future__ import annotations

import difflib
import re
import secrets
import unicodedata

LANGUAGES = ("en", "zh")
CODE_DIGITS = 6

_EN = (
    "I{speaker} agree that {operator} may create a synthetic copy of my voice and use it for {tenant}, "
    "for this purpose: {purpose}. My consent code is {code}."
)
_ZH = "我{speaker}同意{operator}制作我声音的合成版本，供{tenant}用于：{purpose}。我的同意码是{code}。"

_EN_DIGITS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_ZH_DIGITS = str.maketrans("零〇一二两三四五六七八九幺", "0012234567891")
_WORD = re.compile(r"[a-z0-9']+|[\u3400-\u9fff]")


def new_code() -> str:
    """A random six-digit code (spoken digit by digit)."""
    return "".join(str(secrets.randbelow(10)) for _ in range(CODE_DIGITS))


def spoken_code(code: str, language: str) -> str:
    return " ".join(code) if language == "en" else code


def make_statement(
    *, tenant: str, purpose: str, operator: str, code: str, language: str, speaker: str
) -> str:
    template = _EN if language == "en" else _ZH
    who = (f", {speaker}," if language == "en" else speaker) if speaker else ""
    return template.format(
        speaker=who, operator=operator, tenant=tenant, purpose=purpose.strip().rstrip("."),
        code=spoken_code(code, language),
    )  # fmt: skip


def tokens(text: str) -> list[str]:
    """Comparable units: lower-case words (number words as digits, numbers split into digits) and
    single CJK characters (Chinese numerals as digits)."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_ZH_DIGITS)
    out: list[str] = []
    for token in _WORD.findall(text):
        token = _EN_DIGITS.get(token, token)
        if token.isdigit():
            out.extend(token)
        else:
            out.append(token.strip("'"))
    return [t for t in out if t]


def match_score(statement: str, transcript: str) -> float:
    """0..1: how much of the statement the transcript reproduces, in order (difflib ratio)."""
    a, b = tokens(statement), tokens(transcript)
    if not a or not b:
        return 0.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def code_spoken(code: str, transcript: str) -> bool:
    """The one-time code appears, in order, in the transcript, allowing one digit misheard,
    dropped or added (speech recognition of spoken digits is not perfect). Guessing a fresh
    six-digit code within one edit still has odds of about 1 in 10,000."""
    digits = "".join(t for t in tokens(transcript) if t.isdigit())
    if code in digits:
        return True
    n = len(code)
    return any(
        _within_one_edit(code, digits[start : start + size])
        for size in (n - 1, n, n + 1)
        for start in range(0, max(0, len(digits) - size) + 1)
    )


def _within_one_edit(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1 or not b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))
