"""``session.emotion`` (talkgate's own): with "auto" the model is asked for a leading emotion tag,
the tag is cut before speech and transcripts, and the voice speaks the emotion (CosyVoice's
instruction and rate in the simulator's log), as /v1/talk does. The official ``openai`` SDK."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.conversation.emotion import PROMPT
from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import AUDIO_SESSION, _client, _say
from tests.gateway.test_talk_emotion import run_tasks

QUESTION = "How did my exam go?"
TAGGED = "[emotion:happy] Congratulations, you passed! That is wonderful news."


@pytest.fixture
def server(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> Iterator[Any]:
    sim.control("PUT", "/sim/config", json={"answers": {QUESTION: TAGGED}}).raise_for_status()
    try:
        yield run_gateway(gateway_settings())
    finally:
        sim.control("DELETE", "/sim/config")


def _session(server: Any, emotion: Any) -> tuple[Any, Any, Any]:
    manager = _client(server).realtime.connect(model="gpt-realtime")
    conn = manager.__enter__()
    assert conn.recv().type == "session.created"
    conn.session.update(session={**AUDIO_SESSION, **({"emotion": emotion} if emotion else {})})
    return manager, conn, conn.recv()


def test_auto_asks_for_the_tag_cuts_it_and_speaks_the_emotion(server: Any, sim: SimHandle) -> None:
    manager, conn, updated = _session(server, "auto")
    try:
        assert updated.type == "session.updated" and updated.session.model_extra["emotion"] == "auto"
        sim.clear_requests()
        events = _say(conn, QUESTION)
    finally:
        manager.__exit__(None, None, None)
    transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    assert transcript.strip() == "Congratulations, you passed! That is wonderful news."
    asked = sim.requests("generation")[-1]["body"]["input"]["messages"][0]["content"]
    assert PROMPT in asked  # the model was asked for the tag
    params = run_tasks(sim)
    assert params and all(p["instruction"].endswith("情感是happy。") for p in params)


def test_off_by_default_speaks_neutrally_and_refuses_a_bad_value(server: Any, sim: SimHandle) -> None:
    manager, conn, updated = _session(server, None)
    try:
        assert updated.session.model_extra["emotion"] == "off"
        sim.clear_requests()
        _say(conn, QUESTION)
        conn.session.update(session={"type": "realtime", "emotion": "ecstatic"})
        refused = conn.recv()
    finally:
        manager.__exit__(None, None, None)
    assert PROMPT not in sim.requests("generation")[-1]["body"]["input"]["messages"][0]["content"]
    assert all("instruction" not in p for p in run_tasks(sim))
    assert refused.type == "error" and refused.error.param == "session.emotion"
