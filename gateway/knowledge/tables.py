"""FAQ tables (CSV, XLSX): one atomic section per row.

Why one chunk per row: a customer-service FAQ row is a complete answer to one question; packing
several rows into a ~400-token chunk makes citations point at the wrong answer and dilutes the
lexical match (RAGFlow's ``qa`` chunker does the same). The question and answer columns are found
by their header (English or Chinese names); a two-column table without such headers is read as
question, answer; any other table keeps every column as ``header: value`` lines.
"""

from __future__ import annotations

import csv
import io

from gateway.knowledge.sections import Section

QUESTION_HEADERS = frozenset({"question", "questions", "q", "query", "问题", "问", "常见问题", "提问"})
ANSWER_HEADERS = frozenset({"answer", "answers", "a", "reply", "response", "答案", "答", "回答", "解答"})
#: Rows read from one sheet at most (a guard; FAQ tables are far smaller).
MAX_ROWS = 100_000


def _clean(value: object) -> str:
    return "" if value is None else " ".join(str(value).split())


def rows_to_sections(rows: list[list[str]], heading: tuple[str, ...]) -> list[Section]:
    rows = [r for r in rows if any(c for c in r)]
    if not rows:
        return []
    header = [c.strip() for c in rows[0]]
    names = [h.lower().rstrip(":：") for h in header]
    q = next((i for i, h in enumerate(names) if h in QUESTION_HEADERS), None)
    a = next((i for i, h in enumerate(names) if h in ANSWER_HEADERS), None)
    body = rows[1:]
    headerless = len(header) == 2 and not (set(names) & (QUESTION_HEADERS | ANSWER_HEADERS))
    if (q is None or a is None) and headerless:
        q, a, body = 0, 1, rows  # no header row: question, answer
        header = ["Q", "A"]
    sections = []
    for row in body[:MAX_ROWS]:
        cells = row + [""] * (len(header) - len(row))
        if q is not None and a is not None:
            question, answer = cells[q], cells[a]
            if not question and not answer:
                continue
            others = [
                f"{header[i]}: {c}" for i, c in enumerate(cells) if i not in (q, a) and c and i < len(header)
            ]
            text = "\n".join([f"{header[q]}: {question}", f"{header[a]}: {answer}", *others])
        else:
            text = "\n".join(f"{h}: {c}" for h, c in zip(header, cells, strict=False) if c)
        if text.strip():
            sections.append(Section(text, heading, atomic=True))
    return sections


def csv_sections(text: str) -> list[Section]:
    sample = text[:8192]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    rows = [[_clean(c) for c in row] for _, row in zip(range(MAX_ROWS + 1), reader, strict=False)]
    return rows_to_sections(rows, ())


def xlsx_sections(data: bytes) -> list[Section]:
    """Every sheet, its name as the heading. The caller has already checked the ZIP container."""
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sections: list[Section] = []
        for sheet in book.worksheets:
            rows = [
                [_clean(c) for c in row]
                for _, row in zip(range(MAX_ROWS + 1), sheet.iter_rows(values_only=True), strict=False)
            ]
            sections += rows_to_sections(rows, (sheet.title,))
        return sections
    finally:
        book.close()
