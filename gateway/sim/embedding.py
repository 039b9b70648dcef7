"""``POST /api/v1/services/embeddings/text-embedding/text-embedding`` as Bailian answers it.

Vectors are deterministic and make similar texts close: each text's character unigrams and
bigrams (CJK) and words and character trigrams (other scripts) are feature-hashed into the
requested dimension with signed weights, then L2-normalised, so texts sharing words have a high
cosine and unrelated texts are near orthogonal. Limits and errors follow reference rag.md §1.1/§1.4:
at most 10 texts per call for v3/v4 and 25 for v1/v2 (400 InvalidParameter "batch size is invalid"),
each text 1..8,192 tokens ("Range of input length"), dimensions from the model's list.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from gateway.dashscope.bodies import json_response
from gateway.dashscope.errors import native_error
from gateway.sim.admission import admit
from gateway.sim.state import SimState
from gateway.sim.text import count_tokens

PATH = "/api/v1/services/embeddings/text-embedding/text-embedding"
#: model → (dimensions offered, default, texts per call)
MODELS: dict[str, tuple[tuple[int, ...], int, int]] = {
    "text-embedding-v4": ((2048, 1536, 1024, 768, 512, 256, 128, 64), 1024, 10),
    "text-embedding-v3": ((1024, 768, 512), 1024, 10),
    "text-embedding-v2": ((1536,), 1536, 25),
    "text-embedding-v1": ((1536,), 1536, 25),
}
MAX_TOKENS_PER_TEXT = 8192
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def features(text: str) -> dict[str, float]:
    """Weighted string features of a text (what makes two texts "similar" in this simulator)."""
    text = text.lower()
    found: dict[str, float] = {}
    for run in _CJK.findall(text):
        for ch in run:
            found["u:" + ch] = found.get("u:" + ch, 0.0) + 0.5
        for a, b in itertools.pairwise(run):
            found["b:" + a + b] = found.get("b:" + a + b, 0.0) + 1.0
    for word in _WORD.findall(_CJK.sub(" ", text)):
        found["w:" + word] = found.get("w:" + word, 0.0) + 1.0
        padded = f"#{word}#"
        for i in range(len(padded) - 2):
            key = "t:" + padded[i : i + 3]
            found[key] = found.get(key, 0.0) + 0.3
    return found


def vector(text: str, dimension: int) -> list[float]:
    out = np.zeros(dimension, dtype=np.float64)
    for feature, weight in features(text).items():
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dimension
        sign = 1.0 if digest[4] & 1 else -1.0
        out[bucket] += sign * (1.0 + math.log(weight + 1.0))
    norm = float(np.linalg.norm(out))
    return (out / norm if norm else out).round(6).tolist()


async def text_embedding(request: Request) -> Response:
    state: SimState = request.app.state.sim
    call = await admit(request, state, "embedding", lambda m: m in MODELS, native_error)
    if isinstance(call, Response):
        return call
    dims, default_dim, rows = MODELS[call.model]

    def bad(message: str, code: str = "InvalidParameter") -> Response:
        call.record["status"] = 400
        return native_error(400, code, message, call.request_id)

    data = call.body.get("input")
    texts = data.get("texts") if isinstance(data, dict) else None
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        return bad('Required parameter "input.texts" missing from request.', "BadRequest.EmptyInput")
    if len(texts) > rows:
        return bad(
            "<400> InternalError.Algo.InvalidParameter: Value error, batch size is invalid, "
            f"it should not be larger than {rows}.: input.contents"
        )
    params = call.body.get("parameters") or {}
    dimension = params.get("dimension", default_dim)
    if dimension not in dims:
        return bad(f"Value error, dimension should be one of {list(dims)}.: parameters.dimension")
    if params.get("text_type", "document") not in ("query", "document"):
        return bad("Value error, text_type should be query or document.: parameters.text_type")
    total = 0
    for text in texts:
        n = count_tokens(text) if isinstance(text, str) else 0
        if not isinstance(text, str) or not 1 <= n <= MAX_TOKENS_PER_TEXT:
            return bad(f"Range of input length should be [1, {MAX_TOKENS_PER_TEXT}]")
        total += n
    embeddings = [{"text_index": i, "embedding": vector(t, dimension)} for i, t in enumerate(texts)]
    body = {
        "output": {"embeddings": embeddings},
        "usage": {"total_tokens": total},
        "request_id": call.request_id,
    }
    return json_response(body)
