"""GET /v1/models: every routable name per capability, in OpenAI's list shape (checked with the SDK)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.routes.models import LISTED
from gateway.services import Services
from gateway.settings import Settings
from policies.routing import ProviderRegistry, Router
from tests.gateway import fake_providers
from tests.gateway.fake_providers import FakeGateway
from tests.servers import ServerThread, serving

# shared fixtures (a gateway over scripted providers, and an httpx client for it)
client = fake_providers.client
fake_gateway = fake_providers.fake_gateway


@pytest.fixture(scope="module")
def bare_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Default routes and no provider at all: no cloud key, no local models."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("bare"), log_json=False, dashscope_api_key=None)
    registry = ProviderRegistry()
    services = Services(settings=settings, registry=registry, router=Router(settings, registry))
    with serving(create_app(settings, services)) as server:
        yield server


def test_default_catalog_lists_every_model_and_alias(bare_gateway: ServerThread) -> None:
    r = httpx.get(f"{bare_gateway.url}/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert len(by_id) == len(body["data"])  # one entry per name
    routes = Settings(dashscope_api_key=None).routes
    # the client-facing capabilities (rerank serves the knowledge base only)
    for capability, route in ((c, routes[c]) for c in LISTED):
        expected = (
            {spec.split(":", 1)[1] for spec in route.chain} | set(route.aliases) | set(route.extra_models)
        )
        for name in expected:
            assert name in by_id, f"{name} ({capability}) missing"
            assert capability in by_id[name]["capabilities"]
    assert by_id["qwen-plus"]["owned_by"] == "bailian"
    assert by_id["smollm2"]["owned_by"] == "local"
    assert by_id["whisper-1"]["routes"]["asr"]["alias_of"] == "paraformer-realtime-v2"
    assert by_id["whisper-1"]["routes"]["asr"]["chain"][0] == "bailian:paraformer-realtime-v2"
    assert set(by_id["default"]["capabilities"]) == {"chat", "asr", "tts", "embedding"}
    assert by_id["e5-small"]["owned_by"] == "local" and by_id["e5-small"]["capabilities"] == ["embedding"]
    assert by_id["local"]["routes"]["embedding"] == {"alias_of": "e5-small", "chain": ["local:e5-small"]}
    assert "qwen3-rerank" not in by_id
    assert by_id["qwen-plus"]["routes"]["chat"]["chain"] == [
        "bailian:qwen-plus",
        "bailian:qwen-turbo",
        "local:smollm2",
    ]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])
    assert not any(m["available"] for m in body["data"])  # nothing is configured here


def test_no_provider_at_all_says_how_to_fix_it(bare_gateway: ServerThread) -> None:
    r = httpx.post(
        f"{bare_gateway.url}/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 503
    err = r.json()["error"]
    assert "No provider available for chat" in err["message"]
    assert "DASHSCOPE_API_KEY" in err["message"] and "local models" in err["message"]
    assert err["code"] == "no_provider"


def test_sdk_lists_and_retrieves(fake_gateway: FakeGateway) -> None:
    sdk = openai.OpenAI(base_url=f"{fake_gateway.url}/v1", api_key="unused", max_retries=0)
    ids = [m.id for m in sdk.models.list()]
    assert {"qwen-plus", "default", "paraformer-realtime-v2", "whisper-1", "cosyvoice-v2", "tts-1"} <= set(
        ids
    )
    model = sdk.models.retrieve("tts-1")
    assert model.id == "tts-1" and model.owned_by == "bailian"
    with pytest.raises(openai.NotFoundError) as info:
        sdk.models.retrieve("gpt-99")
    assert "gpt-99" in str(info.value) and "qwen-plus" in str(info.value)


def test_available_reflects_registered_providers(client: httpx.Client) -> None:
    data = client.get("/v1/models").json()["data"]
    # chat, ASR and TTS are registered there; no embedding provider is
    assert all(m["available"] for m in data if m["capabilities"] != ["embedding"])
    assert not any(m["available"] for m in data if m["capabilities"] == ["embedding"])
