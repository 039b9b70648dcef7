"""Knowledge base: ingestion pages/s, search latency at 10k and 100k chunks, recall@5/MRR.

    python -m bench.knowledge            # everything (about 5 minutes on 2 cores)
    python -m bench.knowledge --quick    # 10k chunks only

Method (printed with the figures):
1. Ingestion: ``gateway.knowledge.ingestion.prepare`` (parse, Qwen-token chunking, jieba) on a
   100-page PDF rendered from the fixture text, in process, 3 runs, best reported as pages/s;
   then the whole fixture (17 files) through the HTTP API of a gateway with no cloud key
   (files.create + vector_stores.files.create_and_poll), wall time per file.
2. Search: N chunks written straight into a fresh SQLite store through ``ChunkStore.replace_chunks``
   (two fixture passages and a distinct model number per chunk, each passage segmented by jieba
   once), then ``Searcher.search`` in process: 200 queries (fixture questions, repeated), the
   first one (index build) excluded. Vectors (512-d): ``--vectors sim`` (default) = the
   normalised sum of the simulator's text-embedding-v4 vectors of the chunk's two passages and
   of its model number, i.e. the space the query vectors come from; ``--vectors random`` =
   random unit vectors (no structure: the worst case, where dense search stays exact).
   Lexical = BM25 only (offline); hybrid = BM25 + dense cosine + RRF, the query vector taken
   from the Bailian simulator over HTTP (reported with and without that call: the simulator
   shares this process and its 2 cores); rerank is excluded (a network call whose time is
   Bailian's). Dense alone: the exact scan and the index's own path (projected then exact above
   ``knowledge.dense_approx_min_chunks``), per query, on the fixture questions' query vectors,
   with the overlap of their top 10 and top ``knowledge.candidates`` (the recall of the
   approximation against the exact search), raw and with ties counted (a row whose exact cosine
   equals the exact n-th one is as right as the row it replaced: chunks that share both
   passages differ only by their model number, which questions do not mention).
3. Quality: tests/fixtures/knowledge (83 questions) through the HTTP API, offline (no cloud key:
   BM25 fused with the local e5-small), offline-bm25 (no cloud key, knowledge.dense off) and cloud
   (simulator: text-embedding-v4 + qwen3-rerank as simulated, fused with BM25), and
   cloud again with the projected dense index forced on the fixture's small store
   (``dense_approx_min_chunks: 0``: kept only if its build-time calibration holds).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.fixtures.knowledge.corpus import DOCUMENTS
from tests.fixtures.knowledge.questions import QUESTIONS


def _passages() -> list[str]:
    out = []
    for content in DOCUMENTS.values():
        for item in content:
            heading, body = item
            out.append(" ".join(body) if isinstance(body, list) else f"{heading} {body}")
    return out


def _pdf(pages: int) -> bytes:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    passages = _passages()
    out = io.BytesIO()
    c = canvas.Canvas(out)
    for page in range(pages):
        c.setFont("STSong-Light", 10)
        y = 800
        for i in range(40):
            text = passages[(page * 40 + i) % len(passages)][:90]
            c.drawString(40, y, text)
            y -= 19
        c.showPage()
    c.save()
    return out.getvalue()


def bench_prepare(pages: int = 100) -> dict[str, float]:
    from gateway.knowledge.ingestion import prepare
    from gateway.knowledge.sections import Limits

    data = _pdf(pages)
    prepare(_pdf(1), "warm.pdf", Limits(), 400, 50)  # loads jieba and the tokenizer
    best = float("inf")
    chunks = 0
    for _ in range(3):
        started = time.perf_counter()
        prepared = prepare(data, "bench.pdf", Limits(), 400, 50)
        best = min(best, time.perf_counter() - started)
        chunks = len(prepared.chunks)
    return {"pages": pages, "seconds": best, "pages_per_s": pages / best, "chunks": chunks}


async def _fill(store: Any, store_id: str, n: int, dim: int, vectors: str) -> None:
    from gateway.knowledge.chunk_store import NewChunk
    from gateway.knowledge.lexical import tokenize
    from gateway.sim.embedding import vector as sim_vector

    rng = np.random.default_rng(7)
    pick = random.Random(7).choice  # the same chunks on every run
    passages = _passages()
    terms = {p: " ".join(tokenize(p)) for p in passages}  # segment each passage once, not per chunk
    embedded = {p: np.asarray(sim_vector(p, dim), dtype=np.float32) for p in passages}
    per_file = 5000
    for f in range(0, n, per_file):
        file_row = await store.create_file("bench", f"part-{f}.txt", "assistants", b"x")
        await store.attach("bench", store_id, file_row.id, {}, {})
        chunks = []
        for i in range(min(per_file, n - f)):
            a, b = pick(passages), pick(passages)
            text = f"{a} Model LH-{f + i} {b}"
            if vectors == "random":
                vector = rng.standard_normal(dim).astype(np.float32)
            else:
                model = np.asarray(sim_vector(f"Model LH-{f + i}", dim), dtype=np.float32)
                vector = embedded[a] + embedded[b] + 0.5 * model
            vector /= np.linalg.norm(vector)
            indexed = f"{terms[a]} model lh {f + i} {terms[b]}"
            chunks.append(NewChunk(i, "", None, text, indexed, 0, vector.tobytes()))
        await store.replace_chunks(store_id, file_row.id, 1, chunks, f"text-embedding-v4/{dim}", 1)


def _load() -> str:
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def bench_search(
    n: int, sim_url: str, sim_key: str, vectors: str = "sim", queries: int = 200
) -> dict[str, Any]:
    from gateway.db import create_engine, run_migrations, session_factory
    from gateway.knowledge.config import KnowledgeConfig
    from gateway.knowledge.service import KnowledgeService
    from gateway.services import build_services
    from gateway.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    settings = Settings(
        dashscope_api_key=sim_key,
        dashscope_http_base_url=f"{sim_url}/api/v1",
        data_dir=tmp,
        log_json=False,
        knowledge=KnowledgeConfig(rerank=False),
    )
    services = build_services(settings)
    for provider in (services.registry.get("embedding", "bailian"),):
        await provider.load()
    engine = create_engine(settings.resolved_database_url)
    await run_migrations(engine)
    knowledge = KnowledgeService(
        session_factory(engine), tmp, services.router, services.registry, settings.knowledge
    )
    store = await knowledge.store.create_store("bench", name="bench")
    started = time.perf_counter()
    await _fill(knowledge.store, store.id, n, settings.knowledge.embedding_dimension, vectors)
    fill_s = time.perf_counter() - started
    results: dict[str, Any] = {"chunks": n, "fill_s": fill_s}
    texts = [q for q, _, _ in QUESTIONS]
    embed_ms: list[float] = []
    query = knowledge.encoders.query

    async def timed_query(text: str, parent: Any = None, space: str | None = None) -> Any:
        started = time.perf_counter()
        try:
            return await query(text, parent, space)
        finally:
            embed_ms.append((time.perf_counter() - started) * 1000)

    knowledge.encoders.query = timed_query  # type: ignore[method-assign]  # to subtract the simulator's time
    for mode, dense in (("lexical", False), ("hybrid", True)):
        knowledge.config.dense = dense
        started = time.perf_counter()
        first = await knowledge.search("bench", [store.id], texts[0], max_results=5, rerank=False)
        build_s = time.perf_counter() - started
        times = []
        embed_ms.clear()
        for i in range(queries):
            started = time.perf_counter()
            result = await knowledge.search(
                "bench", [store.id], texts[i % len(texts)], max_results=5, rerank=False
            )
            times.append((time.perf_counter() - started) * 1000)
        assert result.mode == mode, (mode, result.mode, first.mode)
        own = [t - e for t, e in zip(times, embed_ms, strict=True)] if embed_ms else times
        results[mode] = {
            "p50_ms": _percentile(times, 50),
            "p95_ms": _percentile(times, 95),
            "own_p50_ms": _percentile(own, 50),
            "own_p95_ms": _percentile(own, 95),
            "first_s": build_s,
        }
    results["dense"] = await _dense_alone(knowledge, store.id, texts)
    await services.registry.get("embedding", "bailian").unload()
    await engine.dispose()
    return results


async def _dense_alone(knowledge: Any, store_id: str, texts: list[str]) -> dict[str, Any]:
    """The dense retriever alone on the fixture questions' query vectors: the exact scan against
    the index's own path (times and overlap of the top 10 and top ``candidates``)."""
    index = await knowledge.indexes.get(store_id)
    dense = index.dense
    k = knowledge.config.candidates
    exact_ms, own_ms, overlap_10, overlap_k, tied_10, tied_k = [], [], [], [], [], []
    for text in texts:
        found = await knowledge.encoders.query(text)
        assert found is not None
        vector = found[1]
        started = time.perf_counter()
        exact = dense.exact_top(vector, k)
        exact_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        own, own_scores = dense.top(vector, k)
        own_ms.append((time.perf_counter() - started) * 1000)
        exact_scores = dense.scores(vector, exact)
        for n, overlap, tied in ((10, overlap_10, tied_10), (k, overlap_k, tied_k)):
            top = exact[:n]
            if not top.size:
                continue
            overlap.append(len(set(own[:n].tolist()) & set(top.tolist())) / top.size)
            # with ties counted: a row as good as the exact n-th is as right as the one it replaced
            tied.append(float(np.sum(own_scores[:n] >= exact_scores[top.size - 1] - 1e-6)) / top.size)
    calibration = dense.calibration
    return {
        "approximate": dense.approximate,
        "dims": calibration.dims if calibration else None,
        "shortlist": dense.shortlist,
        "calibrated_recall": calibration.recall if calibration else None,
        "exact_p50_ms": _percentile(exact_ms, 50),
        "exact_p95_ms": _percentile(exact_ms, 95),
        "own_p50_ms": _percentile(own_ms, 50),
        "own_p95_ms": _percentile(own_ms, 95),
        "overlap_10": float(np.mean(overlap_10)),
        "overlap_k": float(np.mean(overlap_k)),
        "tied_10": float(np.mean(tied_10)),
        "tied_k": float(np.mean(tied_k)),
        "k": k,
    }


def bench_quality(sim_url: str, sim_key: str) -> dict[str, Any]:
    import openai

    from gateway.app import create_app
    from gateway.knowledge.config import KnowledgeConfig
    from gateway.settings import Settings
    from tests.fixtures.knowledge.evaluate import DOCS, evaluate, ingest
    from tests.servers import ServerThread

    out: dict[str, Any] = {}
    runs = (
        ("offline", None, KnowledgeConfig()),
        ("offline-bm25", None, KnowledgeConfig(dense=False)),
        ("cloud", sim_key, KnowledgeConfig()),
        ("cloud, projection forced", sim_key, KnowledgeConfig(dense_approx_min_chunks=0)),
    )
    for label, key, config in runs:
        settings = Settings(
            dashscope_api_key=key,
            dashscope_http_base_url=f"{sim_url}/api/v1",
            data_dir=Path(tempfile.mkdtemp(prefix="kb-quality-")),
            log_json=False,
            knowledge=config,
        )
        server = ServerThread(create_app(settings)).start()
        try:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
            started = time.perf_counter()
            store_id = ingest(client)
            ingest_s = time.perf_counter() - started
            scores = evaluate(client, store_id)
            services = server.server.config.app.state.services
            index = services.knowledge.indexes._indexes.get(store_id)
            dense = index.dense if index is not None else None
            out[label] = {
                "projection": (
                    f"{dense.calibration}"
                    if dense is not None and dense.calibration is not None
                    else "not tried"
                ),
                "recall_at_5": scores.recall_at_k,
                "mrr": scores.mrr,
                "modes": sorted(scores.modes),
                "ingest_s": ingest_s,
                "files": len(list(DOCS.iterdir())),
            }
        finally:
            server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10k chunks only")
    parser.add_argument(
        "--vectors", choices=("sim", "random"), default="sim", help="chunk vectors (see above)"
    )
    parser.add_argument(
        "--sizes", default="", help="chunk counts to search, e.g. 100000 (default 10k and 100k)"
    )
    parser.add_argument("--no-quality", action="store_true", help="skip ingestion and quality (search only)")
    args = parser.parse_args()
    from gateway.sim.app import create_app as sim_app
    from gateway.sim.config import SimConfig
    from tests.servers import ServerThread

    print(__doc__)
    key = "sk-bench"
    sim = ServerThread(sim_app(SimConfig(api_keys=[key]))).start()
    try:
        if not args.no_quality:
            prep = bench_prepare()
            print(
                f"ingestion (parse + chunk + jieba, in process): {prep['pages']} PDF pages in {prep['seconds']:.2f} s"
                f" = {prep['pages_per_s']:.0f} pages/s ({prep['chunks']} chunks)"
            )
            quality = bench_quality(sim.url, key)
            for label, q in quality.items():
                print(
                    f"quality {label}: recall@5 {q['recall_at_5']:.3f}, MRR {q['mrr']:.3f} (mode {q['modes']}); "
                    f"fixture ingested through the API in {q['ingest_s']:.1f} s ({q['files']} files); "
                    f"dense projection: {q['projection']}"
                )
        sizes = [int(x) for x in args.sizes.split(",") if x] or (
            [10_000] if args.quick else [10_000, 100_000]
        )
        for n in sizes:
            print(f"load average before the {n}-chunk search: {_load()}")
            r = asyncio.run(bench_search(n, sim.url, key, args.vectors))
            for mode in ("lexical", "hybrid"):
                m = r[mode]
                print(
                    f"search {n} chunks ({args.vectors} vectors), {mode}: P50 {m['p50_ms']:.1f} ms, P95 "
                    f"{m['p95_ms']:.1f} ms; without the query-embedding call P50 {m['own_p50_ms']:.1f} ms, "
                    f"P95 {m['own_p95_ms']:.1f} ms (first search incl. index build {m['first_s']:.1f} s; "
                    f"rows written in {r['fill_s']:.0f} s)"
                )
            d = r["dense"]
            print(
                f"dense alone, {n} chunks: exact P50 {d['exact_p50_ms']:.1f} / P95 {d['exact_p95_ms']:.1f} ms; "
                f"index path ({'projected ' + str(d['dims']) + '-d, shortlist ' + str(d['shortlist']) if d['approximate'] else 'exact'}"
                f"; calibrated recall {d['calibrated_recall']}) P50 {d['own_p50_ms']:.1f} / P95 {d['own_p95_ms']:.1f} ms; "
                f"overlap with the exact search: top 10 {d['overlap_10']:.3f}, top {d['k']} {d['overlap_k']:.3f} "
                f"(ties counted: {d['tied_10']:.3f}, {d['tied_k']:.3f})"
            )
            print(f"load average after: {_load()}")
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
