"""What every parser produces (``Section``), its bounds (``Limits``) and its one error (``ParseError``).

A leaf module so that the per-format parsers (parsers.py, tables.py) and the chunker share the
types without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one document may expand to (settings: ``knowledge``)."""

    max_pages: int = 2000
    max_unzipped_bytes: int = 100 * 1024 * 1024
    max_zip_ratio: float = 100.0
    max_text_chars: int = 5_000_000


@dataclass(frozen=True, slots=True)
class Section:
    text: str
    heading: tuple[str, ...] = ()
    page: int | None = None
    atomic: bool = False  # one FAQ row: one chunk, never split or merged


class ParseError(Exception):
    """Why a file cannot be ingested; ``code`` is OpenAI's ``last_error.code``
    (``invalid_file`` for a broken or refused file, ``unsupported_file`` for an unknown format)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
