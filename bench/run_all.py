"""Run every benchmark in ``bench/`` in sequence (``make bench``).

Each benchmark runs as its own subprocess (``python -m bench.<name>``), so one that crashes or
leaves threads behind cannot affect the next, and each starts from a cold interpreter as it
would when run by hand. A module is a benchmark when it has a ``__main__`` block; helpers such
as ``bench/processes.py`` are skipped. ``--quick`` is passed on to the benchmarks that accept
it (the others run with their defaults). The exit status is non-zero if any benchmark failed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
_MAIN_BLOCK = re.compile(r"^if __name__ == [\"']__main__[\"']:", re.MULTILINE)


def discover() -> list[str]:
    """Names of the benchmark modules, in alphabetical order."""
    names = []
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.stem in ("__init__", "run_all"):
            continue
        if _MAIN_BLOCK.search(path.read_text(encoding="utf-8")):
            names.append(path.stem)
    return names


def accepts_quick(name: str) -> bool:
    return '"--quick"' in (BENCH_DIR / f"{name}.py").read_text(encoding="utf-8")


def run(name: str, quick: bool) -> tuple[int, float]:
    command = [sys.executable, "-m", f"bench.{name}"]
    if quick and accepts_quick(name):
        command.append("--quick")
    print(f"\n{'=' * 78}\n== bench.{name}: {' '.join(command[1:])}\n{'=' * 78}", flush=True)
    started = time.monotonic()
    code = subprocess.call(command, cwd=BENCH_DIR.parent)
    return code, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to benchmarks that accept it")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    names = discover()
    if args.list:
        for name in names:
            print(f"{name}{'  (--quick)' if accepts_quick(name) else ''}")
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in args.only]

    results = [(name, *run(name, args.quick)) for name in names]
    print(f"\n{'=' * 78}\n== summary")
    for name, code, seconds in results:
        print(f"   {name:24} {'ok' if code == 0 else f'FAILED (exit {code})':18} {seconds:8.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
