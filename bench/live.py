"""The live avatar over WebRTC: turn latency at the receiving peer, renderer cost, concurrency.

Run: ``.venv/bin/python -m bench.live [--turns 10] [--modes sim,offline] [--max-sessions 4]``

Method. The gateway runs as its own ``talkgate serve`` process (its CPU time is read from
/proc); the Bailian simulator runs in this process with Bailian-like latencies (ASR 200 ms,
LLM first token 300 ms then 30 ms a token, TTS first chunk 200 ms); "offline" routes every
capability to the local models only (faster-whisper tiny.en, SmolLM2 via llama.cpp, piper).
The receiving peer is aiortc in this process (tests/gateway/webrtc/peer_client.py): it plays
piper-spoken questions as its microphone and timestamps, on the same monotonic clock, the end
of each question, the first audio frame of the answer with energy and the first video frame
whose mouth region moves away from its resting state. Each turn waits for the answer to finish.
Figures are medians over the turns. Split: VAD (end of speech → ``speech_stopped``), gateway
turn (``speech_stopped`` → ``output_audio_buffer.started``, i.e. the first answer audio put on
the media clock) and media path (that → first audible frame decoded at the peer).
Renderer: ``LiveFace.frame`` alone on one thread. Concurrency: N peers each hold a call with an
idle avatar for 10 s; a session "holds 25 fps" when its peer received >= 24 frames a second.
The receiving peers decode VP8 on the same 2 cores, so the concurrency figure is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.gateway.webrtc.peer_client import RATE, LiveClient
from tests.lipsync.media import astronaut_png
from tests.servers import GatewayProcess, ServerThread
from tests.sounds import piper_speech

QUESTIONS = [
    "What time does the store open?",
    "Where can I park my car?",
    "Do you sell gift cards?",
    "Can I return a book without the receipt?",
    "Is there a coffee shop inside?",
]
ANSWER = "We open at nine in the morning. Is there anything else I can help you with?"
SIM_LATENCY = {"asr_delay_ms": 200, "ttft_ms": 300, "token_delay_ms": 30, "tts_first_chunk_ms": 200}
OFFLINE_ROUTES = {
    "chat": {"chain": ["local:smollm2"]},
    "asr": {"chain": ["local:whisper-tiny.en"]},
    "tts": {"chain": ["local:piper-joe"]},
}


def spoken(text: str) -> np.ndarray:
    from providers.wav import resample

    signal, rate = piper_speech(text)
    return resample(signal, rate, RATE).astype(np.float32)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_sim(latency: dict[str, float]) -> ServerThread:
    from gateway.sim.app import create_app
    from gateway.sim.config import SimConfig

    answers = {q: ANSWER for q in QUESTIONS}
    return ServerThread(create_app(SimConfig(api_keys=None, answers=answers, **latency))).start()


def start_gateway(sim: ServerThread, data: Path, offline: bool) -> GatewayProcess:
    env = {
        "DASHSCOPE_API_KEY": "sk-bench",
        "DASHSCOPE_HTTP_BASE_URL": f"{sim.url}/api/v1",
        "DASHSCOPE_WEBSOCKET_BASE_URL": f"ws://127.0.0.1:{sim.port}/api-ws/v1/inference",
        "TALKGATE_DATA_DIR": str(data),
        "TALKGATE_LOG_JSON": "false",
        "TALKGATE_WEBRTC__MAX_CALLS": "8",
    }
    if offline:
        config = data / "offline.yaml"
        data.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"routes": OFFLINE_ROUTES, "local": {"preload": True}}))
        env["TALKGATE_CONFIG"] = str(config)
    return GatewayProcess(env).start(timeout=180)


def upload_avatar(url: str) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")}, timeout=60)
    r.raise_for_status()
    return r.json()


async def turns(url: str, avatar: dict[str, Any], n: int) -> list[dict[str, float]]:
    client = LiveClient(url, avatar)
    out = []
    try:
        r = await client.connect()
        r.raise_for_status()
        await client.wait_for("session.updated", 10)
        await asyncio.sleep(2.0)
        for i in range(n):
            mark = time.monotonic()
            client.mic.say(spoken(QUESTIONS[i % len(QUESTIONS)]))
            stopped, _ = await client.wait_for("input_audio_buffer.speech_stopped", 30, mark)
            end = client.mic.ends[-1]
            started, _ = await client.wait_for("output_audio_buffer.started", 120, stopped)
            done, _ = await client.wait_for("output_audio_buffer.stopped", 120, started)
            await asyncio.sleep(1.0)
            audio = next(t for t, rms in client.rec.audio if t > end and rms > 0.01)
            motion = client.rec.mouth_motion(end - 1.0, end)
            idle = max(m for t, m in motion if end - 1.0 <= t < end)
            mouth = next(t for t, m in motion if t > started - 0.1 and m > 2 * idle + 1.0)
            out.append(
                {
                    "first_audio_ms": (audio - end) * 1000,
                    "first_mouth_ms": (mouth - end) * 1000,
                    "vad_ms": (stopped - end) * 1000,
                    "gateway_turn_ms": (started - stopped) * 1000,
                    "media_path_ms": (audio - started) * 1000,
                    "answer_s": done - started,
                }
            )
            print(f"  turn {i + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in out[-1].items()), flush=True)
    finally:
        await client.close()
    return out


async def session_cpu(url: str, avatar: dict[str, Any], pid: int, seconds: float = 10.0) -> dict[str, float]:
    """Gateway CPU per session: idle avatar, then while answering a question."""
    client = LiveClient(url, avatar)
    try:
        (await client.connect()).raise_for_status()
        await client.wait_for("session.updated", 10)
        await asyncio.sleep(2.0)
        c0, t0, f0 = cpu_seconds(pid), time.monotonic(), len(client.rec.video)
        await asyncio.sleep(seconds)
        idle = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        fps = (len(client.rec.video) - f0) / (time.monotonic() - t0)
        return {"gateway_cpu_idle_session": idle, "received_fps": fps}
    finally:
        await client.close()


async def concurrency(url: str, avatar: dict[str, Any], max_n: int, pid: int) -> list[dict[str, Any]]:
    results = []
    for n in range(1, max_n + 1):
        clients = [LiveClient(url, avatar) for _ in range(n)]
        try:
            await asyncio.gather(*(c.connect() for c in clients))
            await asyncio.sleep(3.0)
            counts = [len(c.rec.video) for c in clients]
            c0, t0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(10.0)
            span = time.monotonic() - t0
            fps = [(len(c.rec.video) - k) / span for c, k in zip(clients, counts, strict=True)]
            cpu = (cpu_seconds(pid) - c0) / span
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        row = {"sessions": n, "min_fps": min(fps), "mean_fps": statistics.mean(fps), "gateway_cpu": cpu}
        print(f"  {n} sessions: min {row['min_fps']:.1f} fps, gateway CPU {cpu:.2f} cores", flush=True)
        results.append(row)
        await asyncio.sleep(2.0)
        if row["min_fps"] < 15:  # far below: more sessions only make it worse
            break
    return results


def renderer_speed(seconds: float = 10.0) -> dict[str, float]:
    from lipsync.avatars import prepare_avatar
    from lipsync.live import LiveFace
    from tests.sounds import speechlike

    avatar = prepare_avatar(astronaut_png())
    face = LiveFace(avatar.image, avatar.box, fps=25, max_side=480)
    audio = speechlike(seconds, 48000)
    hop = 48000 // 25
    n = audio.size // hop
    t0, c0 = time.perf_counter(), time.thread_time()
    for k in range(n):
        face.frame(audio[k * hop : (k + 1) * hop], 48000, k / 25)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    return {"frames": n, "fps": n / wall, "cpu_ms_per_frame": cpu / n * 1000, "size": list(face.size)}


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--modes", default="sim,offline")
    parser.add_argument("--max-sessions", type=int, default=4)
    args = parser.parse_args()
    report: dict[str, Any] = {"renderer": renderer_speed()}
    print("renderer:", report["renderer"], flush=True)
    for mode in args.modes.split(","):
        sim = start_sim(SIM_LATENCY)
        with tempfile.TemporaryDirectory() as tmp:
            gateway = start_gateway(sim, Path(tmp) / "data", offline=mode == "offline")
            try:
                avatar = upload_avatar(gateway.url)
                print(f"{mode}: {args.turns} turns", flush=True)
                rows = asyncio.run(turns(gateway.url, avatar, args.turns))
                summary = {k: median(rows, k) for k in rows[0]}
                report[mode] = {"turns": rows, "median": summary}
                print(f"{mode} medians: " + ", ".join(f"{k} {v:.0f}" for k, v in summary.items()), flush=True)
                if mode == args.modes.split(",")[0]:
                    pid = gateway.process.pid
                    report["session_cpu"] = asyncio.run(session_cpu(gateway.url, avatar, pid))
                    print("session:", report["session_cpu"], flush=True)
                    report["concurrency"] = asyncio.run(
                        concurrency(gateway.url, avatar, args.max_sessions, pid)
                    )
            finally:
                gateway.stop()
                sim.stop()
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "live.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k not in ("sim", "offline")}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
