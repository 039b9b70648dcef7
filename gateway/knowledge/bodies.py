"""Request bodies of the files and vector-store routes, as the openai SDK sends them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.knowledge import filters as attribute_filters

#: OpenAI's limits: 16 metadata pairs / attributes, keys ≤ 64 and string values ≤ 512 characters.
MAX_PAIRS = 16


def _check_pairs(value: dict[str, Any] | None, what: str, scalars: bool) -> dict[str, Any] | None:
    if value is None:
        return value
    if len(value) > MAX_PAIRS:
        raise ValueError(f"{what} may have at most {MAX_PAIRS} keys")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"{what} keys are at most 64 characters")
        if scalars and not isinstance(item, str | int | float | bool):
            raise ValueError(f"{what} values must be strings, numbers or booleans")
        if not scalars and not isinstance(item, str):
            raise ValueError(f"{what} values must be strings")
        if isinstance(item, str) and len(item) > 512:
            raise ValueError(f"{what} string values are at most 512 characters")
    return value


class StaticChunking(BaseModel):
    max_chunk_size_tokens: int = Field(ge=100, le=4096)
    chunk_overlap_tokens: int = Field(ge=0)

    @model_validator(mode="after")
    def _overlap_at_most_half(self) -> StaticChunking:
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens")
        return self


class ChunkingStrategy(BaseModel):
    type: Literal["auto", "static"]
    static: StaticChunking | None = None

    @model_validator(mode="after")
    def _static_needs_sizes(self) -> ChunkingStrategy:
        if self.type == "static" and self.static is None:
            raise ValueError("a static chunking_strategy needs 'static' sizes")
        return self


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateStore(_Body):
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    file_ids: list[str] = Field(default_factory=list, max_length=500)
    metadata: dict[str, Any] | None = None
    expires_after: dict[str, Any] | None = None
    chunking_strategy: ChunkingStrategy | None = None

    _metadata = field_validator("metadata")(lambda v: _check_pairs(v, "metadata", scalars=False))


class UpdateStore(_Body):
    name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] | None = None
    expires_after: dict[str, Any] | None = None

    _metadata = field_validator("metadata")(lambda v: _check_pairs(v, "metadata", scalars=False))


class AttachFile(_Body):
    file_id: str = Field(min_length=1, max_length=64)
    attributes: dict[str, Any] | None = None
    chunking_strategy: ChunkingStrategy | None = None

    _attributes = field_validator("attributes")(lambda v: _check_pairs(v, "attributes", scalars=True))


class BatchFile(_Body):
    file_id: str = Field(min_length=1, max_length=64)
    attributes: dict[str, Any] | None = None

    _attributes = field_validator("attributes")(lambda v: _check_pairs(v, "attributes", scalars=True))


class CreateBatch(_Body):
    file_ids: list[str] | None = Field(default=None, min_length=1, max_length=500)
    files: list[BatchFile] | None = Field(default=None, min_length=1, max_length=500)
    attributes: dict[str, Any] | None = None
    chunking_strategy: ChunkingStrategy | None = None

    _attributes = field_validator("attributes")(lambda v: _check_pairs(v, "attributes", scalars=True))

    @model_validator(mode="after")
    def _one_list(self) -> CreateBatch:
        if (self.file_ids is None) == (self.files is None):
            raise ValueError("give exactly one of file_ids and files")
        return self

    def pairs(self) -> list[tuple[str, dict[str, Any]]]:
        if self.files is not None:
            return [(f.file_id, f.attributes or self.attributes or {}) for f in self.files]
        return [(file_id, self.attributes or {}) for file_id in self.file_ids or []]


class UpdateAttributes(_Body):
    attributes: dict[str, Any] | None

    _attributes = field_validator("attributes")(lambda v: _check_pairs(v, "attributes", scalars=True))


class RankingOptions(_Body):
    ranker: Literal["none", "auto", "default-2024-11-15"] = "auto"
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class Search(_Body):
    query: str | list[str]
    filters: dict[str, Any] | None = None
    max_num_results: int = Field(default=10, ge=1, le=50)
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False

    @field_validator("query")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        text = value if isinstance(value, str) else " ".join(value)
        if not text.strip():
            raise ValueError("query must not be empty")
        if len(text) > 4000:
            raise ValueError("query is longer than 4000 characters")
        return value

    @field_validator("filters")
    @classmethod
    def _valid_filter(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                attribute_filters.check(value)
            except attribute_filters.FilterError as exc:
                raise ValueError(str(exc)) from None
        return value

    def text(self) -> str:
        return self.query if isinstance(self.query, str) else " ".join(self.query)
