"""Dense retrieval over one store's vectors: exact when small, projected-then-exact when large.

Why: the exact cosine over every chunk reads the whole float32 matrix per query (100k × 512 =
205 MB): memory-bound, about 50 ms on one core of this machine, far more under load. Above
``approx_min_rows`` chunks the index also keeps each vector projected on the ``d`` principal
directions of the store's own vectors (``d`` of 32..256, found at build time): a query is
scored against those first (n × d floats: a quarter to a sixteenth of the bytes), the best
``shortlist`` chunks are re-scored exactly with their full vectors, and the top of that exact
ranking is returned. Scores are therefore always exact cosines; only a chunk that the projection
ranks below the shortlist can be missed.

How much may be missed is measured, not assumed: at build time ``calibrate`` ranks pseudo-queries
(chunks of the store, themselves excluded, and chunks blurred with random noise of their own
size, about 45° away) both ways and keeps the cheapest (d, shortlist) whose recall of the exact
top ``k`` is at least ``min_recall``. Vectors with no low-dimensional structure (e.g. random
ones) fail every setting and stay exact: the approximation is used only where it is shown to
hold. Real text embeddings are strongly anisotropic, which is what the projection relies on.

No new dependency: numpy only (an ANN library such as faiss or hnswlib would add a native wheel
and a second copy of the vectors for what one extra n × d matrix does here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.knowledge.ranking import top_k

#: Projection widths tried at build time, cheapest first (each must keep the recall).
PROJECTION_DIMS = (32, 48, 64, 96, 128, 192, 256)
#: Shortlists tried, as multiples of ``k`` (the candidates a retriever gives to the fusion).
SHORTLIST_FACTORS = (4, 8, 16, 32, 64)
#: Rows of the store used to find the principal directions (the second-moment matrix of a sample).
PCA_SAMPLE = 8192
#: A projection is kept only if it reads at most this share of what the exact scan reads.
MAX_COST_SHARE = 0.5
#: A rebuilt index keeps the previous directions and calibration until the store has grown or
#: shrunk by more than this share of the size they were measured at.
RECALIBRATE_GROWTH = 0.2
#: Pseudo-queries of the calibration: half chunks, half blurred chunks.
CALIBRATION_QUERIES = 96


def dense_scores(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector``, single-threaded on purpose.

    ``matrix @ vector`` goes to OpenBLAS, whose threads spin against each other and against the
    gateway's own on a busy 2-core host: 20 ms for 10k × 512 measured under load, against 2.4 ms
    for this einsum (one thread; the product is memory-bound, so threads gain little anyway)."""
    return np.einsum("ij,j->i", matrix, vector)


@dataclass(frozen=True, slots=True)
class Calibration:
    dims: int | None  # None: no setting kept the recall, the index is exact
    shortlist: int
    recall: float  # mean recall of the exact top k over the pseudo-queries (kept setting, or best seen)
    queries: int


@dataclass(slots=True)
class DenseIndex:
    matrix: np.ndarray  # n × D, rows L2-normalised float32
    basis: np.ndarray | None = None  # D × d principal directions (None: exact)
    projected: np.ndarray | None = None  # n × d, matrix @ basis
    shortlist: int = 0
    calibration: Calibration | None = None
    calibrated_rows: int = 0  # the store's size when ``calibration`` was measured

    @property
    def size(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def approximate(self) -> bool:
        return self.projected is not None

    @property
    def work(self) -> int:
        """Floats a query reads: the projection and the shortlist's rows, or every vector."""
        if self.projected is None:
            return int(self.matrix.size)
        return int(self.projected.size) + self.shortlist * int(self.matrix.shape[1])

    @classmethod
    def build(
        cls,
        matrix: np.ndarray,
        k: int,
        approx_min_rows: int,
        min_recall: float,
        seed: int = 0,
        previous: DenseIndex | None = None,
    ) -> DenseIndex:
        """The index of normalised ``matrix`` (CPU-bound: run in a thread). ``k``: how many of the
        exact best rows a query must get back (the search's candidates per retriever).
        ``previous``: the store's index before this change; its directions and calibration are
        kept while the store stays within ``RECALIBRATE_GROWTH`` of the size they were measured
        at (a file more or less does not change what a store's vectors look like)."""
        index = cls(matrix)
        if (
            matrix.shape[0] < max(approx_min_rows, 1)
            or matrix.shape[1] * MAX_COST_SHARE <= PROJECTION_DIMS[0]
        ):
            return index
        if previous is not None and previous.reusable_for(matrix):
            return previous.rebased(matrix)
        rng = np.random.default_rng(seed)
        # only widths that read less than MAX_COST_SHARE of the exact scan can be kept
        widest = max(d for d in PROJECTION_DIMS if d < matrix.shape[1] * MAX_COST_SHARE)
        basis = principal_directions(matrix, widest, rng)
        projected = matrix @ basis  # build time: BLAS threads are welcome here
        calibration = calibrate(matrix, basis, projected, k, min_recall, rng)
        index.calibration, index.calibrated_rows = calibration, int(matrix.shape[0])
        if calibration.dims is not None:
            index.basis = np.ascontiguousarray(basis[:, : calibration.dims])
            index.projected = np.ascontiguousarray(projected[:, : calibration.dims])
            index.shortlist = calibration.shortlist
        return index

    def reusable_for(self, matrix: np.ndarray) -> bool:
        if self.calibration is None or self.matrix.shape[1] != matrix.shape[1]:
            return False
        return abs(matrix.shape[0] - self.calibrated_rows) <= RECALIBRATE_GROWTH * self.calibrated_rows

    def rebased(self, matrix: np.ndarray) -> DenseIndex:
        """This index's directions and calibration over ``matrix`` (the shortlist scaled with it)."""
        index = DenseIndex(matrix, calibration=self.calibration, calibrated_rows=self.calibrated_rows)
        if self.basis is not None:
            index.basis = self.basis
            index.projected = matrix @ self.basis
            scaled = round(self.shortlist * matrix.shape[0] / max(1, self.calibrated_rows))
            index.shortlist = min(int(matrix.shape[0]), max(self.shortlist, scaled))
        return index

    def scores(self, vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact cosines of ``rows`` (any order) with the normalised query ``vector``."""
        if rows.size == 0:
            return np.zeros(0, dtype=np.float32)
        return dense_scores(self.matrix[rows], vector)

    def exact_top(self, vector: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
        return top_k(dense_scores(self.matrix, vector), k, mask)

    def top(
        self, vector: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows (best first, non-positive cosines dropped) and their exact cosines."""
        if self.projected is None or self.basis is None:
            rows = self.exact_top(vector, k, mask)
            return rows, self.scores(vector, rows)
        rough = dense_scores(self.projected, (vector @ self.basis).astype(np.float32))
        shortlist = top_k_any(rough, self.shortlist, mask)
        shortlist.sort()  # gather rows in memory order
        exact = self.scores(vector, shortlist)
        best = top_k(exact, k)
        return shortlist[best], exact[best]


def top_k_any(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores in no particular order (masked-out rows excluded)."""
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    k = min(k, scores.size)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    return part[np.isfinite(scores[part])]


def principal_directions(matrix: np.ndarray, dims: int, rng: np.random.Generator) -> np.ndarray:
    """D × dims: the top eigenvectors of the rows' (uncentred) second-moment matrix, largest first.

    Uncentred because the score is a plain inner product: the common direction that makes text
    embeddings anisotropic is part of every score, and is kept as the first direction."""
    n = matrix.shape[0]
    sample = matrix[np.sort(rng.choice(n, PCA_SAMPLE, replace=False))] if n > PCA_SAMPLE else matrix
    second = (sample.T @ sample).astype(np.float64) / sample.shape[0]  # float32 product, then eigh in 64
    values, vectors = np.linalg.eigh(second)
    order = np.argsort(values)[::-1][:dims]
    return np.ascontiguousarray(vectors[:, order].astype(np.float32))


def calibrate(
    matrix: np.ndarray,
    basis: np.ndarray,
    projected: np.ndarray,
    k: int,
    min_recall: float,
    rng: np.random.Generator,
) -> Calibration:
    """The cheapest (dims, shortlist) whose mean recall of the exact top ``k`` over pseudo-queries
    is at least ``min_recall``; ``dims`` None when none is (the index then stays exact)."""
    n, width = matrix.shape
    half = CALIBRATION_QUERIES // 2
    picked = rng.choice(n, 2 * half, replace=n < 2 * half)
    noise = (rng.standard_normal((half, width)) / np.sqrt(width)).astype(np.float32)
    queries = np.concatenate([matrix[picked[:half]], matrix[picked[half:]] + noise]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)  # float32 throughout: a float64 query
    # would make numpy copy the whole matrix to float64 for the product
    k = min(k, n - 1)
    exact = queries @ matrix.T
    exact[np.arange(half), picked[:half]] = -np.inf  # a chunk is not its own neighbour
    truth = [set(np.argpartition(-row, k - 1)[:k].tolist()) for row in exact]
    del exact
    shortlists = sorted({min(n, f * k) for f in SHORTLIST_FACTORS})
    best = Calibration(None, 0, 0.0, len(queries))
    cost_best = n * width * MAX_COST_SHARE  # the exact scan's reads, discounted: must be worth it
    rough_queries = queries @ basis
    for dims in (d for d in PROJECTION_DIMS if d <= basis.shape[1]):
        if n * dims >= cost_best:
            break  # wider projections only cost more
        rough = rough_queries[:, :dims] @ projected[:, :dims].T
        rough[np.arange(half), picked[:half]] = -np.inf
        widest = shortlists[-1]
        if widest < n:
            part = np.argpartition(-rough, widest - 1, axis=1)[:, :widest]
        else:
            part = np.broadcast_to(np.arange(n), rough.shape)
        order = np.take_along_axis(part, np.argsort(-np.take_along_axis(rough, part, axis=1), axis=1), axis=1)
        del rough, part
        for shortlist in shortlists:
            found = [len(t.intersection(order[q, :shortlist].tolist())) for q, t in enumerate(truth)]
            recall = float(np.mean(found)) / k
            cost = n * dims + 2 * shortlist * width  # floats read: the projection, then the rows
            if recall >= min_recall:
                if cost < cost_best:
                    best, cost_best = Calibration(dims, shortlist, recall, len(queries)), cost
                break  # a longer shortlist at this width only costs more
            if best.dims is None and recall > best.recall:
                best = Calibration(None, 0, recall, len(queries))
    return best
