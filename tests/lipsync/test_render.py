"""Renderer selection and whole clips through both renderers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from lipsync.avatars import prepare_avatar
from lipsync.encode import probe_durations
from lipsync.render import RenderService
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


def test_a_wav2lip_worker_killed_mid_clip_fails_that_clip_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault drill SIGKILLs the worker inside its first batch: that clip fails with the
    signal named, the next one renders on a fresh worker."""
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

    async def go() -> None:
        await service.start()
        with pytest.raises(ProviderError) as err:
            await service.run(service.render_file, avatar, speechlike(0.3, 16000), 16000, tmp_path / "x.mp4")
        assert err.value.kind is ErrorKind.UNAVAILABLE and "SIGKILL" in err.value.message
        await service.run(service.render_file, avatar, speechlike(0.3, 16000), 16000, tmp_path / "y.mp4")
        assert service.worker_stats()[0].crashes == 1
        await service.stop()

    asyncio.run(go())
    assert not (tmp_path / "x.mp4").exists()  # the failed clip left no half-written video
