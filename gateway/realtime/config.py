"""Settings of realtime sessions (``TALKGATE_REALTIME__*``), kept beside the code they limit."""

from __future__ import annotations

from pydantic import BaseModel


class RealtimeConfig(BaseModel):
    #: a session is closed after this long, whatever it is doing (OpenAI's own limit is 60 min)
    max_session_s: float = 1800.0
    #: a session that receives no client event for this long is closed
    idle_timeout_s: float = 300.0
    #: largest client event; 4 MiB of JSON holds ~30 s of base64 24 kHz PCM16 in one append
    max_event_bytes: int = 4 * 1024 * 1024
    #: sustained client events per second (a token bucket holding twice as many for bursts);
    #: audio appends of 20 ms are 50/s
    max_events_per_s: float = 100.0
    #: refused events before the client is treated as abusive and disconnected
    max_errors: int = 200
    #: when the model called a client tool and its output has not come after this many seconds,
    #: the avatar says one short filler sentence (None: off, the default)
    tool_filler_after_s: float | None = None
    #: the filler sentence per language of the user's last message
    tool_filler_text: dict[str, str] = {"en": "One moment, please.", "zh": "请稍等。"}
    #: with server VAD, transcribe the user's speech while it is spoken (partial transcripts as
    #: ``...input_audio_transcription.delta``, the final sooner after the speech ends); false:
    #: each committed turn is transcribed whole, as with client commits
    stream_transcription: bool = True
