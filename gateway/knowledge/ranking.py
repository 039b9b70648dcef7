"""Ranking primitives: dense cosine top-k with numpy, reciprocal-rank fusion, score scaling.

Why exact search with numpy: sqlite-vec cannot load in the venv's Python and pgvector is not
packaged for this PostgreSQL (reference rag.md §3.4-3.5); one float32 matrix-vector product over a
store's normalised vectors is exact, needs no extension, and stays within the 50 ms P95 target
at 100k chunks of 512 dimensions on this 2-core machine (bench/knowledge.py).
"""

from __future__ import annotations

import numpy as np

#: Above this many chunks the dense product runs in a worker thread (it releases the GIL), so a
#: 100k-chunk store (about 50 ms) does not stall the event loop for other requests.
DENSE_OFFLOAD_ROWS = 20_000
#: RRF constant: the usual default (Cormack et al. 2009); larger flattens the head of each list.
RRF_K = 60
#: BM25 score at which the reported lexical score is 0.5 (a saturating map into [0, 1)).
LEXICAL_HALF = 8.0


def normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)


def dense_scores(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Cosine of every row with ``vector`` (both normalised), single-threaded on purpose.

    ``matrix @ vector`` goes to OpenBLAS, whose threads spin against each other and against the
    gateway's own on a busy 2-core host: 20 ms for 10k × 512 measured under load, against 2.4 ms
    for this einsum (one thread; the product is memory-bound, so threads gain little anyway)."""
    return np.einsum("ij,j->i", matrix, vector)


def top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` best scores (best first); masked-out and non-positive ones excluded."""
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    k = min(k, scores.size)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    part = part[np.argsort(-scores[part], kind="stable")]
    return part[np.isfinite(scores[part]) & (scores[part] > 0)]


def rrf(rankings: list[np.ndarray], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of several best-first index lists → (index, fused score), best first."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, index in enumerate(ranking.tolist()):
            fused[index] = fused.get(index, 0.0) + 1.0 / (k + rank + 1)
    return sorted(fused.items(), key=lambda item: -item[1])


def lexical_score(bm25: float) -> float:
    """BM25 is unbounded; clients and thresholds want [0, 1): ``s / (s + LEXICAL_HALF)``."""
    return float(bm25 / (bm25 + LEXICAL_HALF)) if bm25 > 0 else 0.0
