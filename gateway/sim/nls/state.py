"""What the NLS side of the simulator knows: AccessKeys, AppKeys, issued tokens, used nonces, running tasks.

One ``NlsState`` per simulator, next to the Bailian ``SimState`` (whose fault book, request log and
latency settings the NLS services share). Touched only from the simulator's event loop: no locks.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

ACCESS_KEYS_ENV = "TALKGATE_SIM_NLS_ACCESS_KEYS"
APPKEYS_ENV = "TALKGATE_SIM_NLS_APPKEYS"
#: Used when ``TALKGATE_SIM_NLS_ACCESS_KEYS`` is unset (loopback only: see ``exposure_problems``).
DEFAULT_ACCESS_KEYS = {"sim-access-key-id": "sim-access-key-secret"}
#: Nonces remembered for replay detection (older ones fall outside the timestamp window anyway).
MAX_REMEMBERED_NONCES = 100_000
#: Issued tokens remembered; the oldest is forgotten first (it then reads as invalid).
MAX_REMEMBERED_TOKENS = 100_000


def _pairs_from_env(raw: str) -> dict[str, str]:
    """``id:secret,id2:secret2`` -> {id: secret}; blank entries are skipped."""
    pairs = {}
    for item in raw.split(","):
        ak, sep, secret = item.strip().partition(":")
        if sep and ak and secret:
            pairs[ak] = secret
    return pairs


@dataclass
class NlsSimConfig:
    """``access_keys``: AccessKeyId -> AccessKeySecret accepted by CreateToken (None reads
    ``TALKGATE_SIM_NLS_ACCESS_KEYS``, then ``DEFAULT_ACCESS_KEYS``). ``appkeys``: accepted AppKeys
    (None reads ``TALKGATE_SIM_NLS_APPKEYS``; unset: any non-empty AppKey)."""

    access_keys: dict[str, str] | None = None
    appkeys: list[str] | None = None
    token_ttl_s: float = 36 * 3600.0  #: commonly observed lifetime of a real token
    timestamp_window_s: float = 15 * 60.0  #: POP's clock-skew rule
    check_nonce: bool = True
    idle_timeout_s: float = 10.0  #: NLS closes a task after 10 s without a client frame (40000004)
    max_concurrent: int = 200  #: per service, the commercial default (trial accounts get 2)
    #: "http403": refuse a bad token at the handshake (what the gateway does); "task_failed":
    #: accept the upgrade and answer the first directive with TaskFailed 40000001 (the documented
    #: in-band form).
    token_check: str = "http403"

    def __post_init__(self) -> None:
        if self.access_keys is None:
            self.access_keys = _pairs_from_env(os.environ.get(ACCESS_KEYS_ENV, "")) or dict(
                DEFAULT_ACCESS_KEYS
            )
        if self.appkeys is None:
            keys = [k.strip() for k in os.environ.get(APPKEYS_ENV, "").split(",") if k.strip()]
            self.appkeys = keys or None

    def appkey_ok(self, appkey: object) -> bool:
        if not isinstance(appkey, str) or not appkey:
            return False
        return True if not self.appkeys else appkey in self.appkeys


@dataclass
class IssuedToken:
    token: str
    expire_time: int  # Unix seconds, as in the CreateToken answer
    access_key_id: str


@dataclass
class NlsState:
    config: NlsSimConfig = field(default_factory=NlsSimConfig)
    tokens: OrderedDict[str, IssuedToken] = field(default_factory=OrderedDict)
    nonces: OrderedDict[str, float] = field(default_factory=OrderedDict)
    running: dict[str, int] = field(default_factory=dict)  # service -> tasks now running
    created: int = 0  # CreateToken calls answered with a token

    def issue(self, access_key_id: str, now: float | None = None) -> IssuedToken:
        now = time.time() if now is None else now
        issued = IssuedToken(secrets.token_hex(16), int(now + self.config.token_ttl_s), access_key_id)
        self.tokens[issued.token] = issued
        while len(self.tokens) > MAX_REMEMBERED_TOKENS:
            self.tokens.popitem(last=False)
        self.created += 1
        return issued

    def token_problem(self, token: str | None, now: float | None = None) -> str | None:
        """None if ``token`` may open a task, else "missing", "invalid" or "expired"."""
        if not token:
            return "missing"
        issued = self.tokens.get(token)
        if issued is None:
            return "invalid"
        if issued.expire_time <= (time.time() if now is None else now):
            return "expired"
        return None

    def nonce_used(self, nonce: str, now: float | None = None) -> bool:
        """Remember ``nonce``; True if it was already seen within the timestamp window."""
        now = time.time() if now is None else now
        horizon = now - 2 * self.config.timestamp_window_s
        while self.nonces and (
            next(iter(self.nonces.values())) < horizon or len(self.nonces) > MAX_REMEMBERED_NONCES
        ):
            self.nonces.popitem(last=False)
        if nonce in self.nonces:
            return True
        self.nonces[nonce] = now
        return False


def nls_exposure_problem(host: str) -> str | None:
    """Why NLS must not be served on ``host``: the built-in AccessKey is public knowledge."""
    from gateway.sim.exposure import is_loopback

    if is_loopback(host) or os.environ.get(ACCESS_KEYS_ENV, "").strip():
        return None
    return (
        f"refusing to serve NLS on {host!r} with the built-in AccessKey: set {ACCESS_KEYS_ENV}=id:secret "
        "(or --nls-port 0 for no NLS)"
    )
