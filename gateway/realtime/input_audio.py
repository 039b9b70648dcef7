"""The input side of a realtime session: the audio buffer, server VAD, and committed user turns.

``InputAudio`` is the part of ``RealtimeSession`` (gateway/realtime/session.py, which inherits
it) that handles ``input_audio_buffer.*`` and the VAD's ``speech_started``/``speech_stopped``:
it owns the buffer, the detector and the live transcript of the speech in progress
(gateway/realtime/live_transcript.py), and calls back into the session for what a turn
triggers (barge-in, ``_response_create``). Kept apart so that each file has one job.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from gateway.realtime.audio import wire_to_pcm
from gateway.realtime.events import (
    PCM_RATE,
    BadEvent,
    SessionConfig,
    decode_pcm,
    message_item,
    new_id,
    server_event,
)
from gateway.realtime.idle import IDLE_NOTE, IdleTimer
from gateway.realtime.items import Conversation, Item
from gateway.realtime.live_transcript import LiveTranscript
from gateway.realtime.transcription import transcribe_item
from gateway.realtime.vad import SpeechDetector
from policies.asr_stream import can_stream

#: The input buffer holds at most ``settings.limits.audio_max_seconds["realtime"]`` (120 s by
#: default: 5.76 MB of 24 kHz PCM16), the shared per-surface audio limit (gateway/inputs/audio.py).
AUDIO_SURFACE = "realtime"
#: Shortest committable audio, as OpenAI: 100 ms.
MIN_COMMIT_BYTES = PCM_RATE // 10 * 2
#: Bytes of 24 kHz PCM16 per millisecond.
BYTES_PER_MS = PCM_RATE * 2 // 1000
#: Early transcription (live_transcript.py) starts once the closing silence has lasted this share
#: of ``silence_duration_ms``: late enough that pauses between words rarely start a guess, early
#: enough to hide most of a Whisper run inside the wait.
EARLY_AFTER = 1 / 3


class InputAudio:
    # Provided by the session.
    send: Any
    router: Any
    settings: Any
    account: Any
    metrics: Any
    vad_scorer: Any
    config: SessionConfig
    conversation: Conversation
    response: Any
    response_task: asyncio.Task[None] | None
    speech_end: float | None
    transcribed: float | None

    def _init_input(self) -> None:
        self.buffer = bytearray()
        self.audio_in = 0  # bytes appended in the session; the buffer holds the last of them
        self.vad: SpeechDetector | None = None
        self.vad_origin_ms = 0  # session audio time where the detector started
        self.speech_item: str | None = None  # item id announced by speech_started
        self.live: LiveTranscript | None = None  # its transcription while it is spoken
        self.live_at = 0  # session audio byte offset fed to ``live`` so far
        self.idle = IdleTimer(self._idle_expired)  # server_vad idle_timeout_ms (gateway/realtime/idle.py)
        self.closed = False  # the session is closing: nothing new may start

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        raise NotImplementedError

    async def _response_create(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _turn_detection_changed(self) -> None:
        """A new detector for the new settings (none for manual turns); a speech in progress is dropped."""
        vad = self.config.turn_detection
        self.speech_item = None
        self.vad = None
        await self._drop_live()
        if vad is not None:
            self.vad_origin_ms = self.audio_in // BYTES_PER_MS
            self.vad = await asyncio.to_thread(
                partial(SpeechDetector, scorer=self.vad_scorer),
                vad["threshold"],
                vad["prefix_padding_ms"],
                vad["silence_duration_ms"],
            )
        self._arm_idle()

    async def _append(self, event: dict[str, Any]) -> None:
        kind = self.config.input_format
        pcm = decode_pcm(event.get("audio"), "audio", event.get("event_id"), kind)
        if kind != "audio/pcm":
            pcm = await asyncio.to_thread(wire_to_pcm, pcm, kind)
        seconds = self.settings.limits.audio_seconds(AUDIO_SURFACE)
        if len(self.buffer) + len(pcm) > seconds * PCM_RATE * 2:
            raise BadEvent(
                f"The input audio buffer is full ({seconds:g} s): commit or clear it.",
                "input_audio_buffer_full",
                "audio",
                event.get("event_id"),
            )
        self.buffer += pcm
        self.audio_in += len(pcm)
        if self.vad is not None:
            for name, ms in await asyncio.to_thread(self.vad.feed, pcm):
                await self._vad_event(name, self.vad_origin_ms + ms)
            self._feed_live()
            if self.live is not None and self.vad.speaking:
                self.live.pause(self._pause_ms() >= self.vad.silence_duration_ms * EARLY_AFTER)
            if not self.vad.speaking:  # only the prefix padding before speech is ever committed
                keep = (self.config.turn_detection or {}).get("prefix_padding_ms", 0) + 100
                self._drop_before(self.audio_in - keep * BYTES_PER_MS)

    def _drop_before(self, offset: int) -> None:
        """Drops buffered audio before session byte ``offset`` (whole samples)."""
        cut = offset - (self.audio_in - len(self.buffer))
        if cut > 0:
            del self.buffer[: cut - cut % 2]

    async def _vad_event(self, name: str, ms: int) -> None:
        if name == "speech_started":
            self._drop_before(ms * BYTES_PER_MS)
            self.speech_item = new_id("item")
            self.idle.disarm()
            await self.send(
                server_event("input_audio_buffer.speech_started", audio_start_ms=ms, item_id=self.speech_item)
            )
            task, turn = self.response_task, self.response
            vad = self.config.turn_detection or {}
            if vad.get("interrupt_response") and task and not task.done() and turn:
                turn.cancel_reason = "turn_detected"  # barge-in
                task.cancel()
                if self.metrics is not None:
                    self.metrics.barge_ins.inc()
            await self._drop_live()
            if self.settings.realtime.stream_transcription:  # the speech is heard while it goes on
                early = self.metrics.early_transcripts if self.metrics is not None else None
                self.live = LiveTranscript(
                    self.speech_item,
                    router=self.router,
                    send=self.send,
                    speculate=not can_stream(self.router),
                    on_guess=(lambda outcome: early.labels(outcome).inc()) if early is not None else None,
                    options=self.config.transcription,
                    admit=self.account.admit_stream if self.account is not None else None,
                )
                self.live_at = self.audio_in - len(self.buffer)
                self._feed_live()
            return
        item_id, self.speech_item = self.speech_item or new_id("item"), None
        self.speech_end = time.perf_counter()
        self._feed_live()
        live, self.live = self.live, None
        await self.send(server_event("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=item_id))
        end = ms * BYTES_PER_MS - (self.audio_in - len(self.buffer))
        end = max(0, min(len(self.buffer), end - end % 2))
        if end < MIN_COMMIT_BYTES:
            if live is not None:
                await live.cancel()
            return  # a click, not a turn
        pcm = bytes(self.buffer[:end])
        del self.buffer[:end]
        await self._commit_audio(pcm, item_id, live)
        busy = self.response_task is not None and not self.response_task.done()
        if (self.config.turn_detection or {}).get("create_response") and not busy:
            await self._response_create({})
        self._arm_idle()

    def _pause_ms(self) -> int:
        """How long the VAD has heard silence within the speech in progress (0: none)."""
        assert self.vad is not None
        start = self.vad.silence_start
        return 0 if start is None else self.vad.position_ms - start

    def _feed_live(self) -> None:
        """Hands the audio appended since the last call to the speech's live transcript."""
        if self.live is None:
            return
        base = self.audio_in - len(self.buffer)  # session offset of buffer[0]
        start = max(self.live_at, base) - base
        if start < len(self.buffer):
            self.live.feed(bytes(self.buffer[start:]))
        self.live_at = self.audio_in

    async def _drop_live(self) -> None:
        live, self.live = self.live, None
        if live is not None:
            await live.cancel()

    async def _clear(self, event: dict[str, Any]) -> None:
        self.buffer.clear()
        await self._drop_live()
        if self.vad is not None:
            self.vad.reset_speech()
            self.speech_item = None
        await self.send(server_event("input_audio_buffer.cleared"))

    async def _commit(self, event: dict[str, Any]) -> None:
        if len(self.buffer) < MIN_COMMIT_BYTES:
            ms = len(self.buffer) * 1000 // (PCM_RATE * 2)
            raise BadEvent(
                f"Error committing input audio buffer: at least 100 ms of audio is needed, the buffer has {ms} ms.",
                "input_audio_buffer_commit_empty",
                None,
                event.get("event_id"),
            )
        pcm, self.buffer = bytes(self.buffer), bytearray()
        self.speech_end = time.perf_counter()
        item_id, self.speech_item = self.speech_item or new_id("item"), None
        await self._drop_live()  # the client's segment is not the speech VAD heard: transcribed whole
        if self.vad is not None:
            self.vad.reset_speech()
        await self._commit_audio(pcm, item_id)

    async def _commit_audio(self, pcm: bytes, item_id: str, live: LiveTranscript | None = None) -> None:
        item = Item(item_id, "user", "", kind="input_audio")
        previous = self.conversation.add(item)
        await self.send(
            server_event("input_audio_buffer.committed", previous_item_id=previous, item_id=item.id)
        )
        wire = message_item(item.id, "user", "", kind="input_audio")
        await self.send(server_event("conversation.item.added", previous_item_id=previous, item=wire))
        item.transcription = self._spawn(self._transcribe(item, pcm, previous, live))

    async def _transcribe(
        self, item: Item, pcm: bytes, previous: str | None, live: LiveTranscript | None
    ) -> None:
        if await transcribe_item(
            item,
            pcm,
            previous,
            router=self.router,
            account=self.account,
            send=self.send,
            live=live,
            options=self.config.transcription,
        ):
            self.transcribed = time.perf_counter()

    # ------------------------------------------------------------------ idle timeout

    def _arm_idle(self, playback_s: float = 0.0) -> None:
        """Starts the idle wait when server VAD has ``idle_timeout_ms`` and nothing is going on:
        no speech, no response (``playback_s``: the last answer's audio still playing)."""
        idle_ms = (self.config.turn_detection or {}).get("idle_timeout_ms")
        task = self.response_task
        busy = task is not None and not task.done() and task is not asyncio.current_task()
        if not idle_ms or self.vad is None or self.vad.speaking or busy:
            self.idle.disarm()
            return
        self.idle.arm(playback_s + idle_ms / 1000)

    async def _idle_expired(self) -> None:
        vad = self.config.turn_detection or {}
        idle_ms = vad.get("idle_timeout_ms")
        busy = self.response_task is not None and not self.response_task.done()
        if not idle_ms or self.vad is None or self.vad.speaking or busy or self.closed:
            return
        item_id, end_ms = new_id("item"), self.audio_in // BYTES_PER_MS
        start_ms = max(self.vad_origin_ms, end_ms - idle_ms)
        await self.send(
            server_event(
                "input_audio_buffer.timeout_triggered",
                audio_start_ms=start_ms,
                audio_end_ms=end_ms,
                item_id=item_id,
            )
        )
        self.buffer.clear()  # the silence is the item's audio; nothing of it is transcribed
        item = Item(item_id, "user", IDLE_NOTE.format(seconds=idle_ms / 1000), kind="input_audio")
        previous = self.conversation.add(item)
        await self.send(
            server_event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        )
        wire = message_item(item_id, "user", "", kind="input_audio")
        await self.send(server_event("conversation.item.added", previous_item_id=previous, item=wire))
        await self.send(server_event("conversation.item.done", previous_item_id=previous, item=wire))
        if vad.get("create_response"):
            await self._response_create({})
        else:
            self._arm_idle()
