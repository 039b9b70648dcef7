"""Keep llama.cpp off its AMX weight-repacking path, which segfaults (or answers wrongly) today.

Why this module exists: llama-cpp-python compiles llama.cpp natively. On a Xeon with AMX
(``amx_tile amx_int8`` in /proc/cpuinfo: Sapphire Rapids and later, i.e. most current cloud
x86 instances) that build registers an "AMX" extra buffer type, repacks Q4/Q8 weights into it
at load time (``load_tensors: AMX model buffer size = ...``) and crashes in the first matmul
(``ggml_backend_amx_mul_mat``; llama.cpp issue 20824, still open; PR 16315 on wrong AMX
Q4_0/Q4_1 results). Loading with the model parameter ``use_extra_bufts = false`` keeps every
weight in the plain CPU buffer, and the same model answers.

``use_extra_bufts`` is a field of llama.cpp's ``llama_model_params`` struct. ``Llama(...)``
does not take it as a keyword (an unknown keyword is silently ignored), so
:func:`model_params_override` makes the ``llama_model_default_params()`` that ``Llama``
builds its parameters from return the field already set, for the duration of one load.

The mode is per model (``local.llm.<name>.extra_buffers``): ``auto`` (default) turns extra
buffer types off exactly when AMX is present, ``on``/``off`` force either way.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

ExtraBuffers = Literal["auto", "on", "off"]
#: CPU flags (Linux /proc/cpuinfo) that make llama.cpp's native build use its AMX backend.
AMX_CPU_FLAGS = frozenset({"amx_int8", "amx_tile"})
#: llama.cpp's system info line for a build with the AMX backend, e.g. "AMX_INT8 = 1".
_AMX_BUILD = re.compile(rb"\bAMX_INT8\s*=\s*1\b")
_PATCH_LOCK = threading.Lock()


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU advertises AMX (False where /proc/cpuinfo cannot be read)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(AMX_CPU_FLAGS & set(line.partition(":")[2].split()))
    return False


def build_has_amx(system_info: bytes) -> bool:
    """Whether llama.cpp's ``llama_print_system_info()`` says the build uses AMX."""
    return bool(_AMX_BUILD.search(system_info))


def use_extra_buffers(mode: ExtraBuffers, *, amx: bool) -> bool:
    """Whether to let llama.cpp repack weights into extra buffer types."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return not amx


def amx_present(llama_cpp_module: Any) -> bool:
    """AMX on this CPU or in the llama.cpp build that is loaded."""
    try:
        info = llama_cpp_module.llama_print_system_info()
    except Exception:  # an older binding without it: the CPU flags decide
        info = b""
    return cpu_has_amx() or build_has_amx(info or b"")


@contextlib.contextmanager
def model_params_override(llama_cpp_module: Any, **fields: Any) -> Iterator[None]:
    """While active, ``llama_model_default_params()`` returns its defaults with ``fields`` set.

    Loads are serialised by a lock, so two loads never see each other's override.
    """
    if not fields:
        yield
        return
    with _PATCH_LOCK:
        original = llama_cpp_module.llama_model_default_params

        def patched() -> Any:
            params = original()
            for name, value in fields.items():
                setattr(params, name, value)
            return params

        llama_cpp_module.llama_model_default_params = patched
        try:
            yield
        finally:
            llama_cpp_module.llama_model_default_params = original
