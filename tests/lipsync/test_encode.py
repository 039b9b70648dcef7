"""MP4 writing: H.264 + AAC that PyAV reads back with audio and video within one frame."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from lipsync.encode import Mp4Writer, probe_durations


@pytest.mark.parametrize("seconds", [[0.3], [1.234, 0.517, 2.002], [0.013, 0.9]])
def test_durations_agree_within_40ms(tmp_path: Path, seconds: list[float]) -> None:
    path = tmp_path / "out.mp4"
    writer = Mp4Writer(path, 128, 96, fps=25)
    rng = np.random.default_rng(0)
    for s in seconds:
        audio = (0.1 * rng.standard_normal(int(s * writer.sample_rate))).astype(np.float32)
        n = writer.frames_for(audio.size)
        writer.write((np.full((96, 128, 3), 40 * i % 256, np.uint8) for i in range(n)), audio)
    writer.close()
    video_s, audio_s = probe_durations(path)
    assert abs(video_s - audio_s) <= 0.040, (video_s, audio_s)
    assert abs(audio_s - sum(seconds)) <= 0.05
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.video[0].average_rate == 25
        meta_v = float(c.streams.video[0].duration * c.streams.video[0].time_base)
        meta_a = float(c.streams.audio[0].duration * c.streams.audio[0].time_base)
        assert abs(meta_v - meta_a) <= 0.040


def test_odd_dimensions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(tmp_path / "x.mp4", 101, 100)


def test_abort_removes_the_partial_file(tmp_path: Path) -> None:
    writer = Mp4Writer(tmp_path / "x.mp4", 64, 64)
    writer.write([np.zeros((64, 64, 3), np.uint8)], np.zeros(960, np.float32))
    writer.abort()
    assert not (tmp_path / "x.mp4").exists()
