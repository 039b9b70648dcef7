"""What resilience costs: failover latency, the price of tripping a breaker, local models via the gateway.

    .venv/bin/python -m bench.resilience [--runs N] [--llm-threads T]

Set-up: the Bailian simulator and the gateway each run as their own process (uvicorn, uvloop,
httptools); the gateway has the cloud key, chains ``bailian:* → local:*``, the default retry
and breaker settings (3 attempts, 0.2 s base backoff; 5 consecutive failures trip) except a
5-minute cooldown so an open breaker stays open while it is measured, and
``upstream_timeout_s: 2``. Response cache off, auth off. The bench process also loads the same
local models itself, to call them directly (no HTTP) for the baselines.

Figures (medians; gateway and direct runs in alternating blocks G D G D, each preceded by a
warm-up call and a 1 s pause, so background load and drift hit both sides):
(a) upstream down, breaker open: chat latency through the gateway (served by local:smollm2)
    ÷ the same request to the local model called directly. Target ≤ 1.05.
(b) the cost of tripping: latency of each request from the moment the upstream starts
    failing until the breaker is open, for 500s and for hangs, with the upstream calls each
    request made (read from the simulator's request log).
(c) local models through the gateway ÷ direct: LLM tokens/s, ASR and TTS real-time-factor
    ratios (direct RTF ÷ gateway RTF, so ≥ 0.95 means the gateway keeps ≥ 95 % of the speed).
Nothing is asserted; the script prints figures and method.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.processes import SIM_CODE, gateway_code, gateway_env, start, stop
from gateway.settings import Settings
from providers.base import ChatRequest, SynthesizeRequest, TranscribeRequest
from providers.local import build_local_providers
from providers.wav import pcm_to_wav, wav_duration
from tests.servers import free_port

KEY = "sk-bench-resilience"
PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
PARAGRAPH = (
    "Thank you for calling customer service. Your order was shipped this morning and should "
    "arrive within three business days. If anything is missing, reply to this message and we "
    "will send a replacement at no extra cost."
)


def gateway_config(llm_threads: int | None = None) -> dict[str, Any]:
    return {
        "auth": "none",
        "cache": {"enabled": False},
        "upstream_timeout_s": 2.0,
        "breaker": {"cooldown_s": 300.0, "max_cooldown_s": 600.0},
        "local": {"preload": True, "llm": {"smollm2": {"n_threads": llm_threads}}},
        "routes": {
            "chat": {
                "chain": ["bailian:qwen-plus", "local:smollm2"],
                "chains": {
                    "down-500": ["bailian:qwen-plus", "local:smollm2"],
                    "down-hang": ["bailian:qwen-turbo", "local:smollm2"],
                },
            },
            "asr": {"chain": ["bailian:paraformer-realtime-v2", "local:whisper-tiny.en"]},
            "tts": {"chain": ["bailian:cosyvoice-v2", "local:piper-joe"]},
        },
    }


async def wait_ready(client: httpx.AsyncClient, url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")  # noqa: ASYNC240
        try:
            if (await client.get(url)).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.3)
    raise TimeoutError(f"{url} did not come up; see {log}")


async def timed(coro: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


class Bench:
    def __init__(self, gw: str, sim: str, runs: int, llm_threads: int | None) -> None:
        self.gw = httpx.AsyncClient(base_url=gw, timeout=120)
        self.sim = httpx.AsyncClient(base_url=sim, timeout=30)
        self.runs = runs
        settings = Settings(
            data_dir=Path(tempfile.mkdtemp(prefix="tg-bench-direct-")),
            local={"llm": {"smollm2": {"n_threads": llm_threads}}},
        )
        self.chat, self.asr, self.tts = build_local_providers(settings)

    async def upstream_calls(self, model: str) -> int:
        items = (await self.sim.get("/sim/requests")).json()["requests"]
        return sum(1 for i in items if i.get("model") == model)

    async def gateway_chat(self, model: str, max_tokens: int) -> tuple[float, dict[str, Any], httpx.Response]:
        body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
        seconds, r = await timed(self.gw.post("/v1/chat/completions", json=body))
        r.raise_for_status()
        return seconds, r.json(), r

    async def direct_chat(self, max_tokens: int) -> tuple[float, Any]:
        request = ChatRequest(model="smollm2", messages=PROMPT, max_tokens=max_tokens, temperature=0)
        return await timed(self.chat.chat(request))

    async def tripping(self, model: str, upstream_model: str, fault: dict[str, Any]) -> list[str]:
        """Requests from the first failure until the breaker opens; one line each."""
        await self.sim.post("/sim/faults", json={"service": "generation", "model": upstream_model, **fault})
        lines = []
        for n in range(1, 5):
            before = await self.upstream_calls(upstream_model)
            seconds, _, r = await self.gateway_chat(model, 32)
            calls = await self.upstream_calls(upstream_model) - before
            lines.append(
                f"  request {n}: {seconds * 1000:7.0f} ms, {calls} upstream call(s), "
                f"served by {r.headers['x-talkgate-provider']}"
            )
            if calls == 0:
                break
        return lines

    async def run(self) -> None:
        print("preloading direct models…", flush=True)
        for provider in (self.chat, self.asr, self.tts):
            await provider.preload()
        await self.direct_chat(32)
        await self.gateway_chat("smollm2", 32)

        # (b) tripping cost, first with 500s, then with hangs (each attempt times out at 2 s).
        print("\n(b) requests until the breaker opened (default retry: 3 attempts; trips after 5 failures)")
        local_only = statistics.median([(await self.gateway_chat("smollm2", 32))[0] for _ in range(3)])
        print(f"  reference: local:smollm2 through the gateway, 32 tokens: {local_only * 1000:.0f} ms")
        print(" upstream answers HTTP 500 (InternalError):")
        for line in await self.tripping("down-500", "qwen-plus", {"status": 500}):
            print(line)
        print(" upstream hangs (no answer; upstream_timeout_s = 2):")
        for line in await self.tripping("down-hang", "qwen-turbo", {"hang": True}):
            print(line)

        # (a) breaker open: gateway (local fallback) vs the local model directly.
        calls = await self.upstream_calls("qwen-plus")

        async def via_gateway() -> float:
            s, _, r = await self.gateway_chat("down-500", 32)
            assert r.headers["x-talkgate-provider"] == "local:smollm2", r.headers
            return s

        async def direct() -> float:
            return (await self.direct_chat(32))[0]

        g, d = await self.paired(via_gateway, direct)
        print(
            f"\n(a) upstream down, breaker open: gateway {g * 1000:.1f} ms / direct {d * 1000:.1f} ms "
            f"= {g / d:.3f} (32 tokens; upstream calls made by these: "
            f"{await self.upstream_calls('qwen-plus') - calls})"
        )

        # (c) local models through the gateway vs directly (rates: higher is better).
        async def gateway_rate() -> float:
            s, body, _ = await self.gateway_chat("smollm2", 128)
            return body["usage"]["completion_tokens"] / s

        async def direct_rate() -> float:
            s, result = await self.direct_chat(128)
            return result.usage.completion_tokens / s

        gr, dr = await self.paired(gateway_rate, direct_rate)
        print(f"\n(c) LLM tokens/s (128 tokens): gateway {gr:.1f} / direct {dr:.1f} = {gr / dr:.3f}")

        speak = SynthesizeRequest(model="piper-joe", text=PARAGRAPH, voice="joe")
        audio = (await self.tts.synthesize(speak)).audio

        async def gateway_tts() -> float:
            body = {"model": "piper-joe", "input": PARAGRAPH, "voice": "joe", "response_format": "wav"}
            s, r = await timed(self.gw.post("/v1/audio/speech", json=body))
            r.raise_for_status()
            heard = wav_duration(r.content)  # a streamed header has no true length: count the bytes
            if not heard:
                raise RuntimeError("the gateway answered /v1/audio/speech without WAV audio")
            return s / heard

        async def direct_tts() -> float:
            s, result = await timed(self.tts.synthesize(speak))
            return s / result.audio.duration_s

        gt, dt = await self.paired(gateway_tts, direct_tts)
        print(
            f"    TTS RTF (piper, {audio.duration_s:.1f} s paragraph): gateway {gt:.3f} / direct {dt:.3f}; "
            f"speed kept {dt / gt:.3f}"
        )

        wav = pcm_to_wav(audio.pcm, audio.sample_rate)
        listen = TranscribeRequest(model="whisper-tiny.en", audio=audio)

        async def gateway_asr() -> float:
            files = {"file": ("speech.wav", wav, "audio/wav")}
            s, r = await timed(
                self.gw.post("/v1/audio/transcriptions", data={"model": "whisper-tiny.en"}, files=files)
            )
            r.raise_for_status()
            return s / audio.duration_s

        async def direct_asr() -> float:
            s, _ = await timed(self.asr.transcribe(listen))
            return s / audio.duration_s

        ga, da = await self.paired(gateway_asr, direct_asr)
        print(f"    ASR RTF (whisper tiny.en): gateway {ga:.3f} / direct {da:.3f}; speed kept {da / ga:.3f}")

    async def paired(self, gateway: Any, direct: Any) -> tuple[float, float]:
        """Medians of gateway and direct runs, in blocks G D G D with pauses in between.

        Blocks, not alternating calls: llama.cpp and onnxruntime worker threads keep spinning
        for a moment after a call, which would tax whichever process runs next.
        """
        g: list[float] = []
        d: list[float] = []
        half = max(1, self.runs // 2)
        for _ in range(2):
            for values, fn in ((g, gateway), (d, direct)):
                await asyncio.sleep(1.0)
                await fn()  # warm-up, not counted
                for _ in range(half):
                    values.append(await fn())
        return statistics.median(g), statistics.median(d)


async def main_async(runs: int, llm_threads: int | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-resilience-"))
    sim_port, gw_port = free_port(), free_port()
    config = tmp / "talkgate.yaml"
    config.write_text(yaml.safe_dump(gateway_config(llm_threads)))
    procs = [start(SIM_CODE.format(key=KEY, port=sim_port), {}, tmp / "sim.log")]
    env = {**gateway_env(sim_port, KEY, tmp / "data", "ERROR"), "TALKGATE_CONFIG": str(config)}
    procs.append(start(gateway_code(gw_port, "ERROR"), env, tmp / "gateway.log"))
    try:
        async with httpx.AsyncClient(timeout=5) as probe:
            await wait_ready(probe, f"http://127.0.0.1:{sim_port}/sim/health", procs[0], tmp / "sim.log")
            await wait_ready(probe, f"http://127.0.0.1:{gw_port}/healthz", procs[1], tmp / "gateway.log")
        print(
            f"# resilience bench: {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}, runs={runs}, "
            f"llama.cpp threads={llm_threads or 'default (usable cores - 1, at least 1)'}"
        )
        await Bench(f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{sim_port}", runs, llm_threads).run()
        print(f"\nload avg at the end: {os.getloadavg()[0]:.1f}")
    finally:
        stop(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument(
        "--llm-threads",
        type=int,
        default=None,
        help="llama.cpp threads (default: usable cores - 1, at least 1)",
    )
    args = parser.parse_args()
    asyncio.run(main_async(args.runs, args.llm_threads))


if __name__ == "__main__":
    main()
