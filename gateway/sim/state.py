"""Run-time state of one simulator: injected faults, the request log and served audio files.

Everything here is touched only from the simulator's event loop, so no locks are needed.
"""

from __future__ import annotations

import copy
import itertools
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from gateway.sim.config import SimConfig

SERVICES = ("generation", "asr", "tts", "embedding", "rerank", "nls-token", "nls-asr", "nls-tts", "*")

# Bailian's error code and message for each HTTP status a fault may carry (reference §6.1).
DEFAULT_CODES: dict[int, tuple[str, str]] = {
    400: ("InvalidParameter", "The request parameters are invalid."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    403: ("AccessDenied", "Access denied."),
    404: ("ModelNotFound", "Model not found."),
    408: ("RequestTimeOut", "Request timed out, please try again later."),
    409: ("Conflict", "Request conflict."),
    413: ("BadRequest.TooLarge", "Payload Too Large."),
    415: ("BadRequest.UnsupportedFileFormat", "Input file format is not supported."),
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalError", "An internal error has occured, please try again later."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ModelUnavailable", "Model is unavailable, please try again later."),
    504: ("GatewayTimeout", "Gateway timeout."),
}


def default_error(status: int) -> tuple[str, str]:
    if status in DEFAULT_CODES:
        return DEFAULT_CODES[status]
    return ("InternalError" if status >= 500 else "InvalidParameter", f"Simulated error {status}.")


@dataclass
class Fault:
    """One injected failure; see ``FaultBook.add`` for the field semantics."""

    id: int
    service: str = "*"
    model: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    times: int | None = None
    latency_ms: float = 0.0
    cut_after: int | None = None
    hang: bool = False
    retry_after: float | None = None
    # The call succeeds but its JSON-mode content / tool arguments are invalid (gateway/sim/jsonmode.py).
    invalid_output: bool = False
    hits: int = 0

    def matches(self, service: str, model: str | None) -> bool:
        if self.service not in ("*", service):
            return False
        return self.model is None or self.model == model

    @property
    def error_code(self) -> str:
        return self.code or default_error(self.status or 500)[0]

    @property
    def error_message(self) -> str:
        return self.message or default_error(self.status or 500)[1]

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "model": self.model,
            "status": self.status,
            "code": self.error_code if self.status else self.code,
            "message": self.error_message if self.status else self.message,
            "times": self.times,
            "latency_ms": self.latency_ms,
            "cut_after": self.cut_after,
            "hang": self.hang,
            "retry_after": self.retry_after,
            "invalid_output": self.invalid_output,
            "hits": self.hits,
        }


def _opt_int(spec: dict[str, Any], name: str, minimum: int) -> int | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}")
    return value


def _opt_number(spec: dict[str, Any], name: str) -> float | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    return float(value)


class FaultBook:
    """Ordered list of active faults; the oldest matching one applies to a request."""

    FIELDS = frozenset(
        {
            "service",
            "model",
            "status",
            "code",
            "message",
            "times",
            "latency_ms",
            "cut_after",
            "hang",
            "retry_after",
            "invalid_output",
        }
    )

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        """Validate a ``POST /sim/faults`` body and queue it. Raises ValueError on a bad spec."""
        unknown = set(spec) - self.FIELDS
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        service = spec.get("service", "*")
        if service not in SERVICES:
            raise ValueError(f"service must be one of {', '.join(SERVICES)}")
        status = _opt_int(spec, "status", 400)
        if status is not None and status > 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        for name in ("code", "message", "model"):
            if spec.get(name) is not None and not isinstance(spec[name], str):
                raise ValueError(f"{name} must be a string")
        hang = spec.get("hang", False)
        invalid_output = spec.get("invalid_output", False)
        for name, flag in (("hang", hang), ("invalid_output", invalid_output)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a boolean")
        fault = Fault(
            id=next(self._ids),
            service=service,
            model=spec.get("model"),
            status=status,
            code=spec.get("code"),
            message=spec.get("message"),
            times=_opt_int(spec, "times", 1),
            latency_ms=_opt_number(spec, "latency_ms") or 0.0,
            cut_after=_opt_int(spec, "cut_after", 0),
            hang=hang,
            retry_after=_opt_number(spec, "retry_after"),
            invalid_output=invalid_output,
        )
        if not (
            fault.status
            or fault.latency_ms
            or fault.cut_after is not None
            or fault.hang
            or fault.invalid_output
        ):
            raise ValueError(
                "a fault needs at least one of status, latency_ms, cut_after, hang, invalid_output"
            )
        self._faults.append(fault)
        return fault

    def take(self, service: str, model: str | None, *, handshake: bool = False) -> Fault | None:
        """Consume one use of the oldest fault matching this call, or return None.

        ``handshake=True`` is the WebSocket handshake, which cannot know the service yet: only
        model-less 401/403 faults for "asr", "tts" or "*" apply there.
        """
        for fault in self._faults:
            if handshake:
                if (
                    fault.status not in (401, 403)
                    or fault.model is not None
                    or fault.service not in ("asr", "tts", "*")
                ):
                    continue
            elif not fault.matches(service, model):
                continue
            fault.hits += 1
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
            return fault
        return None

    def remove(self, fault_id: int) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) != before

    def clear(self) -> None:
        self._faults.clear()

    def view(self) -> list[dict[str, Any]]:
        return [f.view() for f in self._faults]


class RequestLog:
    """Every upstream call attempt, newest last, including ones answered with a fault."""

    def __init__(self, limit: int) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=limit)
        self._ids = itertools.count(1)

    def record(
        self,
        service: str,
        path: str,
        model: str | None,
        stream: bool,
        body: Any,
        fault: Fault | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Append an entry and return it; handlers may update it later (status, audio bytes)."""
        item: dict[str, Any] = {
            "id": next(self._ids),
            "service": service,
            "path": path,
            "model": model,
            "stream": stream,
            "body": body,
            "time": time.time(),
            "fault": fault.id if fault else None,
            "status": None,
        }
        item.update(extra)
        self._items.append(item)
        return item

    def resize(self, limit: int) -> None:
        if limit != self._items.maxlen:
            self._items = deque(self._items, maxlen=limit)

    def clear(self) -> None:
        self._items.clear()

    def view(self) -> list[dict[str, Any]]:
        return list(self._items)


class AudioStore:
    """Synthesized files served at ``GET /sim/audio/{id}.wav``; bounded, oldest evicted first."""

    def __init__(self, limit: int = 256) -> None:
        self._files: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._limit = limit

    def put(self, data: bytes, media_type: str, ext: str) -> str:
        # Random, like the signed URLs these stand in for: the route needs no credentials, so a
        # guessable name (time + counter) would let anyone on the network fetch others' speech.
        name = f"{secrets.token_urlsafe(18)}.{ext}"
        self._files[name] = (data, media_type)
        while len(self._files) > self._limit:
            self._files.popitem(last=False)
        return name

    def get(self, name: str) -> tuple[bytes, str] | None:
        return self._files.get(name)


@dataclass
class SimState:
    config: SimConfig
    faults: FaultBook = field(default_factory=FaultBook)
    log: RequestLog = field(init=False)
    audio: AudioStore = field(default_factory=AudioStore)

    def __post_init__(self) -> None:
        self.log = RequestLog(self.config.record_limit)
        self._initial = copy.deepcopy(self.config)

    def initial_config(self) -> SimConfig:
        """A fresh copy of the configuration the simulator was created with."""
        return copy.deepcopy(self._initial)
