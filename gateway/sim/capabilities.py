"""What each simulated model accepts: tools, forced ``tool_choice``, JSON modes, images, thinking.

Why a table: Bailian refuses features per model, and a gateway that routes or falls back must
learn that from the simulator exactly as it would from the cloud. The rows follow the team's
reference (tools-structured-vision.md §1.8, §2, §3.4, §1.7) as of early 2026; the first row whose
prefix matches the model name wins. ``SimConfig.model_capabilities`` overrides single flags per
exact model name at run time, because the real lists move faster than any code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

#: Flags a ``model_capabilities`` override may set (all booleans).
FLAGS = ("tools", "forced_tool_choice", "json_object", "json_schema", "vision")
THINKING = ("off", "on", "only")


@dataclass(frozen=True, slots=True)
class Caps:
    """One model family's features.

    ``forced_tool_choice``: accepts ``tool_choice`` "required" or a named function (qwen-long was
    seen refusing "required"). ``thinking``: "off" (hybrid, off by default), "on" (hybrid, on by
    default) or "only" (cannot be switched off). ``patch_px``/``max_pixels``: image token
    accounting (one token per ``patch_px``² pixels, default pixel cap).
    """

    tools: bool = False
    forced_tool_choice: bool = True
    json_object: bool = False
    json_schema: bool = False
    vision: bool = False
    thinking: str = "off"
    patch_px: int = 32
    max_pixels: int = 2_621_440


_TEXT = Caps(tools=True, json_object=True)
_VL25 = Caps(vision=True, json_object=True, max_pixels=1_310_720)
_VL25_OPEN = Caps(vision=True, patch_px=28, max_pixels=1_003_520)
_QWEN3_VL = Caps(tools=True, vision=True)

_TABLE: tuple[tuple[tuple[str, ...], Caps], ...] = (
    # Test-only family: everything on, so gateway tests need no real model name.
    (("sim-",), Caps(tools=True, json_object=True, json_schema=True, vision=True)),
    # JSON Schema mode: Beijing-only snapshots listed by the structured-output page.
    (
        ("qwen-plus-latest", "qwen-plus-2025-12-01", "qwen-plus-2025-09-11", "qwen-plus-2025-07-28"),
        Caps(tools=True, json_object=True, json_schema=True),
    ),
    (("qwen-long",), Caps(tools=True, forced_tool_choice=False, json_object=True)),
    (("qwen-vl-ocr",), Caps(vision=True)),
    (("qwen-vl-max", "qwen-vl-plus"), _VL25),
    (("qwen2.5-vl", "qwen2-vl"), _VL25_OPEN),
    (("qvq",), Caps(vision=True, thinking="only", patch_px=28, max_pixels=1_003_520)),
    (("qwen3-vl-plus", "qwen3-vl-flash"), Caps(tools=True, vision=True, json_object=True)),
    (("qwen3-vl-",), _QWEN3_VL),
    (("qwen3.5-", "qwen3.6-", "qwen3.7-"), Caps(tools=True, vision=True, json_object=True)),
    (("qwen3-max", "qwen3-coder"), _TEXT),
    # Open-source Qwen3 (qwen3-32b, qwen3-235b-a22b, ...): hybrid with thinking on by default.
    (("qwen3-",), Caps(tools=True, json_object=True, thinking="on")),
    (
        ("qwen-max", "qwen-plus", "qwen-flash", "qwen-turbo", "qwen-coder", "qwen2.5-", "qwen2-", "qwen1.5-"),
        _TEXT,
    ),
    (("qwq",), Caps(thinking="only")),
    (("deepseek-v3.2", "deepseek-v3.1"), Caps(tools=True)),
    (("glm", "kimi"), Caps(tools=True, json_object=True)),
)
_NOTHING = Caps()


def capabilities(model: str, overrides: dict[str, dict[str, Any]] | None = None) -> Caps:
    """The features of ``model``: the first matching table row, then any run-time override."""
    caps = _NOTHING
    for prefixes, row in _TABLE:
        if model.startswith(prefixes):
            caps = row
            break
    if "-thinking" in model:  # qwen3-235b-a22b-thinking-2507, qwen3-vl-*-thinking, ...
        caps = replace(caps, thinking="only", json_object=False, json_schema=False)
    patch = (overrides or {}).get(model)
    if patch:
        caps = replace(caps, **{k: v for k, v in patch.items() if k in FLAGS})
    return caps


def thinking_enabled(caps: Caps, params: dict[str, Any]) -> bool:
    """Whether this call runs in thinking mode (``enable_thinking`` against the model's default)."""
    if caps.thinking == "only":
        return True
    flag = params.get("enable_thinking")
    if caps.thinking == "on":
        return flag is not False
    return flag is True


def check_override(patch: Any) -> dict[str, dict[str, bool] | None]:
    """Validate a ``model_capabilities`` config patch: ``{model: {flag: bool} | null}``."""
    if not isinstance(patch, dict):
        raise ValueError("model_capabilities must be an object")
    for model, flags in patch.items():
        if flags is None:
            continue
        if not isinstance(flags, dict):
            raise ValueError("model_capabilities values must be objects or null")
        for flag, value in flags.items():
            if flag not in FLAGS or not isinstance(value, bool):
                raise ValueError(
                    f"model_capabilities[{model!r}]: flags are booleans named {', '.join(FLAGS)}"
                )
    return patch


def table_view() -> list[dict[str, Any]]:
    """The built-in rows as JSON (for documentation and tests)."""
    names = [f.name for f in fields(Caps)]
    return [{"prefixes": list(p), **{n: getattr(c, n) for n in names}} for p, c in _TABLE]
