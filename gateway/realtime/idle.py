"""Server VAD's ``idle_timeout_ms``: a response when the user stays silent too long.

OpenAI's rule (the SDK's turn-detection docs): the timeout runs from the moment the last
response's audio has finished playing (``response.done`` plus the playback still ahead of the
client) and is reset by speech. When it expires, ``input_audio_buffer.timeout_triggered``
(``audio_start_ms``/``audio_end_ms``: the silent stretch of input audio, ``item_id``) is sent,
the silent audio is committed as an ``input_audio`` user item (``committed``, ``item.added``,
``item.done``; no recognition runs on silence) and, with ``create_response``, a response is
made: the model prompts the user to go on. The model sees that item as ``IDLE_NOTE`` (the
chat models need a user turn to answer); the client sees an empty transcript.

Wall-clock timing, so it also fires when the client sends no audio at all; nothing is armed
while the user speaks or a response runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

#: What the model is told the silent user item says.
IDLE_NOTE = "(The user has said nothing for {seconds:g} seconds.)"


class IdleTimer:
    def __init__(self, fire: Callable[[], Awaitable[None]]) -> None:
        self.fire = fire
        self.task: asyncio.Task[None] | None = None
        self.armed_at = 0.0  # perf_counter when the current wait began

    def arm(self, delay_s: float) -> None:
        """(Re)starts the wait: ``fire`` runs after ``delay_s`` unless disarmed first."""
        self.disarm()
        self.armed_at = time.perf_counter()
        self.task = asyncio.create_task(self._wait(delay_s))

    def disarm(self) -> None:
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _wait(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.task = None  # from here on, ``fire`` may re-arm (and a disarm no longer cancels it)
        await self.fire()
