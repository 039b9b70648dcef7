"""Out-of-band responses: ``response.create`` with ``conversation: "none"`` and/or its own
``input`` items; nothing of them joins the conversation, the next in-band turn never sees them."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import SHORT, _client, _say, _until, server  # noqa: F401

CLASSIFY = "Classify the mood of the conversation in one word."


def _text_session(conn: Any) -> None:
    conn.recv()
    conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
    assert conn.recv().type == "session.updated"


def test_an_out_of_band_response_with_its_own_input(server: Any, sim: SimHandle) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        _text_session(conn)
        first = _say(conn, "Say hi to Ada.")
        answer_item = next(e for e in first if e.type == "response.output_item.added").item.id
        assert first[-1].response.conversation_id
        sim.clear_requests()
        conn.response.create(
            response={
                "conversation": "none",
                "metadata": {"purpose": "mood"},
                "output_modalities": ["text"],
                "input": [
                    {"type": "item_reference", "id": answer_item},
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": CLASSIFY}],
                    },
                ],
            }
        )
        events = _until(conn, "response.done")
        types = [e.type for e in events]
        done = events[-1].response
        assert done.status == "completed" and done.conversation_id is None
        assert done.metadata == {"purpose": "mood"}
        assert not [t for t in types if t.startswith("conversation.item.")]  # not in the conversation
        assert "response.output_item.added" in types and "response.output_text.done" in types
        sent = json.dumps(sim.requests("generation")[-1]["body"])
        assert CLASSIFY in sent and SHORT in sent  # its own context: the referenced item and the message
        assert "Say hi to Ada." not in sent  # ... and not the conversation's history

        # The next in-band turn sees the conversation without the out-of-band exchange.
        sim.clear_requests()
        again = _say(conn, "Say hi to Ada.")
        assert again[-1].response.status == "completed"
        assert CLASSIFY not in json.dumps(sim.requests("generation")[-1]["body"])


def test_conversation_none_without_input_reads_the_conversation(server: Any, sim: SimHandle) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        _text_session(conn)
        _say(conn, "Say hi to Ada.")
        sim.clear_requests()
        conn.response.create(response={"conversation": "none", "instructions": "Summarise."})
        events = _until(conn, "response.done")
        assert events[-1].response.status == "completed"
        assert not [e for e in events if e.type.startswith("conversation.item.")]
        assert "Say hi to Ada." in json.dumps(sim.requests("generation")[-1]["body"])


def test_bad_out_of_band_requests_are_refused(server: Any) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        _text_session(conn)
        for options, param, code in (
            ({"conversation": "conv_other"}, "response.conversation", "invalid_value"),
            ({"input": "hello"}, "response.input", "invalid_value"),
            (
                {"input": [{"type": "item_reference", "id": "item_nope"}]},
                "response.input[0].id",
                "item_not_found",
            ),
            (
                {"input": [{"type": "message", "role": "robot", "content": []}]},
                "response.input[0].role",
                "invalid_value",
            ),
            ({"metadata": {"n": 1}}, "response.metadata", "invalid_value"),
        ):
            conn.send({"type": "response.create", "response": options})
            refused = conn.recv()
            assert refused.type == "error" and (refused.error.param, refused.error.code) == (param, code), (
                options
            )
