"""Reading a Wav2Lip checkpoint file and validating it against the generator's key table.

Users bring their own checkpoint, and the classic failures are a truncated download, an
HTML error page saved as ``.pth``, or the face detector (``s3fd.pth``) / SyncNet passed by
mistake. Each gets a message that says which one it looks like and which keys differ.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lipsync.errors import CheckpointError

_HTML_MARKERS = (b"<!doctype", b"<html", b"<?xml", b"<head", b'{"error')
_MAX_LISTED = 8


def _sniff(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"Wav2Lip checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"Wav2Lip checkpoint {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"Wav2Lip checkpoint {path} is empty (0 bytes): the download failed")
    with path.open("rb") as fh:
        head = fh.read(512).lstrip().lower()
    if any(head.startswith(m) for m in _HTML_MARKERS):
        raise CheckpointError(
            f"Wav2Lip checkpoint {path} is a web page or error document, not PyTorch weights "
            "(the download link returned HTML); download the .pth file again"
        )


def read_state_dict(path: str | Path, *, trusted: bool = False) -> dict[str, Any]:
    """Loads the file on the CPU and returns its generator state dict, with ``module.`` stripped.

    ``weights_only=True`` (no arbitrary code from pickles) unless ``trusted``.
    """
    import torch

    path = Path(path)
    _sniff(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights_only" in text.lower() or "unsupported global" in text.lower():
            raise CheckpointError(
                f"Wav2Lip checkpoint {path} contains Python objects that a weights-only load refuses; "
                "re-save it as a plain state dict, or mark it trusted"
            ) from exc
        raise CheckpointError(
            f"Wav2Lip checkpoint {path} is corrupt or not a PyTorch file ({text.splitlines()[0][:200]}); "
            "a truncated download is the usual cause"
        ) from exc
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"Wav2Lip checkpoint {path} could not be read ({type(exc).__name__}: {first}); "
            f"the file ({path.stat().st_size} bytes) is probably truncated — the official one is ~416 MB"
        ) from exc
    return extract_state_dict(obj, source=str(path))


def extract_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, Any]:
    """Accepts the official dict (``state_dict``, ``optimizer``, ...) or a bare state dict."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict")
    if "state_dict" in obj:
        state = obj["state_dict"]
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{source}: 'state_dict' is a {type(state).__name__}, not a mapping")
    elif obj and all(hasattr(v, "shape") for v in obj.values()):
        state = obj
    else:
        keys = ", ".join(sorted(map(str, obj))[:_MAX_LISTED])
        raise CheckpointError(
            f"{source} has no 'state_dict' entry and is not a bare state dict (keys: {keys})"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def _looks_like(keys: set[str]) -> str:
    if any(k.startswith(("conv1_1.", "conv3_3_norm", "fc7.")) for k in keys):
        return " It looks like the S3FD face detector (s3fd.pth), not the Wav2Lip generator."
    if any(k.startswith("face_encoder.") for k in keys) and any(k.startswith("audio_encoder.") for k in keys):
        return " It looks like the SyncNet lip-sync expert (lipsync_expert.pth), not the generator."
    if keys and not any(k.startswith("face_decoder_blocks.") for k in keys):
        return " It has no decoder: it may be the GAN discriminator, not the generator."
    return ""


def check_keys(state: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], *, source: str) -> None:
    """Raises CheckpointError naming missing / unexpected / mis-shaped keys."""
    have = set(state)
    want = set(expected)
    missing = sorted(want - have)
    unexpected = sorted(have - want)
    wrong = sorted(k for k in want & have if tuple(getattr(state[k], "shape", ())) != tuple(expected[k]))
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:_MAX_LISTED])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:_MAX_LISTED])})")
    if wrong:
        shown = ", ".join(f"{k} {tuple(state[k].shape)}≠{tuple(expected[k])}" for k in wrong[:_MAX_LISTED])
        parts.append(f"{len(wrong)} with the wrong shape ({shown})")
    raise CheckpointError(
        f"{source} is not a Wav2Lip generator checkpoint: keys {'; '.join(parts)}.{_looks_like(have)}"
    )
