"""Ranking primitives: top-k with numpy, reciprocal-rank fusion, score scaling.

Dense scoring itself (exact, or projected then exact for large stores) is gateway/knowledge/dense.py.
"""

from __future__ import annotations

import numpy as np

#: RRF constant: the usual default (Cormack et al. 2009); larger flattens the head of each list.
RRF_K = 60
#: BM25 score at which the reported lexical score is 0.5 (a saturating map into [0, 1)).
LEXICAL_HALF = 8.0


def normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as a new float32 array."""
    out = np.array(matrix, dtype=np.float32)
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    out /= np.where(norms == 0, 1, norms)
    return out


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
