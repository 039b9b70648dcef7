"""Lexical retrieval that works for Chinese: jieba segmentation + BM25 on a sparse matrix.

Why jieba: SQLite FTS5 (unicode61 or trigram), PostgreSQL's default parser and bm25s's own
tokenizer all fail on Chinese two-character words such as 发票 (tested: reference rag.md §3.3-3.4);
jieba's search mode (``lcut_for_search``) yields the fine-grained words BM25 needs and ships its
dictionary in the package (no download).

Why our own BM25 over ``scipy.sparse`` rather than rank-bm25 or bm25s: rank-bm25 scores in a
Python loop over every document (too slow at 100k chunks) and is unmaintained since 2022; bm25s
would be a new dependency for what is one CSC matrix here (scipy is already a dependency). The
BM25 weight of every (chunk, term) pair is computed once at build time; a query then sums the
columns of its terms: one sparse column slice, a few milliseconds at 100k chunks (bench/knowledge.py).
"""

from __future__ import annotations

import functools
import itertools
import logging
import re

import numpy as np
from scipy import sparse

K1 = 1.2
B = 0.75
#: Function words that match everywhere and rank nothing (English and Chinese).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "is",
        "are",
        "be",
        "was",
        "were",
        "it",
        "this",
        "that",
        "with",
        "as",
        "at",
        "by",
        "from",
        "do",
        "does",
        "did",
        "i",
        "you",
        "we",
        "my",
        "your",
        "our",
        "can",
        "could",
        "how",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "would",
        "should",
        "me",
        "us",
        "的",
        "了",
        "是",
        "吗",
        "呢",
        "吧",
        "啊",
        "我",
        "你",
        "您",
        "我们",
        "在",
        "和",
        "与",
        "及",
        "或",
        "就",
        "都",
        "也",
        "要",
        "会",
        "能",
        "可以",
        "怎么",
        "怎样",
        "如何",
        "什么",
        "哪些",
        "一个",
        "这个",
        "那个",
        "有",
        "没有",
        "请问",
        "请",
        "问",
    ]
)
_WORD = re.compile(r"\w", re.UNICODE)


@functools.cache
def _jieba() -> object:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer


def tokenize(text: str) -> list[str]:
    """Lower-cased words for BM25: jieba's search-mode segmentation, minus punctuation and stop words."""
    words = _jieba().lcut_for_search(text.lower())  # type: ignore[attr-defined]
    return [w for w in (w.strip() for w in words) if w and _WORD.search(w) and w not in STOPWORDS]


class BM25Index:
    """BM25 over a fixed list of token lists. ``scores(terms)`` gives one score per document."""

    def __init__(self, documents: list[list[str]]) -> None:
        self.size = len(documents)
        # Bulk, not per term in Python (a 100k-chunk store has ~10M terms): columns in order of
        # first occurrence, each document's row repeated once per term.
        flat = list(itertools.chain.from_iterable(documents))
        vocabulary = {term: i for i, term in enumerate(dict.fromkeys(flat))}
        cols = np.fromiter(map(vocabulary.__getitem__, flat), dtype=np.int64, count=len(flat))
        del flat
        lengths = np.fromiter(map(len, documents), dtype=np.int64, count=self.size)
        rows = np.repeat(np.arange(self.size, dtype=np.int64), lengths)
        self.vocabulary = vocabulary
        shape = (self.size, max(1, len(vocabulary)))
        counts = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
        del rows, cols
        counts.sum_duplicates()
        lengths = lengths.astype(np.float32)
        average = float(lengths.mean()) if self.size and lengths.mean() > 0 else 1.0
        df = np.bincount(counts.indices, minlength=shape[1]).astype(np.float32)
        idf = np.log1p((self.size - df + 0.5) / (df + 0.5)).astype(np.float32)
        tf = counts.data
        norm = np.repeat(K1 * (1 - B + B * lengths / average), np.diff(counts.indptr))
        counts.data = (tf * (K1 + 1) / (tf + norm) * idf[counts.indices]).astype(np.float32)
        self.weights = counts.tocsc()
        self.rows = counts  # CSR: one chunk's terms at a time (support)
        self.idf = idf
        #: the idf a term unseen in this store would have: the rarest possible (df = 0)
        self.unseen_idf = float(np.log1p((self.size + 0.5) / 0.5))

    def support(self, terms: list[str], row: int) -> float:
        """The idf-weighted share of the query's distinct terms that occur in chunk ``row``.

        Why: a question whose words are mostly absent from the passage (or from the whole store:
        such words weigh the most) is probably not answered by it, whatever its rank; grounded chat
        declines below a threshold of this (gateway/knowledge/grounding.py)."""
        distinct = list(dict.fromkeys(terms))
        if not distinct or self.size == 0:
            return 0.0
        present = set(self.rows.indices[self.rows.indptr[row] : self.rows.indptr[row + 1]].tolist())
        total = found = 0.0
        for term in distinct:
            column = self.vocabulary.get(term)
            weight = self.unseen_idf if column is None else float(self.idf[column])
            total += weight
            if column is not None and column in present:
                found += weight
        return found / total if total else 0.0

    def scores(self, terms: list[str]) -> np.ndarray:
        columns = [self.vocabulary[t] for t in terms if t in self.vocabulary]
        if not columns or self.size == 0:
            return np.zeros(self.size, dtype=np.float32)
        # A repeated query term counts once per occurrence, as in BM25's sum over query terms.
        picked = self.weights[:, columns]
        return np.asarray(picked.sum(axis=1)).ravel()
