"""``POST /v1/embeddings`` through the openai SDK: e5 offline, Bailian (simulator) online, no
fallback across models, and clear 4xx for what cannot be served."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import SimHandle
from tests.servers import ServerThread

pytestmark = pytest.mark.slow  # loads the local e5 model

TEXTS = ["怎么申请电子发票？", "Standard delivery takes 3 to 5 working days."]


def _sdk(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture
def offline(gateway_settings: Callable[..., Any], run_gateway: Callable[..., ServerThread]) -> ServerThread:
    settings = gateway_settings(
        dashscope_api_key=None,
        dashscope_http_base_url="http://192.0.2.1:9/api/v1",  # nowhere: nothing may reach the network
    )
    return run_gateway(settings)


def test_e5_offline_through_the_sdk(offline: ServerThread, sim: SimHandle) -> None:
    client = _sdk(offline)
    raw = client.embeddings.with_raw_response.create(model="e5-small", input=TEXTS)  # SDK asks for base64
    assert raw.headers["x-talkgate-provider"] == "local:e5-small"
    reply = raw.parse()
    assert reply.model == "e5-small" and [d.index for d in reply.data] == [0, 1]
    vectors = np.asarray([d.embedding for d in reply.data])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 10
    # float encoding gives the same numbers; the `local` alias is the same model
    floats = client.embeddings.create(model="local", input=TEXTS, encoding_format="float")
    assert floats.model == "e5-small"
    assert np.allclose(np.asarray([d.embedding for d in floats.data]), vectors, atol=1e-6)
    # the query role (extension field) embeds differently from the default document role
    query = client.embeddings.create(model="e5-small", input=TEXTS[0], extra_body={"text_type": "query"})
    assert float(np.dot(query.data[0].embedding, vectors[0])) < 0.999
    assert client.embeddings.create(model="e5-small", input=TEXTS[0], dimensions=384).data
    assert sim.requests() == []


def test_what_cannot_be_served_is_refused_clearly(offline: ServerThread) -> None:
    client = _sdk(offline)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="e5-small", input="hello", dimensions=256)
    error = caught.value.body
    assert error["param"] == "dimensions" and "384" in error["message"]  # type: ignore[index]
    for bad in ([1, 2, 3], [[1, 2]], "", ["ok", " "], []):
        r = httpx.post(f"{offline.url}/v1/embeddings", json={"model": "e5-small", "input": bad}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "input", (bad, r.text)
    r = httpx.post(
        f"{offline.url}/v1/embeddings", json={"model": "e5-small", "input": ["x"] * 2049}, timeout=30
    )
    assert r.status_code == 400 and "2048" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-large", input="hello")
    # the cloud model is not configured here, and e5 is another space: no fallback, a clear 503
    with pytest.raises(openai.APIStatusError) as unavailable:
        client.embeddings.create(model="text-embedding-v4", input="hello")
    assert unavailable.value.status_code == 503
    assert "DASHSCOPE_API_KEY" in unavailable.value.message


def test_cloud_model_online_never_falls_back_to_e5(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., ServerThread], sim: SimHandle
) -> None:
    client = _sdk(run_gateway(gateway_settings(retry={"attempts": 1})))
    raw = client.embeddings.with_raw_response.create(model="default", input=TEXTS, dimensions=512)
    reply = raw.parse()
    assert raw.headers["x-talkgate-provider"] == "bailian:text-embedding-v4"
    assert reply.model == "text-embedding-v4" and len(reply.data[0].embedding) == 512
    assert [r["body"]["parameters"]["dimension"] for r in sim.requests("embedding")] == [512]
    sim.fault(service="embedding", status=503, code="ServiceUnavailable")
    with pytest.raises(openai.APIStatusError) as caught:
        client.embeddings.create(model="text-embedding-v4", input=TEXTS)
    assert caught.value.status_code == 503 and "local:e5-small" in caught.value.message
