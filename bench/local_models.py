"""Throughput of the offline models through talkgate's local providers (direct calls, no HTTP).

    .venv/bin/python -m bench.local_models [--runs N]

Method: every model is loaded and warmed up once first (load time is printed separately).
Then, for each figure, the median of N runs:
- LLM tokens/s: completion tokens / wall time of a non-streamed chat with a fixed 128-token
  budget (greedy, so the same tokens each run); time-to-first-token from a streamed call;
- TTS RTF: synthesis wall time / seconds of audio produced, for a ~10 s English paragraph;
- ASR RTF: transcription wall time / audio seconds, on that paragraph's synthesized audio
  (22.05 kHz in, so resampling is included), for beam 5 with word timestamps (the
  defaults) and for greedy decoding without them.
RTF < 1 means faster than real time. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

from gateway.settings import Settings
from providers.base import ChatRequest, SynthesizeRequest, TranscribeRequest
from providers.local import build_local_providers

PARAGRAPH = (
    "Thank you for calling customer service. Your order was shipped this morning and should "
    "arrive within three business days. If anything is missing, reply to this message and we "
    "will send a replacement at no extra cost."
)
PROMPT = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]


async def timed(coro) -> tuple[float, object]:
    start = time.perf_counter()
    result = await coro
    return time.perf_counter() - start, result


async def main(runs: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="talkgate-bench-"))
    settings = Settings(
        data_dir=data_dir,
        local={
            "asr": {
                "whisper-tiny.en": {},
                "whisper-tiny.en-greedy": {"beam_size": 1, "word_timestamps": False},
            }
        },
    )
    chat, asr, tts = build_local_providers(settings)
    print(f"# local models bench — {platform.machine()}, {__import__('os').cpu_count()} CPUs, runs={runs}")
    for provider in (chat, asr, tts):
        seconds, _ = await timed(provider.preload())
        print(f"load {type(provider).__name__}: {seconds:.2f} s")

    # --- LLM
    request = ChatRequest(model="smollm2", messages=PROMPT, max_tokens=128, temperature=0)
    await chat.chat(request)
    rates, ttfts = [], []
    for _ in range(runs):
        seconds, result = await timed(chat.chat(request))
        rates.append(result.usage.completion_tokens / seconds)
        start = time.perf_counter()
        async for _chunk in chat.chat_stream(request):
            ttfts.append(time.perf_counter() - start)
            break
    print(
        f"LLM smollm2 (135M Q4_1): {statistics.median(rates):.0f} tokens/s "
        f"(prompt {result.usage.prompt_tokens} + {result.usage.completion_tokens} completion tokens), "
        f"time to first token {statistics.median(ttfts) * 1000:.0f} ms"
    )

    # --- TTS
    speak = SynthesizeRequest(model="piper-joe", text=PARAGRAPH, voice="joe")
    await tts.synthesize(speak)
    rtfs, first_chunk = [], []
    for _ in range(runs):
        seconds, speech = await timed(tts.synthesize(speak))
        rtfs.append(seconds / speech.audio.duration_s)
        start = time.perf_counter()
        async for _chunk in tts.synthesize_stream(speak):
            first_chunk.append(time.perf_counter() - start)
            break
    audio = speech.audio
    print(
        f"TTS piper joe-medium: RTF {statistics.median(rtfs):.3f} on {audio.duration_s:.1f} s of audio, "
        f"first streamed sentence after {statistics.median(first_chunk) * 1000:.0f} ms"
    )

    # --- ASR
    for model in ("whisper-tiny.en", "whisper-tiny.en-greedy"):
        listen = TranscribeRequest(model=model, audio=audio)
        await asr.transcribe(listen)
        rtfs = []
        for _ in range(runs):
            seconds, transcript = await timed(asr.transcribe(listen))
            rtfs.append(seconds / audio.duration_s)
        print(f"ASR {model} (int8): RTF {statistics.median(rtfs):.3f} → {transcript.text!r}")

    for provider in (chat, asr, tts):
        await provider.unload()
    chat.pool.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
