"""Lip-sync throughput per stage, and time to first video for /v1/talk on local models.

Run: ``.venv/bin/python -m bench.lipsync [--seconds 10] [--skip-talk]``

Method: the portrait is scikit-image's astronaut (512×512); the speech is the packaged
piper voice reading a fixed English text (the same audio for every renderer). Each
renderer runs the whole clip once to warm up, then ``--repeats`` times; the best run is
reported. Stages: detect (decode + Haar pre-check, once per avatar), mel (audio
features), model (Wav2Lip network / procedural warp), paste (blend into the frame),
encode (libx264 veryfast crf 23 + AAC via PyAV). "x real time" is audio seconds divided by
processing seconds (detect excluded: it runs once at avatar upload, not per clip).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.sounds import piper_speech

TEXT = (
    "Good morning, and thank you for calling. I can help you with your order, your invoice, "
    "or a delivery that has not arrived yet. Please tell me what you need, and I will do my best "
    "to answer quickly and clearly."
)


def speech(seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of real piper speech (the TEXT paragraph, repeated as needed)."""
    x, rate = piper_speech(TEXT)
    reps = int(np.ceil(seconds * rate / x.size))
    return np.tile(x, reps)[: int(seconds * rate)], rate


def portrait() -> bytes:
    import cv2
    from skimage import data

    ok, buf = cv2.imencode(".png", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def run_renderer(renderer: Any, audio: np.ndarray, rate: int, repeats: int) -> dict[str, Any]:
    from lipsync.avatars import prepare_avatar
    from lipsync.render import VideoBuilder

    image = portrait()
    t0 = time.perf_counter()
    avatar = prepare_avatar(image)
    detect_s = time.perf_counter() - t0
    runs = []
    for i in range(repeats + 1):
        with tempfile.TemporaryDirectory() as tmp:
            builder = VideoBuilder(renderer, avatar, Path(tmp) / "out.mp4", fps=25)
            t0 = time.perf_counter()
            builder.add(audio, rate)
            builder.finish()
            wall = time.perf_counter() - t0
            frames = builder.writer.frames_written
        if i:  # first run is the warm-up
            runs.append((wall, dict(builder.timings), frames))
    wall, stages, frames = min(runs, key=lambda r: r[0])
    seconds = audio.size / rate
    return {
        "renderer": renderer.name,
        "audio_s": round(seconds, 2),
        "frames": frames,
        "wall_s": round(wall, 3),
        "fps": round(frames / wall, 1),
        "x_real_time": round(seconds / wall, 2),
        "stages_ms_per_frame": {
            "detect(once)": round(detect_s * 1000, 1),
            **{k: round(v * 1000 / frames, 3) for k, v in stages.items()},
        },
    }


def cuda_section(audio: np.ndarray, rate: int, repeats: int) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {
            "status": "no GPU lent",
            "code_path": (
                "lipsync.engine.Wav2LipEngine on device 'cuda': model.half(), fp16 inputs, "
                "torch.inference_mode, batches of lipsync.batch_size; CUDA OOM halves the batch, "
                "empties the cache and retries; profile_cuda_memory() gives per-block peak memory"
            ),
        }
    from lipsync.engine import Wav2LipEngine
    from lipsync.render import Wav2LipRenderer

    engine = Wav2LipEngine.with_random_weights(device="cuda", batch_size=64)
    result = run_renderer(Wav2LipRenderer(engine), audio, rate, repeats)
    result["memory"] = engine.memory_report()
    result["block_peak_bytes"] = engine.profile_cuda_memory(64)
    return result


def talk_first_video(requests: int) -> dict[str, Any]:
    """A real gateway (uvicorn thread) with no cloud key: whisper / SmolLM2 / piper."""
    import httpx

    from gateway.app import create_app
    from gateway.settings import Settings
    from tests.servers import ServerThread

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(dashscope_api_key=None, data_dir=Path(tmp), log_json=False)
        server = ServerThread(create_app(settings)).start()
        try:
            client = httpx.Client(base_url=server.url, timeout=600)
            avatar = client.post("/v1/avatars", files={"image": ("a.png", portrait(), "image/png")}).json()[
                "id"
            ]
            body = {"text": "Hello! What can you do for me?", "avatar_id": avatar, "max_tokens": 64}
            t0 = time.perf_counter()
            cold = client.post("/v1/talk", json=body).json()
            cold_s = time.perf_counter() - t0
            warm = [client.post("/v1/talk", json=body).json() for _ in range(requests)]
        finally:
            server.stop()
    keys = ("first_video_ms", "llm_first_sentence_ms", "llm_ms", "tts_ms", "render_ms", "total_ms")
    return {
        "providers": warm[-1]["providers"],
        "cold_total_s (model loads)": round(cold_s, 2),
        "cold_first_video_ms": cold["timings"]["first_video_ms"],
        "warm_median_ms": {k: round(statistics.median(w["timings"][k] for w in warm), 1) for k in keys},
        "warm_reply_duration_s": [w["duration_s"] for w in warm],
        "sample_reply": warm[-1]["reply"][:160],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length per clip")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--talk-requests", type=int, default=3)
    parser.add_argument("--skip-talk", action="store_true")
    args = parser.parse_args()

    import torch

    from lipsync.engine import Wav2LipEngine
    from lipsync.procedural import ProceduralRenderer
    from lipsync.render import Wav2LipRenderer

    audio, rate = speech(args.seconds)
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, threads {torch.get_num_threads()}",
        "a_procedural_cpu": run_renderer(ProceduralRenderer(), audio, rate, args.repeats),
        "b_wav2lip_cpu_random_weights": run_renderer(
            Wav2LipRenderer(Wav2LipEngine.with_random_weights(device="cpu", batch_size=64)),
            audio,
            rate,
            args.repeats,
        ),
        "c_wav2lip_cuda_fp16": cuda_section(audio, rate, args.repeats),
    }
    if not args.skip_talk:
        report["d_talk_local_models"] = talk_first_video(args.talk_requests)
    print(__doc__)
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
