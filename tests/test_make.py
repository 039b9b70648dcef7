"""The Makefile's targets: `make bench` has a runner, `make test` checks formatting, torch's
index is overridable. Checked with ``make -n`` (prints the commands, runs none)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run_all

ROOT = Path(__file__).resolve().parent.parent
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _dry_run(*args: str) -> str:
    done = subprocess.run(
        ["make", "-n", "-B", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def test_run_all_finds_every_benchmark_and_skips_helpers() -> None:
    names = run_all.discover()
    assert {"gateway_overhead", "saas", "resilience", "lipsync"} <= set(names)
    assert "processes" not in names and "run_all" not in names and "__init__" not in names
    for name in names:  # each is runnable as python -m bench.<name>
        assert 'if __name__ == "__main__":' in (ROOT / "bench" / f"{name}.py").read_text()
    assert run_all.accepts_quick("gateway_overhead")


def test_run_all_lists_and_refuses_unknown_names() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and "gateway_overhead  (--quick)" in listed.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--only", "nope"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown benchmark(s): nope" in bad.stderr


@needs_make
def test_make_bench_and_test_commands() -> None:
    assert f"{Path('.venv/bin/python')} -m bench.run_all --quick" in _dry_run("bench", "BENCH_ARGS=--quick")
    test = _dry_run("test")
    assert ".venv/bin/ruff check ." in test and ".venv/bin/ruff format --check ." in test


@needs_make
def test_torch_pin_and_index_are_overridable() -> None:
    default = _dry_run(".venv/.installed")
    assert "pip install 'torch==2.13.0'" in default and "--index-url" not in default
    cpu = _dry_run(".venv/.installed", "TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert "pip install 'torch==2.13.0' --index-url https://download.pytorch.org/whl/cpu" in cpu
