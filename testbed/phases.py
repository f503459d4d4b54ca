#!/usr/bin/env python3
"""Where a test run's time goes: record phases, and print them as one table.

  phases.py run NAME -- COMMAND...   run COMMAND, record its wall time as phase NAME
  phases.py molecule                 copy molecule's output from standard input to
                                     standard output, recording each of its steps
                                     (create, converge, verify, ...) as a phase
  phases.py table                    print the recorded phases, in seconds

Phases go to the file named by CONDORLAB_PHASES (tab-separated: phase,
seconds); nothing is recorded without it. The molecule scenario's tests add
one phase per test file (verify: test_x.py) through their conftest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

STEP = re.compile(r"➜ (\w+): Executing\s*$")


def record(name: str, seconds: float) -> None:
    path = os.environ.get("CONDORLAB_PHASES")
    if path:
        with open(path, "a") as handle:
            handle.write(f"{name}\t{seconds:.1f}\n")


def run(name: str, command: list[str]) -> int:
    began = time.monotonic()
    code = subprocess.call(command)  # noqa: S603 - the caller's own command
    record(name, time.monotonic() - began)
    return code


def molecule() -> int:
    step, since = None, time.monotonic()
    for line in sys.stdin:
        sys.stdout.write(line)
        sys.stdout.flush()
        match = STEP.search(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if match:
            if step:
                record(f"molecule {step}", time.monotonic() - since)
            step, since = match.group(1), time.monotonic()
    if step:
        record(f"molecule {step}", time.monotonic() - since)
    return 0


def table() -> int:
    path = os.environ.get("CONDORLAB_PHASES")
    if not path or not os.path.exists(path):
        print("phases: none recorded")
        return 0
    rows: list[tuple[str, float]] = []
    with open(path) as handle:
        for line in handle:
            name, _, seconds = line.rstrip("\n").rpartition("\t")
            if name and not (name.startswith("verify: ") and (name, float(seconds)) in rows):
                rows.append((name, float(seconds)))
    # `make test` holds the image and molecule's steps, molecule's verify the
    # test files: each is shown under what holds it, and counted once.
    files = [(n, s) for n, s in rows if n.startswith("verify: ")]
    inner = [(n, s) for n, s in rows if n == "image" or n.startswith("molecule ")]
    top = [(n, s) for n, s in rows if (n, s) not in files and (n, s) not in inner]
    shown: list[tuple[int, str, float]] = []
    for name, seconds in top:
        shown.append((0, name, seconds))
        if name == "make test":
            shown.append((1, "lint and unit", seconds - sum(s for _, s in inner)))
            for inner_name, inner_seconds in inner:
                shown.append((1, inner_name, inner_seconds))
                if inner_name == "molecule verify":
                    shown += [(2, n, s) for n, s in files]
    total = sum(s for _, s in top)
    width = max(2 * depth + len(name) for depth, name, _ in shown) + 2
    print("== where the time went (seconds) ==")
    for depth, name, seconds in shown:
        print(f"{'  ' * depth + name:<{width}}{seconds:>8.0f}")
    print(f"{'total':<{width}}{total:>8.0f}  ({total / 60:.1f} min)")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"] and len(argv) > 3 and argv[2] == "--":
        return run(argv[1], argv[3:])
    if argv == ["molecule"]:
        return molecule()
    if argv == ["table"]:
        return table()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
