"""BailianASRProvider and BailianTTSProvider against the Bailian simulator, with real speech audio."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import wave
from typing import Any

import pytest

from providers.base import AudioData, ErrorKind, ProviderError, SynthesizeRequest, TranscribeRequest
from tests.conftest import SimHandle
from tests.servers import free_port


def _asr(model: str, pcm: bytes, **kw: Any) -> TranscribeRequest:
    return TranscribeRequest(model=model, audio=AudioData(pcm, 16000), **kw)


def _tts(model: str, text: str, **kw: Any) -> SynthesizeRequest:
    kw.setdefault("voice", "longxiaochun_v2" if model.startswith("cosyvoice") else "Cherry")
    return SynthesizeRequest(model=model, text=text, **kw)


@pytest.fixture
def scripted_transcript(sim: SimHandle) -> Any:
    """Sets the simulator's ASR answer for one test and restores the default afterwards."""
    text = "Hello there. This is a short test of the speech recognizer."
    sim.control("PUT", "/sim/config", json={"asr_transcript": text}).raise_for_status()
    yield text
    sim.control("PUT", "/sim/config", json={"asr_transcript": None}).raise_for_status()


# ---------------------------------------------------------------------------------------------- ASR


async def test_paraformer_realtime_over_websocket(
    cloud: Any, sim: SimHandle, speech_16k: tuple[bytes, str], scripted_transcript: str
) -> None:
    pcm, _ = speech_16k
    duration = len(pcm) / 32000
    transcript = await cloud.asr.transcribe(_asr("paraformer-realtime-v2", pcm, language="en"))
    assert transcript.text == scripted_transcript
    assert transcript.duration_s == pytest.approx(duration)
    assert transcript.segments, "final sentences become segments"
    assert " ".join(s.text for s in transcript.segments) == transcript.text
    for seg in transcript.segments:
        assert 0 <= seg.start < seg.end <= duration + 0.5
        assert seg.words and all(w.start <= w.end for w in seg.words)
    record = sim.requests("asr")[-1]
    params = (
        record["body"]["payload"]["parameters"]
        if "payload" in record["body"]
        else record["body"]["parameters"]
    )
    assert params["format"] == "pcm" and params["sample_rate"] == 16000
    assert params["language_hints"] == ["en"]


async def test_paraformer_default_answer_without_script(cloud: Any, speech_16k: tuple[bytes, str]) -> None:
    pcm, _ = speech_16k
    transcript = await cloud.asr.transcribe(_asr("paraformer-realtime-v2", pcm))
    assert transcript.text.strip()
    assert transcript.segments


async def _paced(pcm: bytes, frame_s: float = 0.1, gap_s: float = 0.02) -> Any:
    """``pcm`` (16 kHz) in 100 ms frames with a pause between them, as a microphone delivers it."""
    step = int(16000 * frame_s) * 2
    for start in range(0, len(pcm), step):
        await asyncio.sleep(gap_s)
        yield pcm[start : start + step]


async def test_paraformer_streams_partials_while_audio_arrives(
    cloud: Any, sim: SimHandle, speech_16k: tuple[bytes, str], scripted_transcript: str
) -> None:
    pcm, _ = speech_16k
    assert cloud.asr.streams_transcription("paraformer-realtime-v2")
    assert not cloud.asr.streams_transcription("qwen3-asr-flash")
    request = _asr("paraformer-realtime-v2", b"")
    parts = [p async for p in cloud.asr.transcribe_stream(request, _paced(pcm))]
    partials, final = parts[:-1], parts[-1]
    assert len(partials) >= 2 and not any(p.final for p in partials)
    assert all(scripted_transcript.startswith(p.text) for p in partials)  # growing prefixes
    assert final.final and final.text == scripted_transcript and final.transcript is not None
    assert final.transcript.duration_s == pytest.approx(len(pcm) / 32000)
    record = sim.requests("asr")[-1]
    assert record["finished"] is True and record["partials"] >= 2
    assert cloud.client.pooled_websockets, "a finished task's socket goes back to the pool"


async def test_an_abandoned_stream_closes_its_socket(
    cloud: Any, sim: SimHandle, speech_16k: tuple[bytes, str], scripted_transcript: str
) -> None:
    pcm, _ = speech_16k
    stream = cloud.asr.transcribe_stream(_asr("paraformer-realtime-v2", b""), _paced(pcm))
    first = await anext(stream)
    assert not first.final and scripted_transcript.startswith(first.text)
    await stream.aclose()
    assert cloud.client.pooled_websockets == []  # closed, not pooled
    for _ in range(100):  # the simulator sees the close
        record = sim.requests("asr")[-1]
        if record.get("closed"):
            break
        await asyncio.sleep(0.02)
    assert record.get("closed") is True and not record.get("finished")


async def test_qwen3_asr_flash_over_http_with_a_wav_data_url(
    cloud: Any, sim: SimHandle, speech_16k: tuple[bytes, str], scripted_transcript: str
) -> None:
    pcm, _ = speech_16k
    transcript = await cloud.asr.transcribe(_asr("qwen3-asr-flash", pcm))
    assert transcript.text == scripted_transcript
    assert transcript.duration_s == pytest.approx(len(pcm) / 32000)
    body = sim.requests("asr")[-1]["body"]
    audio_url = body["input"]["messages"][-1]["content"][0]["audio"]
    assert audio_url.startswith("data:audio/wav;base64,")
    wav_b64_chars = 4 * -(-(44 + len(pcm)) // 3)  # base64 of a 44-byte header + the PCM
    if "elided" in audio_url:  # the simulator logs the size of long data URLs, not their content
        assert f"<{wav_b64_chars} base64 chars elided>" in audio_url
    else:
        with wave.open(io.BytesIO(base64.b64decode(audio_url.split(",", 1)[1]))) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            assert w.getnframes() == len(pcm) // 2


async def test_asr_wrong_key_fails_the_handshake_as_auth(
    make_cloud: Any, speech_16k: tuple[bytes, str]
) -> None:
    cloud = await make_cloud(dashscope_api_key="sk-wrong")
    with pytest.raises(ProviderError) as info:
        await cloud.asr.transcribe(_asr("paraformer-realtime-v2", speech_16k[0]))
    assert info.value.kind is ErrorKind.AUTH


async def test_asr_task_failed_is_classified(
    cloud: Any, sim: SimHandle, speech_16k: tuple[bytes, str]
) -> None:
    sim.fault(service="asr", status=500, code="InternalError.Algo")
    with pytest.raises(ProviderError) as info:
        await cloud.asr.transcribe(_asr("paraformer-realtime-v2", speech_16k[0]))
    assert info.value.kind is ErrorKind.RETRYABLE
    assert info.value.code == "InternalError.Algo"


async def test_asr_rejects_empty_audio_and_unknown_models(cloud: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await cloud.asr.transcribe(_asr("paraformer-realtime-v2", b""))
    assert info.value.kind is ErrorKind.BAD_REQUEST
    with pytest.raises(ProviderError) as info:
        await cloud.asr.transcribe(_asr("whisper-1", b"\0\0" * 1600))
    assert info.value.kind is ErrorKind.BAD_REQUEST


# ---------------------------------------------------------------------------------------------- TTS


async def test_cosyvoice_pcm_grows_with_text_and_has_word_timestamps(cloud: Any, sim: SimHandle) -> None:
    short = await cloud.tts.synthesize(_tts("cosyvoice-v2", "Hello there."))
    long = await cloud.tts.synthesize(_tts("cosyvoice-v2", "Hello there. " * 4 + "How are you doing today?"))
    assert short.audio.sample_rate == 22050
    assert len(short.audio.pcm) % 2 == 0 and len(short.audio.pcm) > 0
    assert len(long.audio.pcm) > 2 * len(short.audio.pcm)
    assert [w.text for w in short.words][:2] == ["Hello", "there"]
    assert all(w.start < w.end for w in long.words)
    assert [w.start for w in long.words] == sorted(w.start for w in long.words)
    assert long.words[-1].end <= long.audio.duration_s + 0.01
    assert long.characters > short.characters > 0
    run = next(r for r in sim.requests("tts") if r["model"] == "cosyvoice-v2")
    params = run["body"]["payload"]["parameters"] if "payload" in run["body"] else run["body"]["parameters"]
    assert params["format"] == "pcm" and params["sample_rate"] == 22050
    assert params["word_timestamp_enabled"] is True and params["rate"] == 1.0


async def test_cosyvoice_speed_and_sample_rate_reach_the_run_task(cloud: Any, sim: SimHandle) -> None:
    result = await cloud.tts.synthesize(
        _tts("cosyvoice-v2", "Speed test sentence here.", sample_rate=16000, speed=1.5)
    )
    assert result.audio.sample_rate == 16000
    odd_rate = await cloud.tts.synthesize(_tts("cosyvoice-v2", "Odd rate.", sample_rate=11025))
    assert odd_rate.audio.sample_rate == 22050  # not a CosyVoice rate: native rate, caller resamples
    runs = [r["body"]["payload"]["parameters"] for r in sim.requests("tts")]
    assert (runs[0]["rate"], runs[0]["sample_rate"]) == (1.5, 16000)
    assert runs[1]["sample_rate"] == 22050


async def test_cosyvoice_stream_yields_chunks_as_frames_arrive(cloud: Any) -> None:
    text = "First sentence is here. Second one follows. And a third to finish."
    plain = await cloud.tts.synthesize(_tts("cosyvoice-v2", text))
    chunks = [c async for c in cloud.tts.synthesize_stream(_tts("cosyvoice-v2", text))]
    assert len([c for c in chunks if c.pcm]) >= 3
    assert all(c.sample_rate == 22050 for c in chunks)
    assert b"".join(c.pcm for c in chunks) == plain.audio.pcm
    streamed_words = [w for c in chunks for w in c.words]
    assert [(w.text, w.start) for w in streamed_words] == [(w.text, w.start) for w in plain.words]


async def test_cosyvoice_long_text_is_split_across_messages(cloud: Any, sim: SimHandle) -> None:
    text = "Word " * 30
    whole = await cloud.tts.synthesize(_tts("cosyvoice-v2", text))
    cloud.tts.max_message_chars = 40  # 150 characters -> 4 continue-task messages
    split = await cloud.tts.synthesize(_tts("cosyvoice-v2", text))
    assert len(split.words) == len(whole.words) == 30
    assert split.characters == whole.characters > 0
    assert len(split.audio.pcm) == len(whole.audio.pcm)
    first, second = sim.requests("tts")[-2:]
    assert first["text_chars"] == second["text_chars"] >= len(text.strip())  # every piece arrived


async def test_websocket_is_reused_and_a_dead_pooled_socket_is_replaced(cloud: Any, sim: SimHandle) -> None:
    request = _tts("cosyvoice-v2", "Hello there.")
    first = await cloud.tts.synthesize(request)
    [ws] = cloud.client.pooled_websockets
    again = await cloud.tts.synthesize(request)
    assert cloud.client.pooled_websockets == [ws], "the second task ran on the same connection"
    assert again.audio.pcm == first.audio.pcm
    # The connection dies while idle (as when the server drops idle sockets after 60 s).
    ws.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
    await asyncio.sleep(0.05)
    third = await cloud.tts.synthesize(request)
    assert third.audio.pcm == first.audio.pcm
    [fresh] = cloud.client.pooled_websockets
    assert fresh is not ws
    assert len([r for r in sim.requests("tts") if r["model"] == "cosyvoice-v2"]) >= 3


async def test_failed_task_socket_is_not_pooled(cloud: Any, sim: SimHandle) -> None:
    sim.fault(service="tts", status=500, times=1)
    with pytest.raises(ProviderError) as info:
        await cloud.tts.synthesize(_tts("cosyvoice-v2", "Hello."))
    assert info.value.kind is ErrorKind.RETRYABLE
    assert cloud.client.pooled_websockets == []


async def test_cosyvoice_bad_voice_is_a_classified_task_failure(cloud: Any, sim: SimHandle) -> None:
    sim.fault(service="tts", status=400, code="InvalidParameter", message="voice not found")
    with pytest.raises(ProviderError) as info:
        await cloud.tts.synthesize(_tts("cosyvoice-v2", "Hello."))
    assert info.value.kind is ErrorKind.BAD_REQUEST
    assert info.value.code == "InvalidParameter"


async def test_tts_wrong_key_is_auth(make_cloud: Any) -> None:
    cloud = await make_cloud(dashscope_api_key="sk-wrong")
    for model in ("cosyvoice-v2", "qwen3-tts-flash"):
        with pytest.raises(ProviderError) as info:
            await cloud.tts.synthesize(_tts(model, "Hello."))
        assert info.value.kind is ErrorKind.AUTH


@pytest.mark.parametrize("model", ["qwen-tts", "qwen3-tts-flash"])
async def test_qwen_tts_plain_downloads_the_audio_url(cloud: Any, sim: SimHandle, model: str) -> None:
    short = await cloud.tts.synthesize(_tts(model, "Hello there."))
    long = await cloud.tts.synthesize(_tts(model, "Hello there. " * 4 + "How are you doing today?"))
    assert short.audio.sample_rate == 24000
    assert len(long.audio.pcm) > 2 * len(short.audio.pcm) > 0
    body = sim.requests("tts")[-1]["body"]
    assert body["input"]["voice"] == "Cherry"


async def test_qwen_tts_stream_yields_base64_pcm_chunks(cloud: Any) -> None:
    text = "First sentence is here. Second one follows. And a third to finish."
    plain = await cloud.tts.synthesize(_tts("qwen3-tts-flash", text))
    chunks = [c async for c in cloud.tts.synthesize_stream(_tts("qwen3-tts-flash", text))]
    assert len(chunks) >= 2
    assert all(c.sample_rate == 24000 for c in chunks)
    assert b"".join(c.pcm for c in chunks) == plain.audio.pcm


async def test_tts_rejects_empty_text_and_unknown_models(cloud: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await cloud.tts.synthesize(_tts("cosyvoice-v2", "   "))
    assert info.value.kind is ErrorKind.BAD_REQUEST
    with pytest.raises(ProviderError) as info:
        await cloud.tts.synthesize(_tts("tts-1", "Hi"))
    assert info.value.kind is ErrorKind.BAD_REQUEST


async def test_websocket_task_that_never_starts_times_out(make_cloud: Any, sim: SimHandle) -> None:
    cloud = await make_cloud(upstream_timeout_s=0.3)
    sim.fault(service="tts", hang=True, times=1)
    with pytest.raises(ProviderError) as info:
        await cloud.tts.synthesize(_tts("cosyvoice-v2", "Hello."))
    assert info.value.kind is ErrorKind.TIMEOUT
    assert cloud.client.pooled_websockets == []


async def test_websocket_connection_refused_is_unavailable(
    make_cloud: Any, speech_16k: tuple[bytes, str]
) -> None:
    cloud = await make_cloud(
        dashscope_websocket_base_url=f"ws://127.0.0.1:{free_port()}/api-ws/v1/inference/"
    )
    with pytest.raises(ProviderError) as info:
        await cloud.asr.transcribe(_asr("paraformer-realtime-v2", speech_16k[0]))
    assert info.value.kind is ErrorKind.UNAVAILABLE
    with pytest.raises(ProviderError) as info:
        async for _ in cloud.tts.synthesize_stream(_tts("cosyvoice-v2", "Hello.")):
            pass
    assert info.value.kind is ErrorKind.UNAVAILABLE


async def test_websocket_url_with_trailing_slash_works(make_cloud: Any, sim: SimHandle) -> None:
    cloud = await make_cloud(dashscope_websocket_base_url=sim.ws_base + "/")
    result = await cloud.tts.synthesize(_tts("cosyvoice-v2", "Hello."))
    assert result.audio.pcm
