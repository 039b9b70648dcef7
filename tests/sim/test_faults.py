"""The control API: fault injection, request recording and run-time config."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
import requests
import websocket
from dashscope import Generation
from dashscope.audio.asr import Recognition, RecognitionCallback, RecognitionResult
from dashscope.audio.tts_v2 import AudioFormat, ResultCallback, SpeechSynthesizer

from tests.conftest import SimHandle


def test_fault_times_then_recovers_and_every_attempt_is_recorded(ds: SimHandle) -> None:
    spec = ds.fault(service="generation", status=503, times=2)
    assert spec["code"] == "ModelUnavailable" and spec["times"] == 2
    statuses = [Generation.call(model="qwen-plus", prompt="hi").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    items = ds.requests("generation")
    assert [i["status"] for i in items] == [503, 503, 200]
    assert [i["fault"] for i in items] == [spec["id"], spec["id"], None]
    assert ds.control("GET", "/sim/faults").json() == {"faults": []}


def test_faults_apply_oldest_first_and_filter_by_service_and_model(ds: SimHandle) -> None:
    ds.fault(service="tts", status=500, times=1)
    ds.fault(service="generation", model="qwen-max", status=500, times=1)
    ds.fault(service="*", status=429, code="Throttling", times=1)
    assert Generation.call(model="qwen-plus", prompt="a").code == "Throttling"
    assert Generation.call(model="qwen-max", prompt="a").code == "InternalError"
    assert Generation.call(model="qwen-max", prompt="a").status_code == 200
    [left] = ds.control("GET", "/sim/faults").json()["faults"]
    assert left["service"] == "tts" and left["hits"] == 0


def test_latency_fault_and_config_latency(ds: SimHandle) -> None:
    ds.fault(service="generation", latency_ms=300, times=1)
    t0 = time.perf_counter()
    assert Generation.call(model="qwen-plus", prompt="a").status_code == 200
    delayed = time.perf_counter() - t0
    t0 = time.perf_counter()
    Generation.call(model="qwen-plus", prompt="a")
    plain = time.perf_counter() - t0
    assert delayed >= 0.3 > plain
    ds.control("PUT", "/sim/config", json={"ttft_ms": 200})
    t0 = time.perf_counter()
    Generation.call(model="qwen-plus", prompt="a")
    assert time.perf_counter() - t0 >= 0.2


def test_cut_after_drops_native_stream(ds: SimHandle) -> None:
    ds.fault(service="generation", cut_after=2, times=1)
    got: list[str] = []
    with pytest.raises(requests.exceptions.RequestException):
        for chunk in Generation.call(
            model="qwen-plus", prompt="one two three four", stream=True, incremental_output=True
        ):
            got.append(chunk.output.text)
    assert got == ["Simulated", " answer:"]


def test_cut_after_zero_on_plain_call_drops_connection(ds: SimHandle) -> None:
    ds.fault(service="generation", cut_after=0, times=1)
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            f"{ds.compat_base}/chat/completions",
            json={"model": "qwen-plus", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {ds.api_key}"},
        )


def test_hang_until_client_times_out(ds: SimHandle) -> None:
    ds.fault(service="generation", hang=True, times=1)
    t0 = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{ds.compat_base}/chat/completions",
            json={"model": "qwen-plus", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {ds.api_key}"},
            timeout=0.5,
        )
    assert time.perf_counter() - t0 < 2
    assert ds.requests("generation")[0]["fault"] is not None
    # the simulator is still healthy afterwards
    assert Generation.call(model="qwen-plus", prompt="a").status_code == 200


class _AsrCollector(RecognitionCallback):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.errors: list[Any] = []
        self.completed = False
        self.closed = threading.Event()

    def on_event(self, result: RecognitionResult) -> None:
        self.events.append(dict(result.get_sentence()))

    def on_error(self, result: Any) -> None:
        self.errors.append(result)

    def on_complete(self) -> None:
        self.completed = True

    def on_close(self) -> None:
        self.closed.set()


def test_ws_cut_after_with_status_fails_task_mid_stream(ds: SimHandle) -> None:
    ds.fault(service="asr", status=500, code="InternalError", cut_after=2, times=1)
    cb = _AsrCollector()
    rec = Recognition(model="paraformer-realtime-v2", format="pcm", sample_rate=16000, callback=cb)
    rec.start()
    frame = b"\x10\x00" * 1600  # 100 ms
    for _ in range(12):
        if cb.closed.is_set():
            break
        rec.send_audio_frame(frame)
        time.sleep(0.01)
    assert cb.closed.wait(5)
    assert len(cb.events) == 1  # task-started + one partial, then task-failed
    assert cb.errors[0].code == "InternalError" and not cb.completed


def test_ws_cut_after_drops_tts_connection_and_counts_frames(ds: SimHandle) -> None:
    ds.fault(service="tts", cut_after=3, times=1)

    class Frames(ResultCallback):
        def __init__(self) -> None:
            self.kinds: list[str] = []

        def on_event(self, message: str) -> None:
            self.kinds.append("event")

        def on_data(self, data: bytes) -> None:
            self.kinds.append("audio")

    cb = Frames()
    synth = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.PCM_16000HZ_MONO_16BIT, callback=cb
    )
    synth.streaming_call("A long enough sentence to need several frames of audio. ")
    with pytest.raises(TimeoutError):
        synth.streaming_complete(complete_timeout_millis=1000)
    # task-started (not passed to on_event), sentence-begin, sentence-synthesis, then the drop
    assert cb.kinds == ["event", "event"]
    assert ds.requests("tts")[0]["fault"] is not None


_RUN_ASR = {
    "header": {"streaming": "duplex", "task_id": "a" * 32, "action": "run-task"},
    "payload": {
        "model": "paraformer-realtime-v2",
        "parameters": {"sample_rate": 16000, "format": "pcm"},
        "input": {},
        "task": "asr",
        "task_group": "audio",
        "function": "recognition",
    },
}


def test_ws_hang_never_starts_task(ds: SimHandle) -> None:
    """Raw websocket-client (the SDK's own transport): run-task is accepted but never answered."""
    ds.fault(service="asr", hang=True, times=1)
    ws = websocket.create_connection(ds.ws_base, header=[f"Authorization: Bearer {ds.api_key}"], timeout=0.7)
    run_task = _RUN_ASR
    ws.send(json.dumps(run_task))
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    ws.close()
    assert ds.requests("asr")[0]["status"] == 0
    # the next task on a fresh connection is served normally
    ws = websocket.create_connection(
        ds.ws_base + "/", header=[f"Authorization: Bearer {ds.api_key}"], timeout=2
    )
    ws.send(json.dumps(run_task))
    assert json.loads(ws.recv())["header"]["event"] == "task-started"
    ws.close()


def test_ws_handshake_fault_401(ds: SimHandle) -> None:
    ds.fault(service="asr", status=401, times=1)
    cb = _AsrCollector()
    Recognition(model="paraformer-realtime-v2", format="pcm", sample_rate=16000, callback=cb).start()
    assert cb.closed.wait(5)
    assert cb.errors[0].status_code == 401
    assert ds.requests("asr")[0]["status"] == 401


@pytest.mark.parametrize(
    "spec",
    [
        {"service": "nope", "status": 500},
        {"status": 200},
        {"times": 0, "status": 500},
        {},
        {"status": 500, "bogus": 1},
    ],
)
def test_bad_fault_spec_is_400(ds: SimHandle, spec: dict[str, Any]) -> None:
    r = ds.control("POST", "/sim/faults", json=spec)
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_delete_one_fault_and_config_roundtrip(ds: SimHandle) -> None:
    fault = ds.fault(service="tts", status=500)
    assert fault["times"] is None  # until cleared
    assert ds.control("DELETE", f"/sim/faults/{fault['id']}").status_code == 200
    assert ds.control("DELETE", f"/sim/faults/{fault['id']}").status_code == 404
    r = ds.control("PUT", "/sim/config", json={"token_delay_ms": 5, "answers": {"Ping": "Pong"}})
    assert r.status_code == 200 and r.json()["token_delay_ms"] == 5
    assert r.json()["api_keys"] == 1  # the key list is never echoed
    assert Generation.call(model="qwen-plus", prompt="  ping ").output.text == "Pong"
    assert ds.control("PUT", "/sim/config", json={"ttft_ms": -1}).status_code == 400
    assert ds.control("PUT", "/sim/config", json={"api_keys": ["x"]}).status_code == 400
    assert ds.control("DELETE", "/sim/config").json()["answers"] == {}


def test_ws_idle_timeout_fails_task_with_client_error(ds: SimHandle) -> None:
    """Raw websocket-client: the SDK only reads events while it has audio to send."""
    ds.control("PUT", "/sim/config", json={"ws_idle_timeout_s": 0.3})
    ws = websocket.create_connection(ds.ws_base, header=[f"Authorization: Bearer {ds.api_key}"], timeout=3)
    ws.send(json.dumps(_RUN_ASR))
    assert json.loads(ws.recv())["header"]["event"] == "task-started"
    ws.send_binary(b"\0" * 3200)
    failed = json.loads(ws.recv())["header"]  # sent 0.3 s after the last frame
    assert (failed["event"], failed["error_code"]) == ("task-failed", "CLIENT_ERROR")
    assert failed["error_message"] == "request timeout after 0.3 seconds."
