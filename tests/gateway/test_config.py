"""Configuration checks that must hold at start-up: partial route configs, chain presence, auth mode."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from gateway.settings import Settings, describe_settings_error
from tests.conftest import SimHandle
from tests.servers import ServerThread
from tests.sounds import tone_wav


def test_yaml_with_only_a_chat_route_keeps_the_default_asr_and_tts_routes(
    tmp_path: Path,
    gateway_settings: Callable[..., Any],
    run_gateway: Callable[..., ServerThread],
    sim: SimHandle,
) -> None:
    config = tmp_path / "partial.yaml"
    config.write_text('routes: {chat: {chain: ["bailian:qwen-turbo"]}}\n', encoding="utf-8")
    settings = gateway_settings(config=config)
    assert settings.routes["chat"].chain == ["bailian:qwen-turbo"]
    assert settings.routes["tts"].chain == ["bailian:cosyvoice-v2", "local:piper-joe"]
    assert settings.routes["asr"].chain == ["bailian:paraformer-realtime-v2", "local:whisper-tiny.en"]
    gateway = run_gateway(settings)

    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "qwen-turbo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
        )
        assert chat.status_code == 200, chat.text
        assert chat.headers["x-talkgate-provider"] == "bailian:qwen-turbo"

        speech = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "hello there"})
        assert speech.status_code == 200, speech.text
        assert speech.headers["x-talkgate-provider"] == "bailian:cosyvoice-v2"
        assert len(speech.content) > 1000

        text = client.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("tone.wav", tone_wav(1.0), "audio/wav")},
        )
        assert text.status_code == 200, text.text
        assert text.headers["x-talkgate-provider"] == "bailian:paraformer-realtime-v2"

        models = {m["id"] for m in client.get("/v1/models").json()["data"]}
        assert {"tts-1", "whisper-1", "qwen-turbo"} <= models

        # The inherited alias "default" follows the new chain (it named qwen-plus before).
        default = client.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
        )
        assert default.status_code == 200, default.text
        assert default.headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert settings.routes["chat"].aliases == {"default": "qwen-turbo", "fast": "qwen-turbo"}


def test_a_route_config_keeps_its_own_aliases(tmp_path: Path) -> None:
    config = tmp_path / "aliases.yaml"
    config.write_text(
        'routes: {chat: {chain: ["bailian:qwen-max"], aliases: {best: qwen-max}}}\n', encoding="utf-8"
    )
    settings = Settings(config=config, data_dir=tmp_path / "data")
    assert settings.routes["chat"].aliases == {"best": "qwen-max"}
    assert settings.routes["chat"].extra_models == [
        "qwen-max",
        "qwen-vl-max",
        "qwen-vl-plus",
    ]  # kept from the default


@pytest.mark.parametrize("key", ["change-me", "short-key", "   "])
def test_weak_admin_keys_are_refused_at_start_up(tmp_path: Path, key: str) -> None:
    if not key.strip():
        # Blank means "no admin key" (admin API disabled), not an error.
        assert Settings(admin_key=key.strip(), data_dir=tmp_path).admin_key is None
        return
    with pytest.raises(ValidationError) as info:
        Settings(admin_key=key, data_dir=tmp_path)
    message = describe_settings_error(info.value)  # what `talkgate serve` prints
    assert "admin_key" in message and "at least 16 characters" in message
    assert key not in message  # the rejected secret is not echoed


@pytest.mark.parametrize("capability", ["chat", "asr", "tts"])
def test_an_empty_chain_is_refused_at_start_up_naming_the_capability(tmp_path: Path, capability: str) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text(f"routes: {{{capability}: {{chain: []}}}}\n", encoding="utf-8")
    with pytest.raises(ValidationError) as info:
        Settings(config=config, data_dir=tmp_path / "data")
    assert f"routes.{capability}.chain is empty" in str(info.value)


def serve_with(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``talkgate serve`` with this YAML config (it is expected to stop at start-up)."""
    config = tmp_path / "config.yaml"
    config.write_text(config_text, encoding="utf-8")
    env = {**os.environ, "TALKGATE_CONFIG": str(config), "TALKGATE_DATA_DIR": str(tmp_path / "d")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", "9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_with_an_empty_chain_exits_with_the_reason(tmp_path: Path) -> None:
    done = serve_with("routes: {tts: {chain: []}}\n", tmp_path)
    assert done.returncode == 2
    assert "invalid configuration" in done.stderr
    assert "routes.tts.chain is empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_auth_mode_is_refused_naming_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALKGATE_AUTH", "bogus")
    with pytest.raises(ValidationError) as info:
        Settings(data_dir=tmp_path / "data")
    assert "TALKGATE_AUTH must be one of auto, keys, none" in str(info.value)
    assert "'bogus'" in str(info.value)
    for mode in ("auto", "keys", "none"):
        monkeypatch.setenv("TALKGATE_AUTH", mode)
        assert Settings(data_dir=tmp_path / "data").auth == mode


def test_unknown_keys_in_the_yaml_config_stop_start_up_naming_each_with_a_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "typos.yaml"
    config.write_text(
        "saas: {usage_flush_intervl_s: 5}\n"
        'routes: {chat: {chian: ["bailian:qwen-plus"]}}\n'
        "local: {llm: {smollm2: {n_thread: 2}}}\n"
        "retry: {attempt: 2}\n"
        "no_such_section: 1\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError) as info:
        Settings(config=config, data_dir=tmp_path / "data")
    message = str(info.value)
    assert str(config) in message
    for problem in (
        "saas.usage_flush_intervl_s (did you mean 'usage_flush_interval_s'?)",
        "routes.chat.chian (did you mean 'chain'?)",
        "local.llm.smollm2.n_thread (did you mean 'n_threads'?)",
        "retry.attempt (did you mean 'attempts'?)",
        "no_such_section",
    ):
        assert problem in message


def test_every_documented_kind_of_key_is_accepted(tmp_path: Path) -> None:
    config = tmp_path / "full.yaml"
    config.write_text(
        "DASHSCOPE_API_KEY: sk-test\n"  # the SDK's variable name, as an alias
        "max_tokens_ceiling: 2048\n"
        "saas: {usage_flush_interval_s: 2}\n"
        'routes: {chat: {chain: ["bailian:qwen-plus"], aliases: {fast: qwen-plus}}}\n'
        "local: {llm: {mine: {n_threads: 1}}, tts: {piper-joe: {voices: [joe]}}}\n"
        "voices: {local: {'*': joe}}\n"
        "retry: {attempts: 2}\n"
        "breaker: {min_calls: 5}\n"
        "experiments: {anything: {goes: here}}\n",
        encoding="utf-8",
    )
    settings = Settings(config=config, data_dir=tmp_path / "data")
    assert settings.dashscope_api_key == "sk-test"
    assert settings.saas.usage_flush_interval_s == 2
    assert settings.local.llm["mine"].n_threads == 1
    assert settings.retry.attempts == 2 and settings.breaker.min_calls == 5


def test_serve_with_an_unknown_key_exits_with_the_reason(tmp_path: Path) -> None:
    done = serve_with("cache: {ttl: 60}\n", tmp_path)
    assert done.returncode == 2
    assert "unknown setting(s): cache.ttl (did you mean 'ttl_s'?)" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_metrics_token_must_be_a_real_secret() -> None:
    from pydantic import ValidationError

    from gateway.settings import Settings

    for weak in ("", "short", "change-me"):
        with pytest.raises(ValidationError, match="TALKGATE_METRICS_TOKEN"):
            Settings(metrics_token=weak)
    assert Settings(metrics_token="a" * 32).metrics_token == "a" * 32
