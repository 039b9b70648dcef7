"""Renderer selection and the bounded render pool.

``RenderService`` owns one renderer for the process: Wav2Lip when a checkpoint is
configured and loads, the procedural renderer otherwise (also when the checkpoint is
broken: the error is logged and kept in ``load_error`` so the gateway still talks). All
rendering and encoding runs on a thread pool of ``max_concurrent_renders`` workers, so
the event loop never blocks and at most that many renders run at once. Wav2Lip's torch
runs in a supervised worker process (``lipsync/wav2lip_worker.py``), never in the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from lipsync.artifacts import ArtifactStore
from lipsync.avatars import Avatar
from lipsync.blend import face_input, paste
from lipsync.encode import Mp4Writer
from lipsync.errors import LipsyncError
from lipsync.expression import ExpressionState, FaceAnimator
from lipsync.labels import MediaLabel, draw_ai_mark, labelled_wav_header
from lipsync.mel import SAMPLE_RATE, mel_chunks, melspectrogram, resample
from lipsync.procedural import MOUTH_HALF_WIDTH, MOUTH_X, MOUTH_Y, ProceduralRenderer
from lipsync.wav2lip_worker import RemoteWav2Lip
from providers.base import ErrorKind, ProviderError
from providers.local.workers.supervisor import RestartPolicy
from providers.wav import float_to_pcm16, pcm_to_wav

log = logging.getLogger("talkgate.lipsync")
#: Wav2Lip frames do not sway (the pasted mouth would not follow the head)
STILL = (0.0, 0.0, 0.0)
T = TypeVar("T")


class Renderer(Protocol):
    name: Literal["wav2lip", "procedural"]

    def render(
        self,
        avatar: Avatar,
        pcm16k: np.ndarray,
        n_frames: int | None = None,
        timings: dict[str, float] | None = None,
        expression: ExpressionState | None = None,
    ) -> Iterator[np.ndarray]:
        """Full-size BGR frames for 16 kHz mono float audio (``expression``: one per video)."""
        ...


class Wav2LipRenderer:
    """Mel windows → Wav2Lip mouths (batched) → feathered paste into the portrait."""

    name: Literal["wav2lip"] = "wav2lip"

    def __init__(self, engine: Any, fps: int = 25) -> None:
        #: ``predict``/``batch_size``: lipsync.wav2lip_worker.RemoteWav2Lip (torch in a worker
        #: process), or lipsync.engine.Wav2LipEngine in-process (benchmarks)
        self.engine = engine
        self.fps = fps
        self._faces: dict[str, FaceAnimator] = {}

    def face(self, avatar: Avatar) -> FaceAnimator:
        """The avatar's expression fields (lipsync/expression.py), at the procedural mouth's place."""
        face = self._faces.get(avatar.id)
        if face is None:
            box = avatar.box
            face = FaceAnimator(
                box, avatar.image, box.x1 + MOUTH_X * box.width, box.y1 + MOUTH_Y * box.height,
                MOUTH_HALF_WIDTH * box.width,
            )  # fmt: skip
            if len(self._faces) > 32:
                self._faces.clear()
            self._faces[avatar.id] = face
        return face

    def render(
        self,
        avatar: Avatar,
        pcm16k: np.ndarray,
        n_frames: int | None = None,
        timings: dict[str, float] | None = None,
        expression: ExpressionState | None = None,
    ) -> Iterator[np.ndarray]:
        """``expression``: brows, lids and blinks on the portrait the mouths are pasted into (no
        sway: the pasted lower face would not follow it; the paste covers the mouth corners)."""
        stages = timings if timings is not None else {}
        t0 = time.perf_counter()
        mel = melspectrogram(pcm16k)
        if not np.isfinite(mel).all():
            raise LipsyncError("the audio produced a non-finite spectrogram", reason="bad_audio")
        chunks = mel_chunks(mel, self.fps, n_frames)
        face6 = face_input(avatar.crop)
        face = self.face(avatar) if expression is not None and expression.enabled else None
        _add(stages, "mel", t0)
        step = max(1, self.engine.batch_size)
        for start in range(0, len(chunks), step):
            t1 = time.perf_counter()
            mouths = self.engine.predict(face6, chunks[start : start + step], cache_key=avatar.id)
            _add(stages, "model", t1)
            for mouth in mouths:
                t2 = time.perf_counter()
                portrait = avatar.image
                if face is not None and expression is not None:
                    controls, blink, _ = expression.step()
                    portrait = face.base(avatar.image, controls, blink, STILL)
                frame = paste(portrait, mouth, avatar.box)
                _add(stages, "paste", t2)
                yield frame


def _add(stages: dict[str, float], key: str, since: float) -> None:
    stages[key] = stages.get(key, 0.0) + time.perf_counter() - since


class VideoBuilder:
    """One MP4 built segment by segment (one segment per spoken sentence).

    A request feeds its segments one after another; a lock makes ``abort`` wait for a
    segment still being encoded on another worker (after a failure elsewhere in the
    pipeline). ``timings`` holds the seconds per stage (mel, model, paste, encode).
    """

    def __init__(
        self,
        renderer: Renderer,
        avatar: Avatar,
        path: Path,
        fps: int,
        label: MediaLabel | None = None,
        *,
        expression: ExpressionState | None = None,
        visible_mark: bool = False,
        fallback: Renderer | None = None,
    ) -> None:
        self.renderer = renderer
        #: takes over when the Wav2Lip worker dies mid-video (the rest of the clip is procedural)
        self.fallback = fallback
        #: why the fallback took over (the worker's death report), None while it has not
        self.fallback_reason: str | None = None
        self.avatar = avatar
        self.label = label
        #: the face's expression across the whole video
        self.expression = expression
        self.visible_mark = visible_mark
        self.writer = Mp4Writer(path, avatar.width, avatar.height, fps=fps, label=label)
        self.timings: dict[str, float] = {}
        self.audio_parts: list[np.ndarray] = []  # output-rate audio, for the WAV artifact
        self._lock = threading.Lock()

    def add(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Render and encode one stretch of mono float audio."""
        with self._lock:
            self._add(pcm, sample_rate)

    def _add(self, pcm: np.ndarray, sample_rate: int) -> None:
        out_audio = resample(pcm, sample_rate, self.writer.sample_rate)
        n_frames = self.writer.frames_for(out_audio.size)
        audio16k = resample(pcm, sample_rate, SAMPLE_RATE)
        frames = self._frames(audio16k, n_frames) if n_frames else iter(())
        if self.visible_mark:
            frames = (draw_ai_mark(f.copy()) for f in frames)
        rendering_before = self._rendering()
        t0 = time.perf_counter()
        self.writer.write(frames, out_audio)
        # The renderer is lazy and runs inside write(): encoding is the rest of the wall time.
        spent = time.perf_counter() - t0 - (self._rendering() - rendering_before)
        self.timings["encode"] = self.timings.get("encode", 0.0) + spent
        self.audio_parts.append(out_audio)

    def _frames(self, audio16k: np.ndarray, n_frames: int) -> Iterator[np.ndarray]:
        """The renderer's frames; when the Wav2Lip worker dies (``unavailable``), the fallback
        renders the rest of this segment and every later one, so the clip still completes."""
        done = 0
        if self.fallback_reason is None:
            extra = {"expression": self.expression} if self.expression is not None else {}
            try:
                for frame in self.renderer.render(self.avatar, audio16k, n_frames, self.timings, **extra):
                    done += 1
                    yield frame
                return
            except ProviderError as exc:
                if self.fallback is None or exc.kind is not ErrorKind.UNAVAILABLE:
                    raise
                log.error(
                    "Wav2Lip failed after %d frames of a segment, the procedural renderer finishes "
                    "this video: %s",
                    done,
                    exc.message,
                )
                self.fallback_reason = exc.message
                self.renderer = self.fallback
        extra = {"expression": self.expression} if self.expression is not None else {}
        for index, frame in enumerate(
            self.renderer.render(self.avatar, audio16k, n_frames, self.timings, **extra)
        ):
            if index >= done:  # the frames Wav2Lip already delivered stay in the video
                yield frame

    def _rendering(self) -> float:
        return sum(self.timings.get(k, 0.0) for k in ("mel", "model", "paste"))

    def finish(self) -> Path:
        t0 = time.perf_counter()
        with self._lock:
            self.writer.close()
        self.timings["encode"] = self.timings.get("encode", 0.0) + time.perf_counter() - t0
        return self.writer.path

    def abort(self) -> None:
        with self._lock:
            self.writer.abort()

    def wav_bytes(self) -> bytes:
        """The spoken audio as a 16-bit mono WAV file."""
        audio = np.concatenate(self.audio_parts) if self.audio_parts else np.zeros(0, np.float32)
        wav = pcm_to_wav(float_to_pcm16(audio).tobytes(), self.writer.sample_rate)
        return wav if self.label is None else labelled_wav_header(wav[:44], self.label) + wav[44:]

    @property
    def duration_s(self) -> float:
        return self.writer.audio_seconds


class RenderService:
    """The process's renderer plus its bounded worker pool."""

    def __init__(
        self,
        *,
        fps: int = 25,
        max_concurrent: int = 2,
        checkpoint: Path | None = None,
        device: str = "auto",
        batch_size: int = 64,
        artifacts: ArtifactStore | None = None,
        policy: RestartPolicy | None = None,
    ) -> None:
        self.fps = fps
        self.policy = policy or RestartPolicy()
        self.worker: RemoteWav2Lip | None = None
        self.artifacts = artifacts
        self.checkpoint = checkpoint
        self.device = device
        self.batch_size = batch_size
        self.max_concurrent = max(1, max_concurrent)
        self._executor = ThreadPoolExecutor(max_workers=self.max_concurrent, thread_name_prefix="render")
        self._renderer: Renderer | None = None
        self._fallback: ProceduralRenderer | None = None
        self.load_error: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> RenderService:
        cfg = settings.lipsync
        return cls(
            fps=cfg.fps,
            max_concurrent=cfg.max_concurrent_renders,
            checkpoint=settings.wav2lip_checkpoint,
            device=cfg.device,
            batch_size=cfg.batch_size,
            artifacts=ArtifactStore(settings.data_dir / "artifacts", cfg.artifact_ttl_s),
            policy=settings.local.supervision,
        )

    # ------------------------------------------------------------------ selection

    @property
    def renderer(self) -> Renderer:
        """The renderer to use; loads Wav2Lip on first use if ``start`` was not awaited."""
        if self._renderer is None:
            self._renderer = self._build()
        return self._renderer

    @property
    def name(self) -> str:
        return self.renderer.name

    def _build(self) -> Renderer:
        if self.checkpoint is None:
            return ProceduralRenderer(fps=self.fps)
        worker = RemoteWav2Lip(
            self.checkpoint,
            device=self.device,
            batch_size=self.batch_size,
            concurrency=self.max_concurrent,
            policy=self.policy,
        )
        try:
            memory = worker.load()
        except ProviderError as exc:  # a bad checkpoint, torch missing, CUDA asked for without a GPU
            self.load_error = exc.message
            worker.stop()
        else:
            log.info("Wav2Lip loaded from %s in worker pid %s: %s", self.checkpoint, worker.pid, memory)
            self.worker = worker
            return Wav2LipRenderer(worker, fps=self.fps)
        log.error("Wav2Lip checkpoint not used, falling back to the procedural renderer: %s", self.load_error)
        return ProceduralRenderer(fps=self.fps)

    def worker_stats(self) -> list[Any]:
        """The Wav2Lip worker's counters (``WorkerStats``), for the metrics; empty without one."""
        return [self.worker.stats] if self.worker is not None else []

    def gpu_memory(self) -> dict[str, float]:
        """{device: bytes} torch held in the Wav2Lip worker at its last report."""
        report = self.worker.memory_report() if self.worker is not None else {}
        cuda = report.get("cuda")
        return {report["device"]: float(cuda["allocated_bytes"])} if cuda else {}

    def use(self, renderer: Renderer) -> None:
        """Install a specific renderer (benchmarks, tests)."""
        self._renderer = renderer

    # ------------------------------------------------------------------ running

    async def start(self) -> None:
        """Starts the artifact sweeper; loads the model off the event loop so the first request
        does not pay for it."""
        if self.artifacts is not None:
            await self.artifacts.start()
        if self._renderer is None and self.checkpoint is not None:
            await self.run(lambda: self.renderer)

    async def stop(self) -> None:
        if self.artifacts is not None:
            await self.artifacts.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound work on the render pool (at most ``max_concurrent`` at once)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def builder(
        self,
        avatar: Avatar,
        path: Path,
        label: MediaLabel | None = None,
        *,
        expression: ExpressionState | None = None,
        visible_mark: bool = False,
    ) -> VideoBuilder:
        renderer = self.renderer
        return VideoBuilder(
            renderer,
            avatar,
            path,
            self.fps,
            label,
            expression=expression,
            visible_mark=visible_mark,
            fallback=self._procedural() if renderer.name == "wav2lip" else None,
        )

    def _procedural(self) -> ProceduralRenderer:
        """One procedural renderer kept for Wav2Lip's mid-video fallback (it caches per avatar)."""
        if self._fallback is None:
            self._fallback = ProceduralRenderer(fps=self.fps)
        return self._fallback

    def render_file(self, avatar: Avatar, pcm: np.ndarray, sample_rate: int, path: Path) -> VideoBuilder:
        """Synchronous one-shot: the whole clip into ``path`` (call through ``run``)."""
        builder = self.builder(avatar, path)
        try:
            builder.add(pcm, sample_rate)
            builder.finish()
        except BaseException:
            builder.abort()
            raise
        return builder
