"""The AMX guard: detection, the mode setting, and the override reaching llama.cpp's model params."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from providers.local.llama_cpu import (
    build_has_amx,
    cpu_has_amx,
    model_params_override,
    use_extra_buffers,
)

SPR_FLAGS = "flags\t\t: fpu vme avx512f avx512_vnni amx_bf16 amx_tile amx_int8 arch_capabilities\n"
EPYC_FLAGS = "flags\t\t: fpu vme avx2 avx512f avx512_vnni avx512_bf16\n"


def test_cpu_flags(tmp_path: Path) -> None:
    spr, epyc = tmp_path / "spr", tmp_path / "epyc"
    spr.write_text("processor\t: 0\n" + SPR_FLAGS)
    epyc.write_text("processor\t: 0\n" + EPYC_FLAGS)
    assert cpu_has_amx(spr) is True
    assert cpu_has_amx(epyc) is False
    assert cpu_has_amx(tmp_path / "missing") is False


def test_system_info() -> None:
    assert build_has_amx(b"CPU : SSE3 = 1 | AVX512 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |")
    assert not build_has_amx(b"CPU : SSE3 = 1 | AVX2 = 1 | LLAMAFILE = 1 |")
    assert not build_has_amx(b"AMX_INT8 = 10")


@pytest.mark.parametrize(
    ("mode", "amx", "expected"),
    [("auto", True, False), ("auto", False, True), ("on", True, True), ("off", False, False)],
)
def test_mode(mode: str, amx: bool, expected: bool) -> None:
    assert use_extra_buffers(mode, amx=amx) is expected


def test_override_is_scoped() -> None:
    module = SimpleNamespace(llama_model_default_params=lambda: SimpleNamespace(use_extra_bufts=True))
    original = module.llama_model_default_params
    with model_params_override(module, use_extra_bufts=False):
        assert module.llama_model_default_params().use_extra_bufts is False
    assert module.llama_model_default_params is original
    assert module.llama_model_default_params().use_extra_bufts is True
    with pytest.raises(RuntimeError), model_params_override(module, use_extra_bufts=False):
        raise RuntimeError("a failed load")
    assert module.llama_model_default_params is original
