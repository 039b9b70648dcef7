"""What a fallback chain says when a target fails or the whole chain does.

Kept apart from the chain walk (policies/routing.py) because it is wording and log policy, not
routing: the operator's log line per failed target (an upstream credential failure at ERROR,
at most once a minute per target, naming what to check), the reason a target was passed over
without a call, and the one client-facing error that names every target tried and why.
"""

from __future__ import annotations

import logging
import time

from policies.circuit import BreakerState, Permit
from policies.retry import Deadline
from policies.streamguard import describe_error
from policies.targets import Target
from providers.base import ErrorKind, ProviderError

log = logging.getLogger("talkgate.routing")

#: Seconds between two ERROR logs about the same target's upstream credentials.
AUTH_LOG_INTERVAL_S = 60.0


class FailoverLog:
    """Logs each failed target; credential failures loudly but rate-limited per target."""

    def __init__(self) -> None:
        self._auth_logged: dict[str, float] = {}

    def failed(self, target: Target, exc: ProviderError, *, has_next: bool) -> None:
        then = "trying the next target" if has_next else "no target left"
        if exc.kind is not ErrorKind.AUTH:
            log.warning("target %s failed (%s); %s", target, describe_error(exc), then)
            return
        now = time.monotonic()
        key = str(target)
        if now - self._auth_logged.get(key, -AUTH_LOG_INTERVAL_S) < AUTH_LOG_INTERVAL_S:
            return
        self._auth_logged[key] = now
        credentials = (
            "the NLS AccessKey, AppKeys (TALKGATE_NLS__*)"
            if target.provider == "nls"
            else "DASHSCOPE_API_KEY"
        )
        log.error(
            "upstream rejected our credentials for %s (%s: %s); %s. Check %s and the account's billing status.",
            target,
            exc.code,
            exc.message,
            then,
            credentials,
            extra={"target": key, "error_code": exc.code},
        )


def not_configured(target: Target, cloud_enabled: bool) -> str:
    if target.provider == "bailian" and not cloud_enabled:
        return "not configured (DASHSCOPE_API_KEY is not set)"
    return f"provider '{target.provider}' is not configured"


def breaker_label(permit: Permit) -> str:
    return "circuit open" if permit.state is BreakerState.OPEN else "circuit half-open, probe in flight"


def refusal(permit: Permit, last_error: ProviderError | None) -> str:
    """Why a breaker refused a target (and, if our own failures tripped it, what they were)."""
    state = breaker_label(permit)
    if last_error is not None:  # our own failures tripped it between two attempts
        return f"{describe_error(last_error)}; then {state}"
    return state


def exhausted(
    capability: str, failures: list[tuple[Target, str, ProviderError | None]], deadline: Deadline
) -> ProviderError:
    """One clear error naming every target tried and why it did not answer."""
    detail = "; ".join(f"{t}: {reason}" for t, reason, _ in failures) or "the chain is empty"
    errors = [e for _, _, e in failures if e is not None]
    kinds = {e.kind for e in errors}
    if deadline.expired:
        return ProviderError(
            ErrorKind.TIMEOUT,
            f"{capability} could not be served within the {deadline.budget_s:g}s deadline ({detail})",
            code="deadline_exceeded",
        )
    if len(kinds) == 1 and len(errors) == len(failures) and kinds != {ErrorKind.UNAVAILABLE}:
        # Every target failed the same way (e.g. all throttled): keep that meaning for the client.
        kind = kinds.pop()
        waits = [e.retry_after for e in errors if e.retry_after]
        return ProviderError(
            kind,
            f"every target for {capability} failed ({detail})",
            code=errors[-1].code,
            retry_after=min(waits) if waits else None,
        )
    return ProviderError(
        ErrorKind.UNAVAILABLE,
        f"no provider could serve {capability} ({detail})",
        code="upstream_unavailable",
    )
