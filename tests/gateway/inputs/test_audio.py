"""Audio bombs and over-long uploads (issue 18 item 2): refused from the container's declared
duration before decoding, and by counting while decoding when nothing is declared; per-surface
limits; the tenant's quota checked against the upload's real length before the ASR runs."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import av
import httpx
import numpy as np
import pytest

from gateway.audio import AudioTooLong, decode_to_pcm
from tests.gateway.inputs.test_images import peak_rss_mb
from tests.gateway.saas_support import database_url, saas  # noqa: F401
from tests.servers import GatewayProcess
from tests.sounds import tone_wav


@lru_cache(maxsize=4)
def silent_flac(seconds: float, rate: int = 8000) -> bytes:
    """Silence as FLAC: 3.5 h at 8 kHz is a 2.39 MB file (12,600 s of billed ASR)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout = "mono"
        block = np.zeros((1, rate * 10), dtype=np.int16)
        for i in range(int(seconds // 10)):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * block.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def undeclared(flac: bytes) -> bytes:
    """The same FLAC with STREAMINFO's total-samples field zeroed: no duration is declared."""
    data = bytearray(flac)
    data[8 + 13] &= 0xF0
    data[8 + 14 : 8 + 18] = b"\0\0\0\0"
    return bytes(data)


def test_a_declared_duration_over_the_limit_is_refused_before_decoding() -> None:
    bomb = silent_flac(3.5 * 3600)
    assert len(bomb) < 2_500_000
    start = time.perf_counter()
    with pytest.raises(AudioTooLong, match=r"3\.5 h long; at most 10\.0 min"):
        decode_to_pcm(bomb, 16000, max_seconds=600)
    assert time.perf_counter() - start < 0.2  # nothing was decoded


def test_an_undeclared_duration_is_counted_while_decoding() -> None:
    data = undeclared(silent_flac(120))
    with pytest.raises(AudioTooLong, match="longer than 60 s"):
        decode_to_pcm(data, 16000, max_seconds=60)
    assert decode_to_pcm(data, 16000, max_seconds=130).duration_s == pytest.approx(120, abs=0.1)


def test_extreme_expansion_is_refused() -> None:
    data = silent_flac(60)  # ~0.2 KB a second of upload for 32 KB a second of 16 kHz PCM
    with pytest.raises(AudioTooLong, match="10 times its upload size"):
        decode_to_pcm(data, 16000, max_seconds=600, max_expansion=10)
    assert decode_to_pcm(data, 16000, max_seconds=600, max_expansion=256).duration_s == pytest.approx(
        60, abs=0.1
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        {"TALKGATE_DATA_DIR": str(tmp_path_factory.mktemp("audio")), "TALKGATE_LOG_JSON": "false"}
    ).start()
    yield process
    process.stop()


@pytest.mark.slow
def test_the_flac_bomb_is_refused_by_the_gateway_without_memory_growth(gateway: GatewayProcess) -> None:
    url = f"{gateway.url}/v1/audio/transcriptions"
    warm = httpx.post(url, files={"file": ("a.wav", tone_wav(0.5))}, data={"model": "whisper-1"}, timeout=60)
    assert warm.status_code == 200, warm.text
    before = peak_rss_mb(gateway.process.pid)
    start = time.monotonic()
    r = httpx.post(
        url, files={"file": ("a.flac", silent_flac(3.5 * 3600))}, data={"model": "whisper-1"}, timeout=60
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_audio", r.text
    assert "3.5 h" in r.json()["error"]["message"] and time.monotonic() - start < 1.0
    growth = peak_rss_mb(gateway.process.pid) - before
    assert growth < 50, f"the gateway's peak RSS grew by {growth:.0f} MB"


@pytest.mark.slow
def test_talk_has_its_own_shorter_limit(gateway: GatewayProcess) -> None:
    import base64

    from tests.lipsync.media import astronaut_png

    avatar = httpx.post(f"{gateway.url}/v1/avatars", files={"image": ("a.png", astronaut_png())}, timeout=60)
    body = {"audio": base64.b64encode(silent_flac(120, 16000)).decode(), "avatar_id": avatar.json()["id"]}
    r = httpx.post(f"{gateway.url}/v1/talk", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert "2.0 min long; at most 60 s are accepted" in r.json()["error"]["message"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_quota_is_checked_against_the_uploads_length(saas: Any, sim: Any) -> None:  # noqa: F811
    gw = saas()
    assert gw.admin.post(
        "/admin/tenants", json={"id": "acme", "name": "Acme", "quotas": {"asr_seconds": 30}}
    ).status_code in (200, 201)
    client = gw.client(gw.create_key(tenant="acme", scopes=["asr"])["key"])
    sim.clear_requests()
    long = client.post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", tone_wav(40.0))}, data={"model": "whisper-1"}
    )
    assert long.status_code == 429 and long.json()["error"]["code"] == "insufficient_quota", long.text
    assert "needs 40" in long.json()["error"]["message"]
    assert sim.requests() == []  # refused before the upstream was asked
    short = client.post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", tone_wav(5.0))}, data={"model": "whisper-1"}
    )
    assert short.status_code == 200, short.text
