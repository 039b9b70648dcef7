"""piper TTS and faster-whisper ASR with the real voices/models from PyPI, checked against each other."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from gateway.settings import Settings
from gateway.voices.statement import make_statement, match_score
from providers.base import (
    AudioData,
    ErrorKind,
    ProviderError,
    Segment,
    SynthesizeRequest,
    TranscribeRequest,
    WordTiming,
)
from providers.local import FasterWhisperProvider, ModelPool, PiperTTSProvider, build_local_providers
from providers.local.whisper_engine import STRETCHED_WORD_S, _swallowed
from providers.wav import float_to_pcm16
from tests.sounds import piper_speech

pytestmark = pytest.mark.slow

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
TWO_SENTENCES = "Good morning, how can I help you today? Our store opens at nine o'clock."


@pytest.fixture(scope="module")
def speech(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FasterWhisperProvider, PiperTTSProvider]]:
    pool = ModelPool(2)
    _, asr, tts = build_local_providers(Settings(data_dir=tmp_path_factory.mktemp("data")), pool)
    yield asr, tts
    pool.shutdown()


def tts_request(text: str, **kw: object) -> SynthesizeRequest:
    return SynthesizeRequest(model="piper-joe", text=text, voice="joe", **kw)  # type: ignore[arg-type]


def words_of(text: str) -> set[str]:
    return {w.strip(".,!?'\"").lower() for w in text.split()}


async def test_speech_round_trip(speech: tuple[FasterWhisperProvider, PiperTTSProvider]) -> None:
    asr, tts = speech
    spoken = await tts.synthesize(tts_request(SENTENCE))
    assert spoken.audio.sample_rate == 22050
    assert spoken.characters == len(SENTENCE)
    assert 2.0 < spoken.audio.duration_s < 8.0
    # 22.05 kHz in: the provider resamples to Whisper's 16 kHz itself
    transcript = await asr.transcribe(TranscribeRequest(model="whisper-tiny.en", audio=spoken.audio))
    assert {"quick", "brown", "fox", "lazy", "dog", "river"} <= words_of(transcript.text)
    assert transcript.language == "en"
    assert transcript.duration_s == pytest.approx(spoken.audio.duration_s, abs=0.05)
    assert transcript.segments
    for seg in transcript.segments:
        assert 0.0 <= seg.start < seg.end <= transcript.duration_s + 0.1
    words = [w for seg in transcript.segments for w in seg.words]
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert "fox" in {w.text.strip(".,").lower() for w in words}


async def test_silence_transcribes_to_nothing(speech: tuple[FasterWhisperProvider, PiperTTSProvider]) -> None:
    asr, _ = speech
    silence = AudioData(np.zeros(16000 * 2, dtype="<i2").tobytes(), 16000)
    transcript = await asr.transcribe(TranscribeRequest(model="whisper-tiny.en", audio=silence))
    assert transcript.text == ""  # the VAD drops it instead of letting Whisper invent words
    assert transcript.duration_s == pytest.approx(2.0)


async def test_other_language_on_an_english_only_model_is_unavailable(
    speech: tuple[FasterWhisperProvider, PiperTTSProvider],
) -> None:
    asr, _ = speech
    audio = AudioData(b"\1\0" * 16000, 16000)
    with pytest.raises(ProviderError) as err:
        await asr.transcribe(TranscribeRequest(model="whisper-tiny.en", audio=audio, language="zh"))
    assert err.value.kind is ErrorKind.UNAVAILABLE and "English-only" in err.value.message


async def test_empty_audio_is_a_bad_request(speech: tuple[FasterWhisperProvider, PiperTTSProvider]) -> None:
    asr, _ = speech
    with pytest.raises(ProviderError) as err:
        await asr.transcribe(TranscribeRequest(model="whisper-tiny.en", audio=AudioData(b"", 16000)))
    assert err.value.kind is ErrorKind.BAD_REQUEST


async def test_stream_yields_one_chunk_per_sentence(
    speech: tuple[FasterWhisperProvider, PiperTTSProvider],
) -> None:
    _, tts = speech
    chunks = [c async for c in tts.synthesize_stream(tts_request(TWO_SENTENCES))]
    assert len(chunks) >= 2
    assert all(c.sample_rate == 22050 and len(c.pcm) > 22050 for c in chunks)  # each well over 0.5 s
    whole = await tts.synthesize(tts_request(TWO_SENTENCES))
    streamed = sum(len(c.pcm) for c in chunks) / 2 / 22050
    assert streamed == pytest.approx(whole.audio.duration_s, rel=0.15)


async def test_speed_changes_duration(speech: tuple[FasterWhisperProvider, PiperTTSProvider]) -> None:
    _, tts = speech
    normal = (await tts.synthesize(tts_request(SENTENCE))).audio.duration_s
    fast = (await tts.synthesize(tts_request(SENTENCE, speed=2.0))).audio.duration_s
    slow = (await tts.synthesize(tts_request(SENTENCE, speed=0.5))).audio.duration_s
    assert fast < 0.75 * normal
    assert slow > 1.5 * normal


async def test_requested_sample_rate(speech: tuple[FasterWhisperProvider, PiperTTSProvider]) -> None:
    _, tts = speech
    native = await tts.synthesize(tts_request(SENTENCE, sample_rate=None))
    resampled = await tts.synthesize(tts_request(SENTENCE, sample_rate=16000))
    assert resampled.audio.sample_rate == 16000
    assert resampled.audio.duration_s == pytest.approx(native.audio.duration_s, rel=0.1)


@pytest.mark.parametrize(
    ("text", "kw", "code"),
    [
        ("   ", {}, "InvalidText"),
        ("Hello.", {"speed": 10.0}, "InvalidSpeed"),
        ("Hi.", {"sample_rate": 100}, "InvalidSampleRate"),
    ],
)
async def test_bad_tts_input_is_a_bad_request(
    speech: tuple[FasterWhisperProvider, PiperTTSProvider], text: str, kw: dict, code: str
) -> None:
    _, tts = speech
    with pytest.raises(ProviderError) as err:
        await tts.synthesize(tts_request(text, **kw))
    assert err.value.kind is ErrorKind.BAD_REQUEST and err.value.code == code


async def test_abandoned_stream_frees_the_voice(
    speech: tuple[FasterWhisperProvider, PiperTTSProvider],
) -> None:
    _, tts = speech
    long_text = " ".join(f"This is sentence number {n}." for n in range(40))
    stream = tts.synthesize_stream(tts_request(long_text))
    first = await anext(stream)
    assert first.pcm
    await stream.aclose()
    # piper-joe has concurrency 1: this only completes if the abandoned stream let go of it
    result = await asyncio.wait_for(tts.synthesize(tts_request("Still here.")), 30)
    assert result.audio.duration_s > 0.3


async def test_health_reports_loaded_models(speech: tuple[FasterWhisperProvider, PiperTTSProvider]) -> None:
    for provider in speech:
        await provider.preload()
        health = await provider.health()
        assert health.ok and "loaded" in health.detail and "not loaded" not in health.detail
        await provider.unload()
        assert "not loaded" in (await provider.health()).detail


async def test_speech_whisper_skipped_is_decoded_again(
    speech: tuple[FasterWhisperProvider, PiperTTSProvider],
) -> None:
    """whisper tiny.en read this consent statement (piper's noise off: the same audio every run)
    as "…use it for", its last word timed over the remaining 6 s, on the machine where it was
    found; the engine decodes again from before that word, so the whole statement is heard."""
    asr, _ = speech
    statement = make_statement(
        tenant="globex",
        purpose="customer service greetings",
        operator="Talkgate",
        code="828836",
        language="en",
        speaker="Jane",
    )
    samples, rate = piper_speech(statement, steady=True)
    audio = AudioData(float_to_pcm16(samples).tobytes(), rate)
    transcript = await asr.transcribe(TranscribeRequest(model="whisper-tiny.en", audio=audio))
    assert match_score(statement, transcript.text) >= 0.9, transcript.text
    assert "purpose" in words_of(transcript.text)
    words = [w for seg in transcript.segments for w in seg.words]
    assert all(w.end - w.start <= STRETCHED_WORD_S for w in words), words
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert [seg.id for seg in transcript.segments] == list(range(len(transcript.segments)))


def _segment(index: int, words: list[tuple[str, float, float]]) -> Segment:
    timed = [WordTiming(text, start, end) for text, start, end in words]
    return Segment(index, words[0][1], words[-1][2], "".join(t for t, _, _ in words).strip(), timed)


def test_a_stretched_word_marks_where_decoding_resumes() -> None:
    first = _segment(0, [(" Hello", 0.0, 0.4), (" there.", 0.5, 0.9)])
    second = _segment(1, [(" I", 1.2, 1.3), (" agree", 1.4, 1.8), (" for", 2.0, 8.5)])
    kept, resume = _swallowed([first, second])
    assert resume == 1.8  # the end of the word before the stretched one: silence between words
    assert [s.text for s in kept] == ["Hello there.", "I agree"]
    assert kept[1].end == 1.8 and [w.text for w in kept[1].words] == [" I", " agree"]
    # a segment that starts with the stretched word is decoded again from its own start
    kept, resume = _swallowed([first, _segment(1, [(" for", 2.0, 8.5), (" it", 8.6, 8.8)])])
    assert (kept, resume) == ([first], 2.0)
    # Chinese words carry no spaces: the kept text is joined as Whisper wrote it
    zh = _segment(0, [("我", 0.0, 0.3), ("同意", 0.3, 0.8), ("供", 0.9, 6.0)])
    assert _swallowed([zh])[0][0].text == "我同意"
    assert _swallowed([first, _segment(1, [(" long", 1.0, 1.0 + STRETCHED_WORD_S)])]) is None
