"""Renderer selection and whole clips through both renderers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipsync.avatars import prepare_avatar
from lipsync.encode import probe_durations
from lipsync.render import RenderService, VideoBuilder
from providers.base import ErrorKind, ProviderError
from tests.lipsync.media import astronaut_png
from tests.providers.local.workers.support import wait_gone
from tests.sounds import speechlike


def test_procedural_is_the_default_and_renders_a_clip(tmp_path: Path) -> None:
    service = RenderService(fps=25, max_concurrent=1)
    assert service.name == "procedural" and service.load_error is None
    avatar = prepare_avatar(astronaut_png())
    builder = service.render_file(avatar, speechlike(1.3, 22050), 22050, tmp_path / "a.mp4")
    video_s, audio_s = probe_durations(tmp_path / "a.mp4")
    assert abs(video_s - audio_s) <= 0.04 and abs(audio_s - 1.3) < 0.05
    assert set(builder.timings) == {"mel", "model", "paste", "encode"}
    assert builder.wav_bytes()[:4] == b"RIFF"


def test_broken_checkpoint_falls_back_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "wav2lip.pth"
    bad.write_text("<html>not found</html>")
    service = RenderService(checkpoint=bad)
    assert service.name == "procedural"
    assert service.load_error is not None and "HTML" in service.load_error


def test_wav2lip_checkpoint_renders_through_the_pool(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from lipsync.wav2lip import Wav2Lip

    torch.manual_seed(0)
    model = Wav2Lip()
    ckpt = tmp_path / "wav2lip.pth"
    torch.save(
        {
            "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
            "optimizer": None,
            "global_step": 1,
            "global_epoch": 1,
        },
        ckpt,
    )
    service = RenderService(checkpoint=ckpt, device="cpu", batch_size=8, max_concurrent=1)

    async def go() -> None:
        await service.start()
        assert service.name == "wav2lip"
        pid = service.worker.pid
        assert pid is not None and pid != os.getpid()  # torch runs in the worker, not here
        avatar = prepare_avatar(astronaut_png())
        builder = await service.run(
            service.render_file, avatar, speechlike(0.6, 16000), 16000, tmp_path / "w.mp4"
        )
        assert builder.timings["model"] > 0 and builder.timings["paste"] > 0
        # Killed between clips (as by the OOM killer): the supervisor starts a new worker at
        # once, and the next clip renders on it.
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid)
        for _ in range(200):
            if service.worker.pid not in (None, pid):
                break
            await asyncio.sleep(0.05)
        await service.run(service.render_file, avatar, speechlike(0.3, 16000), 16000, tmp_path / "y.mp4")
        new_pid = service.worker.pid
        assert new_pid != pid and service.worker_stats()[0].crashes == 1
        await service.stop()
        assert wait_gone(new_pid)  # no worker is left behind

    asyncio.run(go())
    video_s, audio_s = probe_durations(tmp_path / "w.mp4")
    assert abs(video_s - audio_s) <= 0.04
    import av

    with av.open(str(tmp_path / "w.mp4")) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    avatar = prepare_avatar(astronaut_png())
    b = avatar.box
    lower = (slice(b.y1 + b.height // 2, b.y2 - 8), slice(b.x1 + 8, b.x2 - 8))
    # Random weights produce noise, pasted only where the mask is: the lower face changed,
    # the top of the image did not (beyond compression noise).
    lower_change = np.abs(frames[3][lower].astype(int) - avatar.image[lower].astype(int)).mean()
    top_change = np.abs(frames[3][:40].astype(int) - avatar.image[:40].astype(int)).mean()  # codec noise only
    assert lower_change > 10 and top_change < lower_change / 3, (lower_change, top_change)


def test_gateway_start_up_does_not_import_torch_without_a_checkpoint(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gateway.app import create_app\n"
        "from gateway.settings import Settings\n"
        f"app = create_app(Settings(data_dir={str(tmp_path)!r}, dashscope_api_key=None))\n"
        "assert app.state.services.renderer is not None and app.state.services.avatars is not None\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_a_wav2lip_worker_killed_mid_clip_is_finished_by_the_procedural_renderer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault drill SIGKILLs the worker inside its first batch: that clip is finished by the
    procedural renderer (every frame there, the reason kept), the next one renders with Wav2Lip
    on a fresh worker."""
    import av

    torch = pytest.importorskip("torch")
    from lipsync.wav2lip import Wav2Lip
    from providers.local.workers.faults import ENV

    torch.manual_seed(0)
    ckpt = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": Wav2Lip().state_dict()}, ckpt)
    monkeypatch.setenv(
        ENV,
        json.dumps(
            {"model": "wav2lip", "action": "kill", "method": "predict", "once_file": str(tmp_path / "fired")}
        ),
    )
    service = RenderService(checkpoint=ckpt, device="cpu", batch_size=8, max_concurrent=1)
    avatar = prepare_avatar(astronaut_png())

    async def go() -> tuple[Any, Any]:
        await service.start()
        crashed = await service.run(
            service.render_file, avatar, speechlike(0.6, 16000), 16000, tmp_path / "x.mp4"
        )
        after = await service.run(
            service.render_file, avatar, speechlike(0.6, 16000), 16000, tmp_path / "y.mp4"
        )
        assert service.worker_stats()[0].crashes == 1
        await service.stop()
        return crashed, after

    crashed, after = asyncio.run(go())
    assert crashed.renderer.name == "procedural"
    assert crashed.fallback_reason is not None and "SIGKILL" in crashed.fallback_reason
    assert after.renderer.name == "wav2lip" and after.fallback_reason is None
    with av.open(str(tmp_path / "x.mp4")) as crashed_video, av.open(str(tmp_path / "y.mp4")) as whole:
        frames = sum(1 for _ in crashed_video.decode(video=0))
        assert frames == sum(1 for _ in whole.decode(video=0)) >= 15  # 0.6 s at 25 fps


class _DiesAfter:
    """Wav2Lip's stand-in at the renderer seam: ``frames`` black frames, then the worker's death."""

    name = "wav2lip"

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def render(self, avatar: Any, pcm16k: Any, n_frames: int | None = None, *args: Any, **kwargs: Any) -> Any:
        for _ in range(self.frames):
            yield np.zeros_like(avatar.image)
        raise ProviderError(
            ErrorKind.UNAVAILABLE, "the worker process was killed by SIGKILL during this call"
        )


def test_the_fallback_renders_only_the_frames_wav2lip_did_not(tmp_path: Path) -> None:
    import av

    from lipsync.procedural import ProceduralRenderer

    avatar = prepare_avatar(astronaut_png())
    builder = VideoBuilder(_DiesAfter(5), avatar, tmp_path / "v.mp4", 25, fallback=ProceduralRenderer(25))
    builder.add(speechlike(0.6, 16000), 16000)
    builder.add(speechlike(0.4, 16000), 16000)  # a later segment: the fallback from its start
    builder.finish()
    assert builder.renderer.name == "procedural" and "SIGKILL" in (builder.fallback_reason or "")
    with av.open(str(tmp_path / "v.mp4")) as video:
        brightness = [float(f.to_ndarray(format="gray").mean()) for f in video.decode(video=0)]
    assert len(brightness) >= 25
    assert max(brightness[:5]) < 20  # the five frames Wav2Lip delivered (black) were kept
    assert min(brightness[5:]) > 40  # the portrait from there on, no gap and no black frame


def test_without_a_fallback_a_dead_worker_fails_the_clip_clearly(tmp_path: Path) -> None:
    """A renderer installed without the procedural fallback (benchmarks) fails the clip with the
    worker's reason and leaves no half-written video."""

    class Dying:
        name = "wav2lip"

        def render(self, *args: Any, **kwargs: Any) -> Any:
            yield from ()
            raise ProviderError(ErrorKind.UNAVAILABLE, "worker died (SIGKILL)")

    builder = VideoBuilder(Dying(), prepare_avatar(astronaut_png()), tmp_path / "z.mp4", 25)
    with pytest.raises(ProviderError, match="SIGKILL"):
        builder.add(speechlike(0.3, 16000), 16000)
    builder.abort()
    assert not (tmp_path / "z.mp4").exists()
