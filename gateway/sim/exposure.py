"""Start-up guard: the simulator only runs open (no key list, no control token) on loopback.

On 127.0.0.1 the simulator is a local test double and everything is open, as the test suite and
local demos expect. Bound to any other address, two defaults become dangerous: with no
``TALKGATE_SIM_API_KEYS`` any non-empty key is accepted, and the control API (``/sim/requests``
returns every recorded prompt; ``/sim/faults`` lets anyone break the "cloud") has no
authentication. So a non-loopback bind needs both a key list and ``TALKGATE_SIM_CONTROL_TOKEN``,
and the check runs before the socket is bound, so a refused simulator never serves anything.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from gateway.sim.config import API_KEYS_ENV, SimConfig

CONTROL_TOKEN_ENV = "TALKGATE_SIM_CONTROL_TOKEN"
#: Shorter tokens are refused: the control API reads every tenant's prompts.
MIN_CONTROL_TOKEN_CHARS = 16


class UnsafeExposure(Exception):
    """The simulator would be reachable from other hosts without its protections; nothing was bound."""


def control_token_from_env() -> str | None:
    """``TALKGATE_SIM_CONTROL_TOKEN``, stripped; unset or blank means no token."""
    return os.environ.get(CONTROL_TOKEN_ENV, "").strip() or None


def is_loopback(host: str) -> bool:
    """True only when every address ``host`` names is a loopback address.

    ``0.0.0.0``/``::``/"" mean every interface; a host name counts as loopback only if all of its
    addresses are (a name that does not resolve is treated as public: fail closed).
    """
    name = host.strip().strip("[]")
    if not name:
        return False
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def exposure_problems(host: str, config: SimConfig, control_token: str | None) -> list[str]:
    """Why the simulator must not start on ``host`` with this configuration (empty: it may)."""
    problems = []
    if control_token is not None and len(control_token) < MIN_CONTROL_TOKEN_CHARS:
        problems.append(
            f"{CONTROL_TOKEN_ENV} must be at least {MIN_CONTROL_TOKEN_CHARS} characters "
            "(generate one with: openssl rand -hex 32)."
        )
    if is_loopback(host):
        return problems
    if not config.api_keys:
        problems.append(
            f"{API_KEYS_ENV} is unset, so any non-empty API key would be accepted on {host!r}; "
            f"set {API_KEYS_ENV}=key1,key2 (comma-separated)."
        )
    if control_token is None:
        problems.append(
            f"{CONTROL_TOKEN_ENV} is unset, so the control API (/sim/requests: every recorded prompt; "
            f"/sim/faults, /sim/config) would be open to anyone who can reach {host!r}; set "
            f"{CONTROL_TOKEN_ENV} to a long random secret (clients then send 'Authorization: Bearer <token>')."
        )
    return problems


def check_exposure(host: str, config: SimConfig, control_token: str | None) -> None:
    """Raise UnsafeExposure with every reason at once (so one restart fixes them all)."""
    problems = exposure_problems(host, config, control_token)
    if problems:
        hint = "" if is_loopback(host) else " Or bind to loopback: --host 127.0.0.1."
        raise UnsafeExposure(
            f"refusing to serve on {host!r}: " + " ".join(problems) + hint,
        )
