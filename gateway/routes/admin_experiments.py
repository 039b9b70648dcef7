"""Admin: A/B experiments (create, change percentages live, report per-variant figures, delete)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gateway.auth import Principal, require_scope
from gateway.errors import APIError
from policies.experiments import ExperimentConflict, ExperimentInvalid, Experiments, ExperimentSpec

router = APIRouter(prefix="/admin/experiments", tags=["admin"])


class ExperimentPatch(BaseModel):
    """Percentages by variant name (must still add up to 100), enabled flag, description."""

    percentages: dict[str, float] | None = None
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=2000)


def _experiments(request: Request) -> Experiments:
    experiments = getattr(request.app.state.services, "experiments", None)
    if experiments is None:
        raise APIError(503, "Experiments are not enabled in this build.", type="service_unavailable")
    return experiments


async def _share(request: Request, experiments: Experiments) -> None:
    """With Redis, publish the change so other replicas adopt it (they poll every few seconds)."""
    redis = request.app.state.services.redis
    if redis is not None:
        await experiments.publish(redis)


def _not_found(exp_id: str) -> APIError:
    return APIError(404, f"No experiment '{exp_id}'.", type="not_found_error")


@contextmanager
def _as_api_errors(exp_id: str) -> Iterator[None]:
    """One mapping of the store's errors to HTTP for every write: unknown id → 404, clash → 409,
    invalid change → 400."""
    try:
        yield
    except KeyError:
        raise _not_found(exp_id) from None
    except ExperimentConflict as exc:
        raise APIError(409, str(exc), type="conflict_error") from None
    except (ExperimentInvalid, ValueError) as exc:
        raise APIError(400, str(exc)) from None


@router.get("")
async def list_experiments(request: Request, principal: Principal = require_scope("admin")) -> Any:
    return {"object": "list", "data": _experiments(request).all()}


@router.post("")
async def create_experiment(
    spec: ExperimentSpec, request: Request, principal: Principal = require_scope("admin")
) -> JSONResponse:
    experiments = _experiments(request)
    with _as_api_errors(spec.id):
        experiments.create(spec)
    await _share(request, experiments)
    return JSONResponse(experiments.describe(spec.id), status_code=201)


@router.get("/{exp_id}")
async def get_experiment(exp_id: str, request: Request, principal: Principal = require_scope("admin")) -> Any:
    experiments = _experiments(request)
    if experiments.get(exp_id) is None:
        raise _not_found(exp_id)
    return experiments.describe(exp_id)


@router.patch("/{exp_id}")
async def patch_experiment(
    exp_id: str, patch: ExperimentPatch, request: Request, principal: Principal = require_scope("admin")
) -> Any:
    experiments = _experiments(request)
    with _as_api_errors(exp_id):
        experiments.update(exp_id, patch.model_dump(exclude_none=True))
    await _share(request, experiments)
    return experiments.describe(exp_id)


@router.delete("/{exp_id}")
async def delete_experiment(
    exp_id: str, request: Request, principal: Principal = require_scope("admin")
) -> Any:
    experiments = _experiments(request)
    with _as_api_errors(exp_id):
        experiments.delete(exp_id)
    await _share(request, experiments)
    return {"id": exp_id, "object": "experiment", "deleted": True}
