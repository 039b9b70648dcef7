"""Grounded chat through the openai SDK: passages in the prompt, citations that map to retrieved
passages, and a decline (with no model call) when the knowledge base has no answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from gateway.knowledge.grounding import DECLINE_EN, DECLINE_ZH
from tests.conftest import SimHandle

DOCS = {
    "returns.md": "# Returns\n\nUnused items may be returned within 30 days of delivery for a full refund.",
    "invoices.md": "# 发票\n\n电子发票在订单完成后24小时内发送到您的邮箱，也可以在订单详情页申请发票。",
    "shipping.md": "# Shipping\n\nStandard shipping takes 3 to 5 working days; express arrives the next day.",
}
QUESTION = "Within how many days can unused items be returned for a refund?"


@pytest.fixture
def setup(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> tuple[openai.OpenAI, str]:
    client = openai.OpenAI(base_url=f"{run_gateway(gateway_settings()).url}/v1", api_key="x", max_retries=0)
    store = client.vector_stores.create(name="kb")
    for name, text in DOCS.items():
        uploaded = client.files.create(file=(name, text.encode()), purpose="assistants")
        done = client.vector_stores.files.create_and_poll(file_id=uploaded.id, vector_store_id=store.id)
        assert done.status == "completed"
    sim.clear_requests()
    return client, store.id


def _ask(client: openai.OpenAI, store_id: str, question: str, **kw: Any) -> Any:
    return client.chat.completions.create(
        model="qwen-plus",
        messages=[{"role": "user", "content": question}],
        extra_body={"knowledge": {"vector_store_ids": [store_id], "max_num_results": 3}},
        **kw,
    )


def test_answer_cites_the_right_document(setup: tuple[openai.OpenAI, str], sim: SimHandle) -> None:
    client, store_id = setup
    sim.control(
        "PUT", "/sim/config", json={"answers": {QUESTION: "Within 30 days of delivery [1]. Also [9]."}}
    )
    try:
        answer = _ask(client, store_id, QUESTION)
    finally:
        sim.control("DELETE", "/sim/config")
    extra = answer.model_extra or {}
    [cited] = extra["citations"]
    assert cited["filename"] == "returns.md" and cited["index"] == 1
    assert cited["quote"] in DOCS["returns.md"]
    assert extra["knowledge"]["answered"] is True and extra["knowledge"]["dropped_citations"] == [9]
    [annotation] = answer.choices[0].message.annotations or []
    assert annotation.url_citation.url.startswith(f"kb://{store_id}/{cited['file_id']}")
    assert answer.choices[0].message.content[annotation.url_citation.start_index :].startswith("[1]")
    # what the model was given: the question, and passage [1] = the returns policy, with the instructions
    [call] = sim.requests("generation")
    system = call["body"]["input"]["messages"][0]
    assert system["role"] == "system" and "[1] (returns.md > Returns)" in system["content"]
    assert "30 days" in system["content"] and "do not know" in system["content"]
    assert call["body"]["input"]["messages"][-1]["content"] == QUESTION


def test_out_of_corpus_question_is_declined_without_a_model_call(
    setup: tuple[openai.OpenAI, str], sim: SimHandle
) -> None:
    client, store_id = setup
    answer = _ask(client, store_id, "What will the weather be on Mars tomorrow?")
    assert answer.choices[0].message.content == DECLINE_EN
    extra = answer.model_extra or {}
    assert extra["citations"] == [] and extra["knowledge"]["answered"] is False
    chinese = _ask(client, store_id, "明天火星上的天气怎么样？")
    assert chinese.choices[0].message.content == DECLINE_ZH
    assert sim.requests("generation") == []


def test_streamed_answer_ends_with_its_citations(setup: tuple[openai.OpenAI, str], sim: SimHandle) -> None:
    client, store_id = setup
    question = "怎么申请电子发票？"
    sim.control("PUT", "/sim/config", json={"answers": {question: "在订单详情页申请发票即可【1】。"}})
    try:
        chunks = list(_ask(client, store_id, question, stream=True))
    finally:
        sim.control("DELETE", "/sim/config")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "在订单详情页申请发票即可【1】。"
    [last] = [c for c in chunks if not c.choices]
    [cited] = (last.model_extra or {})["citations"]
    assert cited["filename"] == "invoices.md"


def test_unknown_store_is_404_and_bad_field_is_400(setup: tuple[openai.OpenAI, str]) -> None:
    client, _ = setup
    with pytest.raises(openai.NotFoundError):
        _ask(client, "vs_doesnotexist", QUESTION)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="qwen-plus",
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={"knowledge": {"vector_store_ids": "vs_1"}},  # a list is needed
        )
    assert "knowledge.vector_store_ids" in caught.value.message
