"""``custom:<id>`` cloned voices in realtime sessions: enrolled through /v1/voices (real consent
recording, local checks), spoken by the simulated CosyVoice with the enrolled provider voice,
bound to the tenant, and refused as soon as consent is revoked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from gateway.settings import RouteConfig, _default_routes
from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import _audio_of, _until
from tests.gateway.saas_support import Gateway, database_url, saas  # noqa: F401
from tests.gateway.voices.test_enrolment import SAMPLE_TEXT, enrol, statement, wav

pytestmark = pytest.mark.slow

ANSWER = "Hello Ada. I speak in your own voice."


@pytest.fixture
def gw(saas: Callable[..., Gateway], sim: SimHandle) -> Gateway:  # noqa: F811
    sim.control("PUT", "/sim/config", json={"answers": {"Say hi to Ada.": ANSWER}}).raise_for_status()
    routes = _default_routes()
    routes["asr"] = RouteConfig(chain=["local:whisper-tiny.en"], aliases={"default": "whisper-tiny.en"})
    return saas(routes=routes, voice_cloning={"operator_name": "Talkgate", "poll_interval_s": 0.05})


def _realtime(gw: Gateway, key: str) -> Any:
    client = openai.OpenAI(
        base_url=f"{gw.url}/v1",
        websocket_base_url=f"ws://127.0.0.1:{gw.server.port}/v1",
        api_key=key,
        max_retries=0,
    )
    return client.realtime.connect(model="gpt-realtime")


def _use_voice(conn: Any, voice: str) -> Any:
    conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": voice}}})
    return conn.recv()


def _ask(conn: Any) -> None:
    conn.conversation.item.create(
        item={
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Say hi to Ada."}],
        }
    )
    _until(conn, "conversation.item.done")
    conn.response.create()


def _tts_runs(sim: SimHandle) -> list[dict[str, Any]]:
    return [
        q for q in sim.requests("tts") if (q.get("body") or {}).get("header", {}).get("action") == "run-task"
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_cloned_voice_speaks_in_its_tenants_sessions_until_revoked(gw: Gateway, sim: SimHandle) -> None:
    acme_key = gw.create_key("acme", ["voices", "realtime"])["key"]
    globex_key = gw.create_key("globex", ["realtime"])["key"]
    acme = gw.client(acme_key)
    st = statement(acme)
    r = enrol(acme, st["code"], wav(SAMPLE_TEXT), wav(st["statement"]), name="Jane", fallback="refuse")
    assert r.status_code == 201, r.text
    voice = r.json()
    provider_voice = acme.get(f"/v1/voices/{voice['id']}").json()["consent"]["provider_voice_id"]

    # Another tenant's session cannot use it: an error event, and its voice is unchanged.
    with _realtime(gw, globex_key) as conn:
        before = conn.recv().session.audio.output.voice
        refused = _use_voice(conn, voice["voice"])
        assert refused.type == "error" and refused.error.code == "voice_not_found"
        assert refused.error.param == "session.audio.output.voice"
        conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        assert conn.recv().session.audio.output.voice == before != voice["voice"]

    with _realtime(gw, acme_key) as conn:
        conn.recv()
        updated = _use_voice(conn, voice["voice"])
        assert updated.type == "session.updated" and updated.session.audio.output.voice == voice["voice"]
        sim.clear_requests()
        _ask(conn)
        events = _until(conn, "response.done")
        done = events[-1].response
        assert done.status == "completed" and done.audio.output.voice == voice["voice"]
        assert _audio_of(events).size > 0
        runs = _tts_runs(sim)
        assert runs and {run["body"]["payload"]["parameters"]["voice"] for run in runs} == {provider_voice}
        assert {run["body"]["payload"]["model"] for run in runs} == {"cosyvoice-v2"}

        # Consent revoked while the session is open: the next response is refused, nothing spoken.
        assert acme.delete(f"/v1/voices/{voice['id']}").status_code == 200
        sim.clear_requests()
        _ask(conn)
        error = conn.recv()
        assert error.type == "error" and error.error.code == "voice_not_usable"
        assert error.error.type == "permission_error" and "revoked" in error.error.message
        assert _tts_runs(sim) == []
        again = _use_voice(conn, voice["voice"])
        assert again.type == "error" and again.error.code == "voice_not_usable"
        # The session itself goes on with an ordinary voice.
        assert _use_voice(conn, "alloy").type == "session.updated"
        _ask(conn)
        assert _until(conn, "response.done")[-1].response.status == "completed"

    events = gw.admin.get("/admin/voices/audit", params={"voice_id": voice["id"]}).json()["data"]
    uses = [e for e in events if e["event"] == "use"]
    assert [u["detail"]["route"] for u in uses] == ["realtime"]  # one spoken response, one use
    assert uses[0]["detail"]["characters"] == len(ANSWER)
