"""Uploaded document → ordered sections (heading path, page, text), or a ``ParseError``.

Why sections: chunking is heading-aware (a chunk never spans two headings, and its heading path is
stored with it for citations), so every parser reports headings in one shape. FAQ tables (CSV,
XLSX) yield one *atomic* section per question/answer row: a row is one chunk, never split or merged.

Untrusted input is checked before the expensive parse: DOCX and XLSX are ZIP containers, so their
declared uncompressed sizes and ratios are read from the central directory first (a zip bomb is
refused without inflating a byte); PDFs that are encrypted with a real password, or that have no
extractable text (scans: OCR is out of scope), fail with a message that says so.
"""

from __future__ import annotations

import io
import re
import zipfile
from html.parser import HTMLParser
from pathlib import PurePosixPath

from gateway.knowledge.sections import Limits, ParseError, Section
from gateway.knowledge.tables import csv_sections, xlsx_sections

#: Formats by file-name extension (what the OpenAI file_search tool also keys on).
FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".csv": "csv",
    ".xlsx": "xlsx",
}


def file_format(filename: str) -> str | None:
    return FORMATS.get(PurePosixPath(filename.lower()).suffix)


def parse(data: bytes, filename: str, limits: Limits) -> list[Section]:
    """Sections of a document, in order. Raises ParseError; never anything else for bad input."""
    kind = file_format(filename)
    if kind is None:
        supported = ", ".join(sorted(FORMATS))
        raise ParseError("unsupported_file", f"'{filename}' has an unsupported extension ({supported}).")
    if not data:
        raise ParseError("invalid_file", f"'{filename}' is empty (0 bytes).")
    try:
        sections = _PARSERS[kind](data, limits)
    except ParseError:
        raise
    except Exception as exc:  # a parser library choking on a malformed file
        raise ParseError("invalid_file", f"'{filename}' could not be read as {kind}: {_short(exc)}") from exc
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise ParseError("invalid_file", f"'{filename}' contains no extractable text.")
    if sum(len(s.text) for s in sections) > limits.max_text_chars:
        raise ParseError(
            "invalid_file", f"'{filename}' expands to more than {limits.max_text_chars} characters of text."
        )
    return sections


def _short(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__)[:200]


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM allowed), else GB18030, which Chinese office exports still use."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ParseError("invalid_file", "the text is neither UTF-8 nor GB18030.")


# --------------------------------------------------------------------------- plain text, markdown

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _text(data: bytes, limits: Limits) -> list[Section]:
    return [Section(decode_text(data))]


def _markdown(data: bytes, limits: Limits) -> list[Section]:
    """ATX headings (``#`` … ``######``) open sections; ``#`` inside code fences does not."""
    sections: list[Section] = []
    path: list[str] = []
    lines: list[str] = []
    fenced = False

    def flush() -> None:
        if lines:
            sections.append(Section("\n".join(lines).strip(), tuple(path)))
            lines.clear()

    for line in decode_text(data).splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match is None:
            lines.append(line)
            continue
        flush()
        level = len(match.group(1))
        del path[level - 1 :]
        path.extend([""] * (level - 1 - len(path)))
        path.append(match.group(2).strip())
    flush()
    return [Section(s.text, tuple(h for h in s.heading if h)) for s in sections]


# --------------------------------------------------------------------------- HTML

_BLOCKS = frozenset(
    {"p", "div", "br", "li", "tr", "section", "article", "table", "ul", "ol", "dd", "dt", "blockquote", "pre"}
)
_SKIP = frozenset({"script", "style", "noscript", "template", "head", "nav", "footer", "svg"})


class _HtmlSections(HTMLParser):
    """Text per heading of an HTML page; scripts, styles and navigation are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.path: list[str] = []
        self.text: list[str] = []
        self.heading: list[str] | None = None
        self.level = 0
        self.skipping = 0

    def flush(self) -> None:
        body = re.sub(r"[ \t]+", " ", "".join(self.text))
        body = re.sub(r"\s*\n\s*", "\n", body).strip()
        if body:
            self.sections.append(Section(body, tuple(self.path)))
        self.text = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skipping += 1
        elif re.fullmatch(r"h[1-6]", tag) and not self.skipping:
            self.flush()
            self.heading, self.level = [], int(tag[1])
        elif tag in _BLOCKS:
            self.text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif self.heading is not None and re.fullmatch(r"h[1-6]", tag):
            title = " ".join("".join(self.heading).split())
            del self.path[self.level - 1 :]
            if title:
                self.path.append(title)
            self.heading = None
        elif tag in _BLOCKS:
            self.text.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        (self.heading if self.heading is not None else self.text).append(data)


def _html(data: bytes, limits: Limits) -> list[Section]:
    parser = _HtmlSections()
    parser.feed(decode_text(data))
    parser.close()
    parser.flush()
    return parser.sections


# --------------------------------------------------------------------------- PDF


def _pdf(data: bytes, limits: Limits) -> list[Section]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:  # an owner-password-only PDF opens with the empty user password
            opened = reader.decrypt("")
        except Exception:
            opened = 0
        if not opened:
            raise ParseError("invalid_file", "the PDF is password-protected; upload it without a password.")
    pages = len(reader.pages)
    if pages > limits.max_pages:
        raise ParseError(
            "invalid_file", f"the PDF has {pages} pages, more than the limit of {limits.max_pages}."
        )
    sections = []
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text() or ""
        if text.strip():
            sections.append(Section(text, page=number))
    if not sections:
        raise ParseError(
            "invalid_file", "the PDF has no extractable text (a scanned document? OCR is not supported)."
        )
    return sections


# --------------------------------------------------------------------------- ZIP containers


def check_zip(data: bytes, limits: Limits) -> None:
    """Refuse a ZIP whose declared contents are too large or too compressed (a zip bomb),
    from the central directory alone."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ParseError("invalid_file", f"the file is not a valid Office (ZIP) document: {exc}") from None
    total = 0
    for info in archive.infolist():
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_zip_ratio and info.file_size > 1024 * 1024:
            raise ParseError(
                "invalid_file",
                f"the document looks like a zip bomb: '{info.filename[:80]}' expands {ratio:.0f}×.",
            )
    if total > limits.max_unzipped_bytes:
        raise ParseError(
            "invalid_file",
            f"the document expands to {total} bytes, more than the limit of {limits.max_unzipped_bytes}.",
        )


def _docx(data: bytes, limits: Limits) -> list[Section]:
    check_zip(data, limits)
    import docx

    document = docx.Document(io.BytesIO(data))
    sections: list[Section] = []
    path: list[str] = []
    lines: list[str] = []

    def flush() -> None:
        if lines:
            sections.append(Section("\n".join(lines), tuple(path)))
            lines.clear()

    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        level = _heading_level(style)
        if level and text:
            flush()
            del path[level - 1 :]
            path.append(text)
        elif text:
            lines.append(text)
    flush()
    for table in document.tables:
        rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
        if any(r.strip(" |") for r in rows):
            sections.append(Section("\n".join(rows), tuple(path[:1])))
    return sections


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


def _xlsx(data: bytes, limits: Limits) -> list[Section]:
    check_zip(data, limits)
    return xlsx_sections(data)


def _csv(data: bytes, limits: Limits) -> list[Section]:
    return csv_sections(decode_text(data))


_PARSERS = {
    "text": _text,
    "markdown": _markdown,
    "html": _html,
    "pdf": _pdf,
    "docx": _docx,
    "csv": _csv,
    "xlsx": _xlsx,
}
