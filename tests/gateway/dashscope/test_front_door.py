"""The DashScope front door end to end: the official ``dashscope`` SDK pointed at the GATEWAY
(real uvicorn), which routes to the Bailian simulator, or to the local models when the
simulated cloud is broken; keys, limits and usage rows are the gateway's own."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable
from typing import Any

import av
import dashscope
import httpx
import numpy as np
import pytest
from dashscope import Generation, MultiModalConversation
from dashscope.audio.asr import Recognition, RecognitionCallback, RecognitionResult
from dashscope.audio.tts_v2 import AudioFormat, ResultCallback, SpeechSynthesizer
from dashscope.common.error import RequestFailure
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.conftest import SimHandle
from tests.gateway.dashscope.front_support import ADMIN_KEY, ANSWER, QUESTION, TRANSCRIPT, usage_rows
from tests.sounds import sine_samples, wav_of

RATE = 16000


# --------------------------------------------------------------------------- text generation


def test_generation_plain_both_result_formats(front: Callable[..., Any], sim: SimHandle) -> None:
    front()
    messages = [{"role": "user", "content": QUESTION}]
    r = Generation.call(model="qwen-plus", messages=messages, result_format="message")
    assert r.status_code == 200, r
    assert r.output.choices[0].message.content == ANSWER
    assert r.output.choices[0].finish_reason == "stop"
    assert r.usage.output_tokens > 0 and r.usage.input_tokens > 0
    assert r.request_id
    text = Generation.call(model="qwen-plus", prompt=QUESTION)
    assert text.status_code == 200 and text.output.text == ANSWER and text.output.finish_reason == "stop"
    assert [c["model"] for c in sim.requests("generation")] == ["qwen-plus", "qwen-plus"]


def test_generation_streamed_incremental_both_ways(front: Callable[..., Any], sim: SimHandle) -> None:
    server, key = front()
    messages = [{"role": "user", "content": QUESTION}]
    pieces = [
        c.output.choices[0].message.content
        for c in Generation.call(
            model="qwen-plus",
            messages=messages,
            result_format="message",
            stream=True,
            incremental_output=True,
        )
    ]
    assert len([p for p in pieces if p]) > 3 and "".join(pieces) == ANSWER
    # SDK with incremental_output=False: it asks for increments and rebuilds the whole text itself
    whole = list(Generation.call(model="qwen-plus", messages=messages, stream=True, incremental_output=False))
    assert whole[-1].output.text == ANSWER and whole[-1].output.finish_reason == "stop"
    # A raw client asking for cumulative chunks gets the text so far in every event
    r = httpx.post(
        f"{server.url}/api/v1/services/aigc/text-generation/generation",
        headers={"authorization": f"Bearer {key}", "x-dashscope-sse": "enable"},
        json={
            "model": "qwen-plus",
            "input": {"prompt": QUESTION},
            "parameters": {"incremental_output": False},
        },
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    texts = [e["output"]["text"] for e in events]
    assert all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 2))
    assert texts[-1] == ANSWER and events[-1]["output"]["finish_reason"] == "stop"
    assert all(e["output"]["finish_reason"] == "null" for e in events[:-1])
    assert "id:1\nevent:result\n:HTTP_STATUS/200\ndata:" in r.text and "[DONE]" not in r.text


def test_generation_error_mid_stream_is_an_error_event(front: Callable[..., Any], sim: SimHandle) -> None:
    front()
    sim.fault(service="generation", status=500, code="InternalError", cut_after=3, times=1)
    responses = list(
        Generation.call(
            model="qwen-plus",
            messages=[{"role": "user", "content": QUESTION}],
            result_format="message",
            stream=True,
            incremental_output=True,
        )
    )
    good, last = responses[:-1], responses[-1]
    assert len(good) == 3 and all(r.status_code == 200 for r in good)
    assert "".join(r.output.choices[0].message.content for r in good) == " ".join(ANSWER.split()[:3])
    # The SDK reports an error event with the status of a ``status:`` line, else 400 (reference §2.3)
    assert last.status_code == 400 and last.code == "InternalError" and "interrupted" in last.message
    assert len(sim.requests("generation")) == 1  # after the first byte nothing is retried


def test_tools_pass_through_to_the_chat_request(front: Callable[..., Any], sim: SimHandle) -> None:
    front()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    r = Generation.call(
        model="qwen-plus",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        result_format="message",
    )
    assert r.status_code == 200, r
    calls = r.output.choices[0].message.tool_calls
    assert calls[0]["function"]["name"] == "get_weather" and r.output.choices[0].finish_reason == "tool_calls"
    json.loads(calls[0]["function"]["arguments"])
    upstream = sim.requests("generation")[-1]["body"]["parameters"]
    assert upstream["tools"][0]["function"]["name"] == "get_weather"
    bad = Generation.call(
        model="qwen-plus", messages=[{"role": "user", "content": "hi"}], tools=[{"type": "x"}]
    )
    assert bad.status_code == 400 and bad.code == "InvalidParameter"
    # Streamed: the call arrives whole (checked before the first event), finish_reason tool_calls.
    events = list(
        Generation.call(
            model="qwen-plus",
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            result_format="message",
            stream=True,
            incremental_output=True,
        )
    )
    assert all(e.status_code == 200 for e in events), events[-1]
    streamed = [c for e in events for c in (e.output.choices[0].message.get("tool_calls") or [])]
    assert streamed and streamed[0]["function"]["name"] == "get_weather"
    assert "city" in json.loads("".join(c["function"].get("arguments", "") for c in streamed))
    assert events[-1].output.choices[0].finish_reason == "tool_calls"


def test_wrong_key_and_bad_requests_get_dashscope_errors(front: Callable[..., Any], sim: SimHandle) -> None:
    server, _ = front()
    r = Generation.call(model="qwen-plus", prompt="hi", api_key="tg_" + "A" * 43)
    assert r.status_code == 401 and r.code == "InvalidApiKey" and r.request_id and r.message
    missing = Generation.call(model="no-such-model", prompt="hi")
    assert missing.status_code == 404 and missing.code == "ModelNotFound"
    empty = Generation.call(model="qwen-plus", messages=[{"role": "user", "content": "  "}])
    assert empty.status_code == 400 and empty.code == "InvalidParameter" and "no text" in empty.message
    raw = httpx.post(
        f"{server.url}/api/v1/services/aigc/text-generation/generation",
        headers={"authorization": f"Bearer {dashscope.api_key}"},
        content=b"{not json",
        timeout=30,
    )
    assert raw.status_code == 400 and set(raw.json()) == {"code", "message", "request_id"}
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(dashscope.base_websocket_api_url, additional_headers={"authorization": "Bearer tg_bad"})
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["code"] == "InvalidApiKey"
    assert sim.requests() == []


def test_limits_and_usage_rows_apply(front: Callable[..., Any], sim: SimHandle) -> None:
    server, _ = front({"rpm": 2})
    ok = [Generation.call(model="qwen-plus", prompt=QUESTION) for _ in range(2)]
    assert all(r.status_code == 200 for r in ok)
    limited = Generation.call(model="qwen-plus", prompt=QUESTION)
    assert limited.status_code == 429 and limited.code == "Throttling.RateQuota"
    rows = usage_rows(server, 2)
    gen = [r for r in rows if r["route"] == "/api/v1/services/aigc/text-generation/generation"]
    assert [r["status"] for r in gen] == [200, 200]  # a refused request books no row, as on /v1
    assert gen[0]["tenant"] == "acme" and gen[0]["provider"] == "bailian:qwen-plus"
    assert gen[0]["tokens_out"] == ok[0].usage.output_tokens and gen[0]["tokens_in"] > 0


def test_deterministic_answers_are_cached_per_protocol(front: Callable[..., Any], sim: SimHandle) -> None:
    front(cache={"enabled": True})
    first = Generation.call(model="qwen-plus", prompt=QUESTION, seed=7, result_format="message")
    again = list(
        Generation.call(model="qwen-plus", prompt=QUESTION, seed=7, result_format="message", stream=True)
    )
    assert first.output.choices[0].message.content == ANSWER
    assert "".join(c.output.choices[0].message.content for c in again) == ANSWER
    assert len(sim.requests("generation")) == 1  # the streamed call was a hit
    other = Generation.call(model="qwen-plus", prompt=QUESTION, seed=8)
    assert other.output.text == ANSWER and len(sim.requests("generation")) == 2
    # a streamed answer cut by max_tokens is stored with its finish reason, and replayed with it
    cut = dict(model="qwen-plus", prompt=QUESTION, seed=9, max_tokens=3, result_format="message")
    streamed = list(Generation.call(**cut, stream=True, incremental_output=True))
    assert streamed[-1].output.choices[0].finish_reason == "length"
    replayed = Generation.call(**cut)
    assert len(sim.requests("generation")) == 3  # a hit
    assert replayed.output.choices[0].finish_reason == "length"
    text = "".join(c.output.choices[0].message.content for c in streamed)
    assert replayed.output.choices[0].message.content == text and 0 < len(text) < len(ANSWER)


# --------------------------------------------------------------------------- speech


class AsrCollector(RecognitionCallback):
    def __init__(self) -> None:
        self.sentences: list[dict[str, Any]] = []
        self.interim: list[dict[str, Any]] = []  # partial results, before their sentence ends
        self.errors: list[Any] = []
        self.completed = False
        self.done = threading.Event()

    def on_event(self, result: RecognitionResult) -> None:
        sentence = dict(result.get_sentence())
        if RecognitionResult.is_sentence_end(sentence):
            self.sentences.append(sentence)
        elif not self.sentences:
            self.interim.append(sentence)

    def on_complete(self) -> None:
        self.completed = True

    def on_error(self, result: Any) -> None:
        self.errors.append(result)

    def on_close(self) -> None:
        self.done.set()


def _recognise(pcm: bytes, model: str = "paraformer-realtime-v2") -> AsrCollector:
    cb = AsrCollector()
    rec = Recognition(model=model, format="pcm", sample_rate=RATE, callback=cb, language_hints=["en"])
    rec.start()
    for i in range(0, len(pcm), 3200):
        rec.send_audio_frame(pcm[i : i + 3200])
    rec.stop()
    return cb


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    return np.concatenate(frames).astype(np.float64), rate


class TtsCollector(ResultCallback):
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.kinds: list[str] = []
        self.complete = False

    def on_event(self, message: str) -> None:
        self.kinds.append(json.loads(message)["payload"]["output"]["type"])

    def on_data(self, data: bytes) -> None:
        self.frames.append(bytes(data))

    def on_complete(self) -> None:
        self.complete = True


def test_recognition_with_a_callback(front: Callable[..., Any], sim: SimHandle) -> None:
    server, _ = front()
    cb = _recognise(sine_samples(2.0, RATE, freq=220, peak=8000).tobytes())
    assert cb.completed and not cb.errors
    assert " ".join(s["text"] for s in cb.sentences) == TRANSCRIPT
    assert all(s["end_time"] is not None and s["end_time"] >= s["begin_time"] for s in cb.sentences)
    rows = [r for r in usage_rows(server) if r["route"] == "/api-ws/v1/inference"]
    assert len(rows) == 1 and rows[0]["audio_seconds"] == pytest.approx(2.0, abs=0.01)
    assert rows[0]["provider"] == "bailian:paraformer-realtime-v2" and rows[0]["status"] == 200


def test_recognition_sends_interim_results_while_the_audio_streams(
    front: Callable[..., Any], sim: SimHandle
) -> None:
    """Paraformer realtime's partials reach the SDK's callback as interim sentences (no end time),
    each the transcript so far, before the final sentences; the upstream got the audio as a stream."""
    server, _ = front()
    cb = _recognise(sine_samples(4.0, RATE, freq=220, peak=8000).tobytes())
    assert cb.completed and not cb.errors
    assert " ".join(s["text"] for s in cb.sentences) == TRANSCRIPT
    assert cb.interim, "no interim result before the final sentences"
    assert all(s["end_time"] is None and not s["sentence_end"] for s in cb.interim)
    assert all(TRANSCRIPT.startswith(s["text"]) for s in cb.interim)
    upstream = [r for r in sim.requests("asr") if r.get("partials") is not None]
    assert upstream and upstream[-1]["partials"] >= len(cb.interim) and upstream[-1]["finished"]
    rows = [r for r in usage_rows(server) if r["route"] == "/api-ws/v1/inference"]
    assert rows[-1]["audio_seconds"] == pytest.approx(4.0, abs=0.01)


def test_speech_synthesizer_call_with_and_without_format(front: Callable[..., Any], sim: SimHandle) -> None:
    front()
    plain = SpeechSynthesizer(model="cosyvoice-v2", voice="longxiaochun_v2").call("Hello there. How are you?")
    samples, rate = _decode(plain)
    assert plain[:3] == b"ID3" or plain[0] == 0xFF  # an MP3 stream, the default format
    assert rate == 22050 and len(samples) / rate > 0.5
    wav = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.WAV_16000HZ_MONO_16BIT
    ).call("Hello there.")
    assert wav[:4] == b"RIFF"
    samples, rate = _decode(wav)
    assert rate == 16000 and np.abs(samples).max() > 1000


def test_speech_synthesizer_streaming_call(front: Callable[..., Any], sim: SimHandle) -> None:
    server, _ = front()
    cb = TtsCollector()
    synth = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.PCM_22050HZ_MONO_16BIT, callback=cb
    )
    for part in ("Hello there, ", "this is streamed. ", "And a second sentence."):
        synth.streaming_call(part)
    synth.streaming_complete()
    assert cb.complete and cb.frames
    assert cb.kinds.count("sentence-begin") == 2 and cb.kinds.count("sentence-end") == 2
    pcm = np.frombuffer(b"".join(cb.frames), dtype="<i2")
    assert pcm.size > 22050 and np.abs(pcm).max() > 1000
    rows = [r for r in usage_rows(server) if r["route"] == "/api-ws/v1/inference"]
    assert rows[-1]["characters"] == len("Hello there, this is streamed. And a second sentence.")


def test_quota_and_scope_refuse_websocket_tasks(front: Callable[..., Any], sim: SimHandle) -> None:
    server, _ = front(quotas={"tts_chars": 10})
    with pytest.raises(RequestFailure) as refused:
        SpeechSynthesizer(model="cosyvoice-v2", voice="longxiaochun_v2").call(
            "Hello there. How are you today?"
        )
    assert refused.value.name == "Throttling.AllocationQuota"
    assert sim.requests("tts") == []  # refused before any provider was called
    r = httpx.post(
        f"{server.url}/admin/keys",
        json={"tenant": "acme", "scopes": ["chat"]},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    dashscope.api_key = r.json()["key"]  # a key without the asr scope
    cb = _recognise(sine_samples(0.5, RATE).tobytes())
    assert cb.errors and cb.errors[0].code == "AccessDenied" and not cb.sentences


def test_qwen3_asr_flash_through_multimodal_conversation(front: Callable[..., Any], sim: SimHandle) -> None:
    front()
    wav = wav_of(sine_samples(1.5, RATE, freq=220, peak=8000).tobytes(), RATE)
    audio = "data:audio/wav;base64," + base64.b64encode(wav).decode()
    r = MultiModalConversation.call(
        model="qwen3-asr-flash", messages=[{"role": "user", "content": [{"audio": audio}]}]
    )
    assert r.status_code == 200, r
    assert r.output.choices[0].message.content[0]["text"] == TRANSCRIPT
    assert sim.requests("asr")[-1]["model"] == "qwen3-asr-flash"
    url = MultiModalConversation.call(
        model="qwen3-asr-flash", messages=[{"role": "user", "content": [{"audio": "http://192.0.2.1/a.wav"}]}]
    )
    assert url.status_code == 400 and url.code == "InvalidParameter" and "data URL" in url.message


# --------------------------------------------------------------------------- local fallback


@pytest.mark.slow
def test_broken_cloud_is_answered_by_the_local_models(front: Callable[..., Any], sim: SimHandle) -> None:
    from tests.sounds import piper_speech

    server, _ = front()
    sim.fault(service="*", status=500, code="InternalError")
    r = Generation.call(model="qwen-plus", prompt="Say hello.", max_tokens=12, result_format="message")
    assert r.status_code == 200 and r.output.choices[0].message.content.strip()
    assert r.output.choices[0].message.content != ANSWER
    streamed = list(Generation.call(model="qwen-plus", prompt="Count to three.", max_tokens=12, stream=True))
    assert streamed[-1].status_code == 200 and "".join(c.output.text for c in streamed).strip()

    audio = SpeechSynthesizer(model="cosyvoice-v2", voice="longxiaochun_v2").call(
        "The weather is nice today."
    )
    samples, rate = _decode(audio)
    assert rate == 22050 and len(samples) / rate > 0.8

    signal, native = piper_speech("The weather is nice today.")
    from providers.wav import float_to_pcm16, resample

    pcm = float_to_pcm16(resample(signal, native, RATE)).tobytes()
    cb = _recognise(pcm)
    assert cb.completed and "weather" in " ".join(s["text"] for s in cb.sentences).lower()
    data_url = "data:audio/wav;base64," + base64.b64encode(wav_of(pcm, RATE)).decode()
    asr = MultiModalConversation.call(
        model="qwen3-asr-flash", messages=[{"role": "user", "content": [{"audio": data_url}]}]
    )
    assert asr.status_code == 200 and "weather" in asr.output.choices[0].message.content[0]["text"].lower()

    rows = usage_rows(server, 5)
    providers = {r["provider"] for r in rows}
    assert {"local:smollm2", "local:piper-joe", "local:whisper-tiny.en"} <= providers
    assert all(r["fallback"] for r in rows if r["provider"].startswith("local:"))
