"""Committed input audio → the user item's transcript, through the router's ASR chain.

One transcription per committed turn, run as its own task so the session keeps taking events;
the response that answers it waits for it. With server VAD the speech was already being
transcribed while it was spoken (gateway/realtime/live_transcript.py): the commit only ends
that stream and waits for its final. Otherwise (client commits) the segment is transcribed
whole here. Either way each transcription books one usage row (ASR seconds of the committed
audio, the provider that answered) through the session's account, however it ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from gateway.context import RequestContext
from gateway.errors import APIError
from gateway.realtime.audio import to_rate
from gateway.realtime.events import DEFAULT_TRANSCRIPTION, PCM_RATE, message_item, server_event
from gateway.realtime.items import Item
from gateway.realtime.live_transcript import ASR_RATE, LiveTranscript, request_for
from gateway.realtime.response import error_of
from providers.base import AudioData


async def transcribe_item(
    item: Item,
    pcm: bytes,
    previous: str | None,
    *,
    router: Any,
    account: Any,
    send: Any,
    live: LiveTranscript | None = None,
    options: dict[str, Any] | None = DEFAULT_TRANSCRIPTION,
) -> bool:
    """Sets ``item.text`` and sends the transcription events; False when the transcription failed.
    ``options``: the session's ``audio.input.transcription`` (None: the words are still recognised,
    for the model, but no transcript is sent: no ``.completed`` and no transcript on the item)."""
    ctx = live.ctx if live is not None else RequestContext(request_id=uuid.uuid4().hex)
    seconds = len(pcm) / 2 / PCM_RATE
    status = 200
    try:
        if account is not None:
            await account.admit_transcription(seconds)
        if live is not None:
            result = await live.finish()
        else:
            audio = AudioData(await asyncio.to_thread(to_rate, pcm, PCM_RATE, ASR_RATE), ASR_RATE)
            result = await router.transcribe(request_for(options, audio), ctx)
    except asyncio.CancelledError:
        status = 499
        raise
    except Exception as exc:
        status = exc.status if isinstance(exc, APIError) else 502
        type_, code, message = (
            (exc.type, exc.code or "refused", exc.message) if isinstance(exc, APIError) else error_of(exc)
        )
        error = {"type": type_, "code": code, "message": message, "param": None}
        await send(
            server_event(
                "conversation.item.input_audio_transcription.failed",
                item_id=item.id,
                content_index=0,
                error=error,
            )
        )
        return False
    finally:
        if live is not None and status != 200:
            await live.cancel()  # refused or cancelled: the stream must not run on
        if account is not None and status != 429:
            await account.book(
                item.id,
                audio_seconds=seconds if status == 200 else 0.0,
                provider=ctx.provider,
                fallback=ctx.fallback,
                latency_ms=(time.perf_counter() - ctx.started) * 1000.0,
                status=status,
            )
    item.text = result.text.strip()
    if options is not None:
        usage = {"type": "duration", "seconds": round(seconds, 3)}
        await send(
            server_event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item.id,
                content_index=0,
                transcript=item.text,
                usage=usage,
            )
        )
    wire = message_item(item.id, "user", item.text if options is not None else "", kind="input_audio")
    await send(server_event("conversation.item.done", previous_item_id=previous, item=wire))
    return True
