"""``audio.input.transcription`` of a realtime session: the model, language and prompt the ASR chain
gets, and ``null``, which stops the transcript events while the model still hears the words (the
cascade always recognises speech). The official ``openai`` SDK against the gateway and the simulator."""

from __future__ import annotations

from typing import Any

from tests.conftest import SimHandle
from tests.gateway.realtime.test_live_transcript import (  # noqa: F401  (fixtures)
    HEARD,
    SESSION,
    _append,
    _open,
    _silence,
    _speak,
    server,
    speech,
)
from tests.gateway.realtime.test_realtime import _until


def _update(conn: Any, transcription: Any) -> Any:
    conn.session.update(session={"type": "realtime", "audio": {"input": {"transcription": transcription}}})
    return conn.recv()


def _turn(conn: Any, pcm: bytes) -> list[Any]:
    _speak(conn, _silence(0.3) + pcm, pace=4.0)
    _append(conn, _silence(0.8))
    return _until(conn, "conversation.item.done")


def test_the_default_is_on_and_null_turns_the_events_off(
    server: Any,  # noqa: F811
    sim: SimHandle,
    speech: bytes,  # noqa: F811
) -> None:
    manager, conn = _open(server)
    try:
        conn.session.update(session=SESSION)
        described = conn.recv().session.audio.input.transcription
        assert described is not None and described.model == "default"
        updated = _update(conn, None)
        assert updated.type == "session.updated" and updated.session.audio.input.transcription is None
        events = _turn(conn, speech)
        conn.response.create()
        answer = _until(conn, "response.done")
    finally:
        manager.__exit__(None, None, None)
    types = [e.type for e in events]
    assert not [t for t in types if t.startswith("conversation.item.input_audio_transcription")], types
    assert events[-1].item.content[0].transcript is None  # no transcript on the item either
    assert answer[-1].response.status == "completed"
    # the model still heard the words: they are in the chat request the simulator got
    asked = [r["body"] for r in sim.requests("generation")]
    assert asked and HEARD in str(asked[-1]["input"]["messages"])


def test_model_language_and_prompt_reach_the_recogniser(
    server: Any,  # noqa: F811
    sim: SimHandle,
    speech: bytes,  # noqa: F811
) -> None:
    manager, conn = _open(server)
    try:
        options = {"model": "paraformer-realtime-v2", "language": "en", "prompt": "store hours"}
        updated = _update(conn, options)
        assert updated.session.audio.input.transcription.language == "en"
        events = _turn(conn, speech)
    finally:
        manager.__exit__(None, None, None)
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert completed and completed[-1].transcript == HEARD
    task = [r for r in sim.requests("asr") if r.get("body")][-1]["body"]["payload"]
    assert task["model"] == "paraformer-realtime-v2"
    assert task["parameters"].get("language_hints") == ["en"]


def test_unknown_model_and_bad_language_are_refused_and_change_nothing(server: Any) -> None:  # noqa: F811
    manager, conn = _open(server)
    try:
        unknown = _update(conn, {"model": "no-such-asr"})
        bad = _update(conn, {"model": "default", "language": "English please"})
        conn.session.update(session={"type": "realtime"})
        after = conn.recv()
    finally:
        manager.__exit__(None, None, None)
    assert unknown.type == "error" and unknown.error.code == "model_not_found"
    assert unknown.error.param == "session.audio.input.transcription.model"
    assert bad.type == "error" and bad.error.param == "session.audio.input.transcription.language"
    assert after.session.audio.input.transcription.model == "default"
