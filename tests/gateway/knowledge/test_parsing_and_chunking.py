"""Parsers, heading-aware chunking with Qwen tokens, jieba + BM25, filters: the pieces alone."""

from __future__ import annotations

import pytest

from gateway.knowledge import filters
from gateway.knowledge.chunking import chunk_sections, count_tokens
from gateway.knowledge.lexical import BM25Index, tokenize
from gateway.knowledge.parsers import parse
from gateway.knowledge.sections import Limits, ParseError, Section
from tests.gateway.knowledge import docs

LIMITS = Limits()


def test_markdown_heading_paths_ignore_code_fences() -> None:
    md = "# Guide\nintro\n## Returns\nwithin 30 days\n```\n# not a heading\n```\n### Fees\n6 dollars\n# Other\nx"
    sections = parse(md.encode(), "g.md", LIMITS)
    assert [s.heading for s in sections] == [
        ("Guide",),
        ("Guide", "Returns"),
        ("Guide", "Returns", "Fees"),
        ("Other",),
    ]
    assert "# not a heading" in sections[1].text


def test_html_keeps_headings_and_drops_scripts_and_navigation() -> None:
    page = b"<nav>Home | Help</nav><h1>Help</h1><p>Hi</p><script>evil()</script><h2>Pay</h2><p>Use <b>PayPal</b></p>"
    sections = parse(page, "p.html", LIMITS)
    assert [(s.heading, s.text) for s in sections] == [(("Help",), "Hi"), (("Help", "Pay"), "Use PayPal")]


def test_docx_headings_pdf_pages_and_gb18030_text() -> None:
    sections = parse(docs.docx("Account", [("Password", "Use the link.")]), "a.docx", LIMITS)
    assert sections[-1].heading == ("Account", "Password") and sections[-1].text == "Use the link."
    pages = parse(docs.pdf(["first page", "second page"]), "m.pdf", LIMITS)
    assert [(s.page, s.text.strip()) for s in pages] == [(1, "first page"), (2, "second page")]
    assert parse("退货政策".encode("gb18030"), "zh.txt", LIMITS)[0].text == "退货政策"


def test_faq_tables_one_atomic_section_per_row() -> None:
    rows = parse(
        "问题,答案\n如何开发票？,在订单页申请。\n能改地址吗？,发货前可以。\n".encode(), "f.csv", LIMITS
    )
    assert [s.text for s in rows] == [
        "问题: 如何开发票？\n答案: 在订单页申请。",
        "问题: 能改地址吗？\n答案: 发货前可以。",
    ]
    assert all(s.atomic for s in rows)
    sheet = parse(docs.xlsx([["Q", "A"], ["Hours?", "9 to 5"]], sheet="Help"), "h.xlsx", LIMITS)
    assert [(s.heading, s.text) for s in sheet] == [(("Help",), "Q: Hours?\nA: 9 to 5")]


def test_page_limit_and_expansion_limit() -> None:
    with pytest.raises(ParseError, match="more than the limit of 1"):
        parse(docs.pdf(["a", "b"]), "m.pdf", Limits(max_pages=1))
    with pytest.raises(ParseError, match="expands to more than"):
        parse(b"x" * 100, "big.txt", Limits(max_text_chars=10))


def test_chunks_respect_the_token_budget_overlap_and_headings() -> None:
    sentence = "The warranty covers the motor for two years after delivery. "
    sections = [Section(sentence * 60, ("Warranty",)), Section("Short.", ("Fees",))]
    chunks = chunk_sections(sections, max_tokens=120, overlap=30)
    assert len(chunks) > 3
    assert all(c.n_tokens + count_tokens("Warranty") + 1 <= 120 for c in chunks if c.heading == ("Warranty",))
    assert chunks[-1].heading == ("Fees",) and chunks[-1].text == "Short."  # never merged across headings
    first, second = chunks[0].text.split("\n"), chunks[1].text.split("\n")
    assert first[-1] == second[0]  # the overlap carries the last sentence over
    long_row = Section("Q: x\nA: " + "word " * 600, (), atomic=True)
    assert len(chunk_sections([long_row], max_tokens=200, overlap=0)) > 1  # only an oversized row is cut


def test_chinese_bm25_finds_two_character_words() -> None:
    texts = ["电子发票会发送到邮箱", "七天无理由退货", "订单满99元包邮"]
    index = BM25Index([tokenize(t) for t in texts])
    assert int(index.scores(tokenize("怎么申请发票")).argmax()) == 0
    assert int(index.scores(tokenize("可以退货吗")).argmax()) == 1
    assert index.scores(tokenize("火星天气")).max() == 0.0
    assert index.support(tokenize("发票邮箱"), 0) == 1.0 and index.support(tokenize("发票"), 2) == 0.0


def test_attribute_filters() -> None:
    spec = {
        "type": "and",
        "filters": [{"key": "lang", "type": "eq", "value": "zh"}, {"key": "v", "type": "gte", "value": 2}],
    }
    filters.check(spec)
    assert filters.matches(spec, {"lang": "zh", "v": 3}) and not filters.matches(spec, {"lang": "zh", "v": 1})
    assert not filters.matches({"key": "v", "type": "gt", "value": 1}, {"v": "text"})
    with pytest.raises(filters.FilterError):
        filters.check({"type": "regex", "key": "x", "value": "y"})
