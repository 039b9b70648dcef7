"""Spoken turns grounded in the knowledge base: /v1/talk and a realtime session cite the document
that answers, never read the citation markers aloud, and decline an out-of-corpus question
with the fixed answer and no model call (the same rules as grounded chat)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.knowledge.grounding import DECLINE_EN
from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import _client as _realtime_client
from tests.gateway.realtime.test_realtime import _until
from tests.gateway.test_talk import _avatar

RETURNS = "# Returns\n\nUnused items may be returned within 30 days of delivery for a full refund."
SHIPPING = "# Shipping\n\nStandard shipping takes 3 to 5 working days; express arrives the next day."
QUESTION = "Within how many days can unused items be returned for a refund?"
ANSWER = "Within 30 days of delivery [1]."


@pytest.fixture
def grounded(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> Iterator[tuple[Any, str]]:
    server = run_gateway(gateway_settings())
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    store = client.vector_stores.create(name="kb")
    for name, text in (("returns.md", RETURNS), ("shipping.md", SHIPPING)):
        uploaded = client.files.create(file=(name, text.encode()), purpose="assistants")
        done = client.vector_stores.files.create_and_poll(file_id=uploaded.id, vector_store_id=store.id)
        assert done.status == "completed"
    sim.control("PUT", "/sim/config", json={"answers": {QUESTION: ANSWER}}).raise_for_status()
    sim.clear_requests()
    try:
        yield server, store.id
    finally:
        sim.control("DELETE", "/sim/config")


def test_realtime_turns_cite_and_decline(grounded: tuple[Any, str], sim: SimHandle) -> None:
    server, store_id = grounded
    knowledge = {"vector_store_ids": [store_id], "max_num_results": 3}
    with _realtime_client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(session={"type": "realtime", "knowledge": knowledge})
        updated = conn.recv()
        assert updated.type == "session.updated" and updated.session.model_extra["knowledge"] == knowledge

        def ask(text: str) -> list[Any]:
            conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            )
            _until(conn, "conversation.item.done")
            conn.response.create()
            return _until(conn, "response.done")

        events = ask(QUESTION)
        served = events[-1].response.model_extra["talkgate"]
        [cited] = served["citations"]
        assert cited["filename"] == "returns.md" and cited["quote"] in RETURNS
        transcript = next(e.transcript for e in events if e.type == "response.output_audio_transcript.done")
        assert transcript == ANSWER  # the marker stays in the transcript...
        spoken = [q["text_chars"] for q in sim.requests("tts")]
        assert spoken == [len("Within 30 days of delivery .")]  # ...and is not read aloud

        sim.clear_requests()
        declined = ask("What will the weather be on Mars tomorrow?")
        text = next(e.transcript for e in declined if e.type == "response.output_audio_transcript.done")
        assert text == DECLINE_EN
        served = declined[-1].response.model_extra["talkgate"]
        assert served["knowledge"]["answered"] is False and served["backend"] != "local"
        assert sim.requests("generation") == []  # no model call for a decline

        bad = {"vector_store_ids": [store_id], "max_num_results": 0}
        conn.session.update(session={"type": "realtime", "knowledge": bad})
        assert conn.recv().error.param == "session.knowledge.max_num_results"


def test_talk_cites_the_answering_document(grounded: tuple[Any, str], sim: SimHandle) -> None:
    server, store_id = grounded
    with httpx.Client(base_url=server.url, timeout=120) as client:
        avatar_id = _avatar(client)
        body = {"text": QUESTION, "avatar_id": avatar_id, "knowledge": {"vector_store_ids": [store_id]}}
        r = client.post("/v1/talk", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["reply"] == ANSWER
        assert [c["filename"] for c in answer["citations"]] == ["returns.md"]
        assert answer["knowledge"]["answered"] is True
        missing = client.post("/v1/talk", json={**body, "knowledge": {"vector_store_ids": ["vs_nope"]}})
        assert missing.status_code == 404, missing.text
