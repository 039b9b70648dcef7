"""Batched Wav2Lip inference: one shared model, fp16 on CUDA, CPU otherwise, OOM back-off.

For a still avatar every frame has the same face input, so the face encoder runs once
per avatar (its skip features are cached) and each batch only runs the audio encoder and
the decoder. On CUDA, an out-of-memory error halves the batch, empties the cache and
retries; the smaller batch is kept for later calls.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lipsync.wav2lip import Wav2Lip, load_checkpoint

log = logging.getLogger("talkgate.lipsync")
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def pick_device(preference: str = "auto") -> torch.device:
    """ "auto" → CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("lipsync.device is 'cuda' but PyTorch sees no CUDA device")
    return device


class Wav2LipEngine:
    def __init__(self, model: Wav2Lip, device: torch.device, *, batch_size: int = 64) -> None:
        self.device = device
        self.half = device.type == "cuda"
        self.dtype = torch.float16 if self.half else torch.float32
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.batch_size = max(1, batch_size)
        self._feats: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", batch_size: int = 64) -> Wav2LipEngine:
        dev = pick_device(device)
        return cls(load_checkpoint(path, "cpu"), dev, batch_size=batch_size)

    @classmethod
    def with_random_weights(cls, device: str = "cpu", batch_size: int = 64, seed: int = 0) -> Wav2LipEngine:
        """For benchmarks and tests: the real network and cost, no licensed weights."""
        torch.manual_seed(seed)
        return cls(Wav2Lip(), pick_device(device), batch_size=batch_size)

    # ------------------------------------------------------------------ inference

    def _face_features(self, face6: np.ndarray, key: str | None) -> list[torch.Tensor]:
        if key is not None:
            with self._lock:
                if key in self._feats:
                    self._feats.move_to_end(key)
                    return self._feats[key]
        tensor = torch.from_numpy(face6.copy())[None].to(self.device, self.dtype)
        with torch.inference_mode():
            feats = self.model.encode_face(tensor)
        if key is not None:
            with self._lock:
                self._feats[key] = feats
                while len(self._feats) > 16:
                    self._feats.popitem(last=False)
        return feats

    def predict(self, face6: np.ndarray, mels: np.ndarray, cache_key: str | None = None) -> np.ndarray:
        """(6,96,96) face input + (N,80,16) mel windows → (N,96,96,3) BGR uint8 mouths."""
        feats = self._face_features(face6, cache_key)
        n = mels.shape[0]
        out = np.empty((n, 96, 96, 3), dtype=np.uint8)
        start = 0
        while start < n:
            size = min(self.batch_size, n - start)
            try:
                out[start : start + size] = self._run(feats, mels[start : start + size])
            except _OOM:
                if size == 1:
                    raise
                self.batch_size = max(1, size // 2)
                log.warning("CUDA out of memory at batch %d; retrying with %d", size, self.batch_size)
                torch.cuda.empty_cache()
                continue
            start += size
        return out

    def _run(self, feats: list[torch.Tensor], mels: np.ndarray) -> np.ndarray:
        audio = torch.from_numpy(np.ascontiguousarray(mels))[:, None].to(self.device, self.dtype)
        with torch.inference_mode():
            pred = self.model.decode(audio, feats)
            pred = (pred.float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
            return pred.permute(0, 2, 3, 1).cpu().numpy()

    # ------------------------------------------------------------------ reporting

    def memory_report(self) -> dict[str, Any]:
        """Weight bytes per top-level module; on CUDA also allocator figures (peak, reserved)."""
        modules = {
            name: sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))
            for name, m in self.model.named_children()
        }
        report: dict[str, Any] = {
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "batch_size": self.batch_size,
            "weights_bytes": modules,
        }
        if self.device.type == "cuda":
            report["cuda"] = {
                "allocated_bytes": torch.cuda.memory_allocated(self.device),
                "peak_allocated_bytes": torch.cuda.max_memory_allocated(self.device),
                "reserved_bytes": torch.cuda.memory_reserved(self.device),
                "name": torch.cuda.get_device_name(self.device),
            }
        return report

    def profile_cuda_memory(self, batch_size: int | None = None) -> dict[str, int]:
        """Peak extra CUDA memory (bytes) while each block runs, for one batch of random input.

        Hooks every encoder/decoder block; empty on CPU. Used by ``bench/lipsync.py``.
        """
        if self.device.type != "cuda":
            return {}
        n = batch_size or self.batch_size
        blocks = [
            *(f"face_encoder_blocks.{i}" for i in range(len(self.model.face_encoder_blocks))),
            "audio_encoder",
            *(f"face_decoder_blocks.{i}" for i in range(len(self.model.face_decoder_blocks))),
            "output_block",
        ]
        peaks: dict[str, int] = {}
        before: dict[str, int] = {}
        handles = []
        for name in blocks:
            module = self.model.get_submodule(name)

            def pre(_m: Any, _a: Any, name: str = name) -> None:
                torch.cuda.synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
                before[name] = torch.cuda.memory_allocated(self.device)

            def post(_m: Any, _a: Any, _o: Any, name: str = name) -> None:
                torch.cuda.synchronize(self.device)
                peak = torch.cuda.max_memory_allocated(self.device) - before[name]
                peaks[name] = max(peaks.get(name, 0), peak)

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        try:
            faces = torch.rand(n, 6, 96, 96, device=self.device, dtype=self.dtype)
            mels = torch.rand(n, 1, 80, 16, device=self.device, dtype=self.dtype)
            with torch.inference_mode():
                self.model(mels, faces)
        finally:
            for h in handles:
                h.remove()
        return peaks
