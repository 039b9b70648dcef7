"""A session's cloned voice: ``voice: "custom:<id>"`` checked and used as /v1/talk does.

The resolution is gateway/voices/use.py's (tenant-bound: another tenant's id is "not found";
only an ``active`` voice with standing consent may speak). It runs at ``session.update`` (a
refused voice is an ``error`` event and the update changes nothing) and again before each
response, since consent may be revoked while the session is open: a revoked voice then refuses
the response with an ``error`` event instead of speaking. Each response that spoke in the voice
records one use in the voice's audit log.
"""

from __future__ import annotations

from typing import Any

from gateway.realtime.events import BadEvent
from gateway.voices.use import ClonedVoice, VoiceRefused, is_custom, record_use, resolve

PARAM = "session.audio.output.voice"


def requested_voice(session: Any) -> str | None:
    """The voice a ``session.update`` asks for, if any (GA ``audio.output.voice``, a name or ``{"id"}``)."""
    if not isinstance(session, dict):
        return None
    audio = session.get("audio")
    output = audio.get("output") if isinstance(audio, dict) else None
    voice = output.get("voice") if isinstance(output, dict) else None
    voice = voice.get("id") if isinstance(voice, dict) else voice
    return voice if isinstance(voice, str) else None


class SessionVoices:
    def __init__(self, store: Any, tenant: str, key_id: str | None) -> None:
        self.store = store  # gateway/voices/store.py VoiceStore, None without a database
        self.tenant = tenant
        self.key_id = key_id

    async def resolve(self, voice: str, event_id: str | None) -> ClonedVoice | None:
        """None for an ordinary voice; the cloned voice for ``custom:<id>``; else BadEvent."""
        if not is_custom(voice):
            return None
        try:
            return await resolve(self.store, self.tenant, voice)
        except VoiceRefused as exc:
            type_ = "permission_error" if exc.status == 403 else "invalid_request_error"
            raise BadEvent(exc.message, exc.code, PARAM, event_id, type_) from None

    async def record(self, voice: ClonedVoice, text: str, ctx: Any) -> None:
        if self.store is not None:
            await record_use(self.store, voice, route="realtime", text=text, key_id=self.key_id, ctx=ctx)
