"""Dense retrieval of large stores (gateway/knowledge/dense.py): the projected-then-exact path
returns what the exact scan returns, is used only where the build-time calibration shows it
holds, and the search uses it with exact cosines for every fused candidate."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gateway.knowledge.config import KnowledgeConfig
from gateway.knowledge.dense import DenseIndex
from gateway.knowledge.index import IndexCache
from gateway.knowledge.ranking import normalise
from gateway.knowledge.search import Searcher

WIDTH = 256


def _embeddings(n: int, rng: np.random.Generator, topics: int = 300) -> np.ndarray:
    """Vectors shaped like text embeddings: principal components whose strength decays with their
    rank (a power law), a few hundred topics mixed in pairs, a shared direction (anisotropy), a
    per-chunk remainder in every direction; rotated so no axis is special."""
    spectrum = (1 + np.arange(WIDTH)) ** -0.5
    rotation = np.linalg.qr(rng.standard_normal((WIDTH, WIDTH)))[0]
    centres = rng.standard_normal((topics, WIDTH)) * spectrum
    mixture = rng.integers(0, topics, (n, 2))
    latent = centres[mixture[:, 0]] + 0.5 * centres[mixture[:, 1]]
    latent += 0.5 * rng.standard_normal((n, WIDTH)) * spectrum
    latent[:, 0] += 2.0
    return normalise(latent @ rotation.T)


def _queries(matrix: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Not rows of the store: blends of two chunks plus noise (what a question near them looks like)."""
    pairs = rng.integers(0, matrix.shape[0], (count, 2))
    noise = rng.standard_normal((count, WIDTH)) / np.sqrt(WIDTH)
    return normalise(matrix[pairs[:, 0]] + 0.5 * matrix[pairs[:, 1]] + 0.5 * noise)


def _overlap(index: DenseIndex, queries: np.ndarray, k: int) -> float:
    found = [len(set(index.top(q, k)[0].tolist()) & set(index.exact_top(q, k).tolist())) for q in queries]
    return float(np.mean(found)) / k


@pytest.fixture(scope="module")
def structured() -> tuple[np.ndarray, DenseIndex]:
    matrix = _embeddings(30_000, np.random.default_rng(3))
    return matrix, DenseIndex.build(matrix, k=50, approx_min_rows=20_000, min_recall=0.99)


def test_projection_returns_the_exact_top_results(structured: tuple[np.ndarray, DenseIndex]) -> None:
    matrix, index = structured
    assert index.approximate and index.calibration is not None
    assert index.projected is not None and index.projected.shape[1] <= WIDTH // 2  # reads ≤ half
    queries = _queries(matrix, np.random.default_rng(11), 60)
    assert _overlap(index, queries, 10) >= 0.98
    assert _overlap(index, queries, 50) >= 0.98
    for q in queries[:10]:
        rows, scores = index.top(q, 10)
        assert np.allclose(scores, matrix[rows] @ q, atol=1e-5)  # exact cosines, best first
        assert np.all(np.diff(scores) <= 1e-7)

    # The same index with a wrong projection (random directions instead of the principal ones)
    # misses most of them: the overlap above measures the projection, not the shortlist's size.
    assert index.basis is not None
    wrong = np.linalg.qr(np.random.default_rng(5).standard_normal((WIDTH, index.basis.shape[1])))[0]
    broken = DenseIndex(matrix, wrong.astype(np.float32), matrix @ wrong.astype(np.float32), index.shortlist)
    assert _overlap(broken, queries, 50) < 0.9


def test_a_file_mask_is_honoured(structured: tuple[np.ndarray, DenseIndex]) -> None:
    matrix, index = structured
    mask = np.random.default_rng(2).random(matrix.shape[0]) < 0.1
    for q in _queries(matrix, np.random.default_rng(12), 20):
        rows, _ = index.top(q, 10, mask)
        assert mask[rows].all() and rows.tolist() == index.exact_top(q, 10, mask).tolist()


def test_vectors_without_structure_stay_exact() -> None:
    """Random unit vectors have no principal directions: no projection keeps the recall."""
    matrix = normalise(np.random.default_rng(4).standard_normal((25_000, WIDTH)))
    index = DenseIndex.build(matrix, k=50, approx_min_rows=20_000, min_recall=0.99)
    assert not index.approximate and index.calibration is not None and index.calibration.dims is None
    small = DenseIndex.build(matrix[:5000], k=50, approx_min_rows=20_000, min_recall=0.99)
    assert not small.approximate and small.calibration is None  # below the threshold: not tried


class _Store:
    """The two reads the searcher and the index cache make, over in-memory rows."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    async def get_store(self, tenant: str, store_id: str) -> Any:
        return SimpleNamespace(version=1)

    async def store_version(self, store_id: str) -> int:
        return 1

    async def load_chunks(self, store_id: str) -> list[Any]:
        return self.rows

    async def store_files_meta(self, store_id: str) -> dict[str, Any]:
        return {"file-a": ("a.txt", {}), "file-b": ("b.txt", {})}


class _Encoders:
    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector

    async def query(self, text: str, parent: Any = None, space: str | None = None) -> tuple[str, np.ndarray]:
        return "m", self.vector

    def cosine_is_relevance(self, space: str | None) -> bool:
        return True  # a cloud model's space: its cosine is the hit's score

    async def rerank(self, *args: Any, **kw: Any) -> None:
        return None


def test_search_uses_the_projection_with_exact_cosines(structured: tuple[np.ndarray, DenseIndex]) -> None:
    matrix, _ = structured
    matrix = matrix[:4000]
    words = ["refund", "invoice", "shipping", "password", "warranty"]
    rows = [
        (i, "file-a" if i % 2 else "file-b", i, "", None, f"chunk {i}", f"{words[i % 5]} w{i % 97}",
         matrix[i].tobytes(), "m")
        for i in range(len(matrix))
    ]  # fmt: skip
    query = _queries(matrix, np.random.default_rng(13), 1)[0]

    def search(min_chunks: int, query_text: str = "refund w3", **options: Any) -> tuple[Any, Any]:
        config = KnowledgeConfig(dense_approx_min_chunks=min_chunks)
        store = _Store(rows)
        cache = IndexCache(store, 10**6, config)  # type: ignore[arg-type]
        searcher = Searcher(store, cache, _Encoders(query), config)  # type: ignore[arg-type]
        result = asyncio.run(
            searcher.search("t", ["vs"], query_text, max_results=10, rerank=False, **options)
        )
        return result, asyncio.run(cache.get("vs"))

    exact, exact_index = search(10**6)
    approx, approx_index = search(1000)
    assert not exact_index.dense.approximate and approx_index.dense.approximate
    assert approx.mode == exact.mode == "hybrid"
    assert [(h.chunk_id, h.score) for h in approx.hits] == [(h.chunk_id, h.score) for h in exact.hits]
    for hit in approx.hits:  # the reported score is the exact cosine (no rerank), BM25-only rows too
        assert hit.score == pytest.approx(max(0.0, float(matrix[hit.chunk_id] @ query)), abs=1e-5)
    nothing = {"type": "eq", "key": "lang", "value": "fr"}  # no file has it: the mask excludes every row
    assert search(1000, filters=nothing)[0].hits == []


def test_a_rebuild_reuses_the_calibration_until_the_store_has_changed_much(
    structured: tuple[np.ndarray, DenseIndex],
) -> None:
    """A file more or less keeps the directions and shortlist (no new calibration: a cheap
    rebuild) and the same results; a store grown by half is calibrated again."""
    matrix, index = structured
    rng = np.random.default_rng(21)
    grown = np.concatenate([matrix, _embeddings(3000, np.random.default_rng(3))[rng.permutation(3000)]])
    rebuilt = DenseIndex.build(grown, k=50, approx_min_rows=20_000, min_recall=0.99, previous=index)
    assert rebuilt.basis is index.basis and rebuilt.calibration is index.calibration
    assert rebuilt.projected is not None and rebuilt.projected.shape[0] == grown.shape[0]
    assert rebuilt.shortlist >= index.shortlist
    assert _overlap(rebuilt, _queries(grown, np.random.default_rng(14), 40), 10) >= 0.98
    doubled = np.concatenate([matrix, matrix[: matrix.shape[0] // 2]])
    again = DenseIndex.build(doubled, k=50, approx_min_rows=20_000, min_recall=0.99, previous=index)
    assert again.basis is not index.basis and again.calibrated_rows == doubled.shape[0]
