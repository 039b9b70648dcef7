"""Bailian speech recognition: Paraformer/Fun-ASR realtime over WebSocket, Qwen3-ASR over HTTP."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

from providers.base import (
    ErrorKind,
    ProviderError,
    Segment,
    TranscribeRequest,
    Transcript,
    TranscriptPart,
    WordTiming,
)
from providers.cloud.client import DashScopeClient
from providers.cloud.lifecycle import CloudLifecycle
from providers.cloud.wav import pcm_to_wav
from providers.cloud.ws_task import DuplexTask, duplex_task

MULTIMODAL_PATH = "services/aigc/multimodal-generation/generation"

#: Models listed by ``models()``. Other ``paraformer*``/``fun-asr*`` realtime and ``qwen*-asr*`` names work too.
ASR_MODELS: tuple[str, ...] = (
    "paraformer-realtime-v2",
    "paraformer-realtime-8k-v2",
    "fun-asr-realtime",
    "qwen3-asr-flash",
)

#: Audio per binary frame: 100 ms, as the docs recommend. Sent back to back (no pacing sleep).
FRAME_SECONDS = 0.1
#: qwen3-asr-flash accepts data URLs up to 10 MB.
MAX_DATA_URL_BYTES = 10 * 1024 * 1024


def is_realtime_model(model: str) -> bool:
    return model.startswith(("paraformer", "fun-asr")) and "realtime" in model


def is_qwen_asr_model(model: str) -> bool:
    return model.startswith("qwen") and "asr" in model


def _is_cjk(ch: str) -> bool:
    return "\u3000" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uff00" <= ch <= "\uffef"


def join_sentences(texts: list[str]) -> str:
    """Space between sentences, except between CJK text (which has no spaces)."""
    out = ""
    for text in (t.strip() for t in texts):
        if not text:
            continue
        if out and not (_is_cjk(out[-1]) and _is_cjk(text[0])):
            out += " "
        out += text
    return out


def sentence_to_segment(index: int, sentence: dict[str, Any]) -> Segment:
    words = [
        WordTiming(
            text=f"{w.get('text', '')}{w.get('punctuation') or ''}",
            start=(w.get("begin_time") or 0) / 1000.0,
            end=(w.get("end_time") or 0) / 1000.0,
        )
        for w in sentence.get("words") or []
    ]
    return Segment(
        id=index,
        start=(sentence.get("begin_time") or 0) / 1000.0,
        end=(sentence.get("end_time") or 0) / 1000.0,
        text=(sentence.get("text") or "").strip(),
        words=words,
    )


def _sentence(event: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sentence of a result-generated event; heartbeats skipped.

    The SDK's rule: a sentence is final once ``end_time`` is set (not by ``sentence_end``).
    """
    if event is None:
        return None
    sentence = ((event.get("payload") or {}).get("output") or {}).get("sentence")
    if isinstance(sentence, dict) and not sentence.get("heartbeat"):
        return sentence
    return None


def _text_so_far(finals: dict[Any, dict[str, Any]], partial: dict[str, Any] | None) -> str:
    ordered = sorted(finals.values(), key=lambda s: s.get("begin_time") or 0)
    texts = [s.get("text") or "" for s in ordered]
    if partial is not None:
        texts.append(partial.get("text") or "")
    return join_sentences(texts)


def _recognition_payload(request: TranscribeRequest) -> dict[str, Any]:
    parameters: dict[str, Any] = {"format": "pcm", "sample_rate": request.audio.sample_rate}
    if request.language:
        parameters["language_hints"] = [request.language]
    for key in ("vocabulary_id", "disfluency_removal_enabled"):
        if key in request.extra:
            parameters[key] = request.extra[key]
    return {
        "model": request.model,
        "task_group": "audio",
        "task": "asr",
        "function": "recognition",
        "parameters": parameters,
        "input": {},
    }


async def _frames(pcm: bytes, sample_rate: int) -> AsyncIterator[bytes]:
    """Whole audio as 100 ms frames (sent back to back, no pacing sleep)."""
    step = max(2, int(sample_rate * FRAME_SECONDS) * 2)
    view = memoryview(pcm)
    for offset in range(0, len(pcm), step):
        yield bytes(view[offset : offset + step])


class BailianASRProvider(CloudLifecycle):
    """``TranscribeProvider`` for Bailian ASR models. No retries here: the router owns them."""

    def __init__(self, settings: Any, client: DashScopeClient | None = None) -> None:
        super().__init__(settings, client)

    def models(self) -> list[str]:
        return list(ASR_MODELS)

    async def transcribe(self, request: TranscribeRequest) -> Transcript:
        if not request.audio.pcm:
            raise ProviderError(ErrorKind.BAD_REQUEST, "the audio is empty")
        if is_realtime_model(request.model):
            return await self._transcribe_realtime(request)
        if is_qwen_asr_model(request.model):
            return await self._transcribe_qwen(request)
        raise ProviderError(ErrorKind.BAD_REQUEST, f"bailian does not serve ASR model {request.model!r}")

    # ------------------------------------------------------------------ Paraformer / Fun-ASR

    def streams_transcription(self, model: str) -> bool:
        return is_realtime_model(model)

    async def _transcribe_realtime(self, request: TranscribeRequest) -> Transcript:
        """A whole utterance: the stream below, fed in 100 ms frames back to back."""
        audio = request.audio
        parts = self.transcribe_stream(request, _frames(audio.pcm, audio.sample_rate))
        try:
            async for part in parts:
                if part.final and part.transcript is not None:
                    return part.transcript
        finally:
            await parts.aclose()
        raise ProviderError(ErrorKind.RETRYABLE, "the recognition ended without a result")

    async def transcribe_stream(
        self, request: TranscribeRequest, audio: AsyncIterator[bytes]
    ) -> AsyncIterator[TranscriptPart]:
        """Paraformer/Fun-ASR realtime: audio frames go out as they arrive while result-generated
        events come back; each yields the transcript so far (final sentences, then the partial
        one), and the final part comes after task-finished."""
        if not is_realtime_model(request.model):
            raise ProviderError(ErrorKind.BAD_REQUEST, f"{request.model!r} is not a streaming ASR model")
        rate = request.audio.sample_rate
        finals: dict[Any, dict[str, Any]] = {}
        partial: dict[str, Any] | None = None
        sent = [0]  # bytes of audio sent
        async with duplex_task(self.client, _recognition_payload(request)) as task:
            # Send while receiving, so neither side's buffers can stall the other.
            sender = asyncio.create_task(self._send_audio(task, audio, sent))
            try:
                while (item := await task.receive()) is not None:
                    sentence = _sentence(item[0])
                    if sentence is None:
                        continue
                    key = sentence.get("sentence_id", len(finals))
                    if sentence.get("end_time") is not None:
                        finals[key] = sentence
                        if partial is not None and partial.get("sentence_id", key) == key:
                            partial = None
                    else:
                        partial = sentence
                    yield TranscriptPart(_text_so_far(finals, partial))
                await sender  # surfaces a send failure
            finally:
                if not sender.done():
                    sender.cancel()
                    await asyncio.wait([sender])  # our own cancellation still propagates
                if not sender.cancelled():
                    sender.exception()  # mark retrieved; the receive error is the one raised
        ordered = sorted(finals.values(), key=lambda s: s.get("begin_time") or 0)
        segments = [sentence_to_segment(i, s) for i, s in enumerate(ordered)]
        text = join_sentences([s.text for s in segments])
        transcript = Transcript(
            text=text, language=request.language, duration_s=sent[0] / 2 / rate, segments=segments
        )
        yield TranscriptPart(text, final=True, transcript=transcript)

    @staticmethod
    async def _send_audio(task: DuplexTask, audio: AsyncIterator[bytes], sent: list[int]) -> None:
        async for frame in audio:
            if frame:
                await task.send_audio(frame)
                sent[0] += len(frame)
        await task.finish()

    # ------------------------------------------------------------------ Qwen3-ASR (HTTP)

    async def _transcribe_qwen(self, request: TranscribeRequest) -> Transcript:
        audio = request.audio
        wav = await asyncio.to_thread(_data_url, audio.pcm, audio.sample_rate)
        if len(wav) > MAX_DATA_URL_BYTES:
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                f"audio is too long for {request.model}: its base64 form exceeds 10 MB",
            )
        asr_options: dict[str, Any] = {"enable_itn": bool(request.extra.get("enable_itn", False))}
        if request.language:
            asr_options["language"] = request.language
        system_text = request.prompt or ""
        body = {
            "model": request.model,
            "input": {
                "messages": [
                    {"role": "system", "content": [{"text": system_text}]},
                    {"role": "user", "content": [{"audio": wav}]},
                ]
            },
            "parameters": {"asr_options": asr_options},
        }
        reply = await self.client.post_json(MULTIMODAL_PATH, body)
        try:
            message = reply["output"]["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError(ErrorKind.RETRYABLE, "DashScope ASR reply has no message") from exc
        content = message.get("content") or []
        if isinstance(content, str):
            text = content
        else:
            text = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        language = request.language
        for note in message.get("annotations") or []:
            if isinstance(note, dict) and note.get("type") == "audio_info" and note.get("language"):
                language = note["language"]
        text = text.strip()
        duration = audio.duration_s
        segments = [Segment(id=0, start=0.0, end=duration, text=text)] if text else []
        return Transcript(text=text, language=language, duration_s=duration, segments=segments)


def _data_url(pcm: bytes, sample_rate: int) -> str:
    """``data:audio/wav;base64,...`` (runs in a worker thread: base64 of minutes of audio is not free)."""
    return "data:audio/wav;base64," + base64.b64encode(pcm_to_wav(pcm, sample_rate)).decode("ascii")
