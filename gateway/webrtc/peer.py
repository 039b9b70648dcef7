"""One live call: an aiortc peer connection wired to a realtime session core.

The WebRTC adapter of the realtime protocol (design.md, round 2): the session core is the
same ``RealtimeSession`` the WebSocket route drives; this module only translates. Client
events arrive on the ``oai-events`` data channel and go to ``session.handle``; the session's
server events go back on the channel, except the audio deltas, which feed the speech buffer
that the audio and avatar tracks play (audio never travels twice). The microphone track is
resampled to the session's 24 kHz and appended to its input buffer, where server VAD makes
the turns. Barge-in: on ``input_audio_buffer.speech_started`` while an answer is playing, the
queued audio is dropped at once (silence from the next 20 ms frame) and the late deltas of the
cancelled response are ignored; ``output_audio_buffer.started/stopped/cleared`` tell the page
what is playing, as OpenAI's WebRTC endpoint does. ``talkgate.response.backend`` names the
chat provider that answered (cloud, local, fallback) for the page. The avatar shows each answer's
emotion while its audio plays (``_emotion_of``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import Any

import orjson
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from gateway.conversation.emotion import decide
from gateway.realtime.audio import Resampler
from gateway.realtime.guard import FrameGuard
from gateway.realtime.session import RealtimeSession
from gateway.voices.use import store_for
from gateway.webrtc.tracks import (
    OUT_RATE,
    PCM_RATE,
    AvatarTrack,
    MediaClock,
    SpeechBuffer,
    SpeechTrack,
    pump_microphone,
)

log = logging.getLogger("talkgate.webrtc")

CHANNEL = "oai-events"
#: Events held for a data channel that is not open yet (session.created is sent before it is).
MAX_EARLY_EVENTS = 256
#: Server VAD is on for WebRTC calls unless the session config says otherwise (as OpenAI).
DEFAULT_TURN_DETECTION = {"type": "server_vad"}


def ice_configuration(settings: Any) -> RTCConfiguration:
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in settings.webrtc.ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


def backend_of(provider: str | None, fallback: bool) -> str:
    """cloud | local | fallback, for the page (``local:`` targets run on this machine)."""
    if fallback:
        return "fallback"
    return "local" if (provider or "").startswith("local:") else "cloud"


class LiveCall:
    """Peer connection + session + tracks for one browser; ``answer`` then runs until closed."""

    def __init__(
        self,
        services: Any,
        *,
        model: str,
        chat_model: str,
        face: Any,
        session_config: dict[str, Any],
        account: Any = None,
        session_id: str | None = None,
        tenant: str = "default",
    ):
        settings = services.settings
        self.settings = settings
        self.pc = RTCPeerConnection(ice_configuration(settings))
        self.clock = MediaClock()
        self.buffer = SpeechBuffer(self._playback)
        self.audio = SpeechTrack(self.clock, self.buffer)
        self.video = (
            AvatarTrack(self.clock, self.buffer, face, settings.webrtc.fps) if face is not None else None
        )
        self.out_resampler = Resampler(OUT_RATE)
        #: the avatar shows each answer's emotion while it plays (None: voice only, or turned off)
        self.face = face if face is not None and settings.emotion.enabled else None
        self.spoken: dict[str, str] = {}  # response id → its transcript so far (the last few)
        self.account = account  # gateway.realtime.account.SessionAccount: slot, quotas, usage rows
        self.metrics = services.realtime_metrics
        self.session = RealtimeSession(
            self.send,
            services.router,
            settings,
            model,
            chat_model,
            account=account,
            metrics=self.metrics,
            session_id=session_id,
            vad_scorer=services.vad_scorer,
            retriever=services.retriever,
            tenant=tenant,
            voices=store_for(services),
        )
        self.guard = FrameGuard(settings.realtime)  # the data channel's frame limits, as the WebSocket's
        if self.metrics is not None:
            self.metrics.active.inc()
        self.session_config = session_config
        self.channel: Any = None
        self.early: list[str] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.cut: set[str] = set()  # responses cancelled by barge-in: their late audio is dropped
        self.backend_told: set[str] = set()
        self.closed = asyncio.Event()
        self.connected = asyncio.Event()
        self.id = self.session.config.id
        self.tenant: str | None = None
        self.barge_ins: list[float] = []  # seconds from speech_started to silence queued (bench)
        self._wire()

    # ------------------------------------------------------------------ signalling

    def _wire(self) -> None:
        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label != CHANNEL:
                return
            self.channel = channel

            @channel.on("message")
            def on_message(message: Any) -> None:
                self._spawn(self._client_event(message))

            if channel.readyState == "open":
                self._flush_early()
            else:
                channel.on("open", self._flush_early)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                self._spawn(pump_microphone(track, self._append))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("call %s: connection %s", self.id, pc.connectionState)
            if pc.connectionState == "connected":
                self.connected.set()
            if pc.connectionState in ("failed", "closed"):
                await self.close()

    async def answer(self, offer_sdp: str) -> str:
        """Applies the browser's offer and returns the SDP answer (ICE gathering complete)."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc's parser raises several kinds on a malformed offer
            raise ValueError(f"{type(exc).__name__}: {exc}") from None
        kinds = {t.kind for t in self.pc.getTransceivers()}
        if "audio" not in kinds:
            raise ValueError("The offer has no audio section: the call needs the microphone's audio.")
        self.pc.addTrack(self.audio)  # joins the offer's audio transceiver: sendrecv
        if self.video is not None and "video" in kinds:
            self.pc.addTrack(self.video)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.session.start()
        # Server VAD first, then the client's config: a refused config (an error event on the
        # channel) must not leave the call without turn detection.
        vad: dict[str, Any] = {"audio": {"input": {"turn_detection": DEFAULT_TURN_DETECTION}}}
        if self.face is not None:  # the avatar's face and voice follow each answer's emotion tag
            vad["emotion"] = "auto"
        await self.session.handle(orjson.dumps({"type": "session.update", "session": vad}))
        if self.session_config:
            config = {k: v for k, v in self.session_config.items()}
            audio = dict(config.get("audio") or {}) if isinstance(config.get("audio"), dict) else {}
            for side in ("input", "output"):  # the tracks carry the media: formats do not apply
                if isinstance(audio.get(side), dict):
                    audio[side] = {k: v for k, v in audio[side].items() if k != "format"}
            if audio:
                config["audio"] = audio
            await self.session.handle(orjson.dumps({"type": "session.update", "session": config}))
        return self.pc.localDescription.sdp

    # ------------------------------------------------------------------ events both ways

    async def send(self, event: dict[str, Any]) -> None:
        """The session's ``send``: audio to the tracks, everything else to the data channel."""
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            if event.get("response_id") not in self.cut:
                pcm = base64.b64decode(event["delta"])
                self.buffer.push(self.out_resampler.pcm(pcm, PCM_RATE), event.get("response_id"))
            return
        if kind == "input_audio_buffer.speech_started":
            self._barge_in()
        elif kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            self._tell_backend(event.get("response_id"))
            if self.face is not None:
                self._heard(event.get("response_id"), event.get("delta") or "")
        self._post(event)

    def _post(self, event: dict[str, Any]) -> None:
        data = orjson.dumps(event).decode()
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(data)
        elif len(self.early) < MAX_EARLY_EVENTS:
            self.early.append(data)

    def _flush_early(self) -> None:
        early, self.early = self.early, []
        for data in early:
            self.channel.send(data)

    async def _client_event(self, message: Any) -> None:
        refusal = self.guard.check(len(message))
        if refusal is not None:
            await self.send(refusal)
            if self.guard.abusive(self.session.refused):
                await self.close()
            return
        if isinstance(message, str) and '"output_audio_buffer.clear"' in message:
            try:
                event = orjson.loads(message)
            except orjson.JSONDecodeError:
                event = {}
            if event.get("type") == "output_audio_buffer.clear":
                self._clear_playback(event.get("event_id"))
                return
        await self.session.handle(message)
        if self.guard.abusive(self.session.refused):  # a broken or hostile client: hang up
            await self.close()

    async def _append(self, pcm24k: bytes) -> None:
        """Microphone audio → the session's input buffer (server VAD does the turns)."""
        audio = base64.b64encode(pcm24k).decode()
        await self.session.handle(orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}))

    def _tell_backend(self, response_id: str | None) -> None:
        """Once per response, which chat provider is answering (read before TTS runs)."""
        turn = self.session.response
        if response_id is None or response_id in self.backend_told or turn is None or turn.id != response_id:
            return
        self.backend_told.add(response_id)
        provider, fallback = turn.ctx.provider, bool(turn.ctx.fallback)
        self._post(
            {
                "type": "talkgate.response.backend",
                "response_id": response_id,
                "provider": provider,
                "fallback": fallback,
                "backend": backend_of(provider, fallback),
            }
        )

    # ------------------------------------------------------------------ emotion on the face

    def _heard(self, response_id: str | None, delta: str) -> None:
        if response_id is None:
            return
        if response_id not in self.spoken and len(self.spoken) >= 4:
            self.spoken.pop(next(iter(self.spoken)))
        self.spoken[response_id] = self.spoken.get(response_id, "") + delta

    def _emotion_of(self, response_id: str | None) -> str:
        """The answer's emotion as /v1/talk decides it: the spoken answer's own (when the session
        asked the LLM for a tag), else ``decide("auto")`` over its transcript (a leading tag, else
        the lexicon on the first sentence). The first sentence is in before its audio plays."""
        turn = self.session.response
        answer = getattr(turn, "answer", None) if turn is not None and turn.id == response_id else None
        if answer is not None and answer.emotion_source != "off":
            return str(answer.emotion)
        return decide("auto", self.spoken.get(response_id or "", ""))[0]

    # ------------------------------------------------------------------ playback

    def _playback(self, state: str, response_id: str | None) -> None:
        if self.face is not None:  # the face shows the answer's emotion while it is heard
            self.face.set_emotion(self._emotion_of(response_id) if state == "started" else None)
        self._post({"type": f"output_audio_buffer.{state}", "event_id": _eid(), "response_id": response_id})

    def _barge_in(self) -> None:
        vad = self.session.config.turn_detection or {}
        turn = self.session.response
        if not vad.get("interrupt_response", True) or turn is None:
            return
        task = self.session.response_task
        if (task is not None and not task.done()) or self.buffer.speaking or self.buffer.pending:
            started = time.perf_counter()
            self.cut.add(turn.id)
            played_ms = self.buffer.played_ms if self.buffer.response_id == turn.id else 0
            self._clear_playback(None)
            self.barge_ins.append(time.perf_counter() - started)
            self._spawn(self._truncate(turn, task, played_ms))

    async def _truncate(self, turn: Any, task: asyncio.Task[Any] | None, played_ms: int) -> None:
        """Trims the remembered answer to what was heard (the gateway owns playout here).

        Goes through the public ``conversation.item.truncate`` event once the cancelled
        response has stored its item, so the session core needs no WebRTC knowledge."""
        if task is not None and not task.done():
            await asyncio.wait([task])
        item = next((i for i in self.session.conversation.items if i.id == turn.item_id), None)
        if item is None or item.kind != "audio" or played_ms >= item.audio_ms:
            return
        event = {
            "type": "conversation.item.truncate",
            "item_id": item.id,
            "content_index": 0,
            "audio_end_ms": played_ms,
        }
        await self.session.handle(orjson.dumps(event))

    def _clear_playback(self, event_id: str | None) -> None:
        response_id = self.buffer.response_id
        dropped = self.buffer.clear()
        if self.face is not None:
            self.face.set_emotion(None)
        if response_id:
            self.cut.add(response_id)
        self._post(
            {
                "type": "output_audio_buffer.cleared",
                "event_id": _eid(),
                "response_id": response_id,
                "dropped_ms": dropped,
            }
        )

    # ------------------------------------------------------------------ life

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for task in list(self.tasks):
            task.cancel()
        await self.session.close()
        if self.account is not None:
            await self.account.close()
        if self.metrics is not None:
            self.metrics.active.dec()
            self.metrics.sessions.labels("closed").inc()
        with contextlib.suppress(Exception):
            await self.pc.close()
        if self.video is not None:
            self.video.stop()
        log.info("call %s closed", self.id)


def _eid() -> str:
    from gateway.realtime.events import new_id

    return new_id("event")


class CallRegistry:
    """The live calls of this process: bounded, closed when they fail or the gateway stops."""

    def __init__(self, max_calls: int, connect_timeout_s: float) -> None:
        self.max_calls = max_calls
        self.connect_timeout_s = connect_timeout_s
        self.calls: dict[str, LiveCall] = {}

    def full(self) -> bool:
        return len(self.calls) >= self.max_calls

    def add(self, call: LiveCall) -> None:
        self.calls[call.id] = call

        async def reap() -> None:
            try:
                await asyncio.wait_for(call.connected.wait(), self.connect_timeout_s)
            except TimeoutError:
                log.info("call %s: no media connection within %g s", call.id, self.connect_timeout_s)
                await call.close()
            await call.closed.wait()
            self.calls.pop(call.id, None)

        call._spawn_reaper = asyncio.create_task(reap())  # type: ignore[attr-defined]

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close() for c in list(self.calls.values())), return_exceptions=True)
        self.calls.clear()
