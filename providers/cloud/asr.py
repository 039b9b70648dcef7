"""Bailian speech recognition: Paraformer/Fun-ASR realtime over WebSocket, Qwen3-ASR over HTTP."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from providers.base import ErrorKind, ProviderError, Segment, TranscribeRequest, Transcript, WordTiming
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


def _final_sentence(event: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sentence of a result-generated event if it is final.

    The SDK's rule: final once ``end_time`` is set (not by ``sentence_end``); heartbeats skipped.
    """
    if event is None:
        return None
    sentence = ((event.get("payload") or {}).get("output") or {}).get("sentence")
    if isinstance(sentence, dict) and sentence.get("end_time") is not None and not sentence.get("heartbeat"):
        return sentence
    return None


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

    async def _transcribe_realtime(self, request: TranscribeRequest) -> Transcript:
        audio = request.audio
        parameters: dict[str, Any] = {"format": "pcm", "sample_rate": audio.sample_rate}
        if request.language:
            parameters["language_hints"] = [request.language]
        for key in ("vocabulary_id", "disfluency_removal_enabled"):
            if key in request.extra:
                parameters[key] = request.extra[key]
        payload = {
            "model": request.model,
            "task_group": "audio",
            "task": "asr",
            "function": "recognition",
            "parameters": parameters,
            "input": {},
        }
        finals: dict[Any, dict[str, Any]] = {}
        async with duplex_task(self.client, payload) as task:
            # Send while receiving, so neither side's buffers can stall the other.
            sender = asyncio.create_task(self._send_audio(task, audio.pcm, audio.sample_rate))
            try:
                while (item := await task.receive()) is not None:
                    sentence = _final_sentence(item[0])
                    if sentence is not None:
                        finals[sentence.get("sentence_id", len(finals))] = sentence
                await sender  # surfaces a send failure
            finally:
                if not sender.done():
                    sender.cancel()
                    await asyncio.wait([sender])  # our own cancellation still propagates
                if not sender.cancelled():
                    sender.exception()  # mark retrieved; the receive error is the one raised
        ordered = sorted(finals.values(), key=lambda s: s.get("begin_time") or 0)
        segments = [sentence_to_segment(i, s) for i, s in enumerate(ordered)]
        return Transcript(
            text=join_sentences([s.text for s in segments]),
            language=request.language,
            duration_s=audio.duration_s,
            segments=segments,
        )

    @staticmethod
    async def _send_audio(task: DuplexTask, pcm: bytes, sample_rate: int) -> None:
        step = max(2, int(sample_rate * FRAME_SECONDS) * 2)
        view = memoryview(pcm)
        for offset in range(0, len(pcm), step):
            await task.send_audio(bytes(view[offset : offset + step]))
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
