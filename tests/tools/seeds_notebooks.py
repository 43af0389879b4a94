"""Re-execute every course notebook under other seeds and write a pass/fail table to bench/seeds.md.

Usage: python tests/tools/seeds_notebooks.py [--seeds 1 2] [--output FILE] [NOTEBOOK ...]

Each notebook (default: every notebooks/*.ipynb, sorted) runs in a fresh kernel
with the environment variable MMUTILS_SEED set, which makes
``mmutils.seed_everything`` use that seed instead of the one the notebook names.
Nothing is compared with the stored outputs and the executed copies are
discarded: a run passes when every cell, and so every ``assert``, succeeds.
Seeds stand in for other machines: CPUs round floats differently, so a claim
that holds for one seed only is a claim that may fail on a reader's laptop.
Exits non-zero if any run fails. Used by `make seeds`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from bench_notebooks import NOTEBOOKS, ROOT, bench, machine_lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "seeds.md")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))

    results: dict[str, dict[int, str]] = {}
    for path in paths:
        for seed in args.seeds:
            os.environ["MMUTILS_SEED"] = str(seed)  # inherited by the kernel started next
            print(f"{path.name} seed {seed} ...", end=" ", flush=True)
            wall, _, failure = bench(path)
            print(f"{wall:.0f} s, " + (f"FAILED at {failure}" if failure else "pass"), flush=True)
            results.setdefault(path.stem, {})[seed] = f"FAILED at {failure}" if failure else "pass"
    os.environ.pop("MMUTILS_SEED", None)

    header = " | ".join(f"seed {s}" for s in args.seeds)
    lines = [
        "# Notebooks under other seeds",
        "",
        "Written by `make seeds` (tests/tools/seeds_notebooks.py): each notebook re-executed in a",
        "fresh kernel with `MMUTILS_SEED` set, asserts active, outputs compared nowhere.",
        "Seed 0 is what `make test` runs.",
        "",
        f"| notebook | {header} |",
        "|---|" + "---|" * len(args.seeds),
        *(f"| {name} | " + " | ".join(row[s] for s in args.seeds) + " |" for name, row in results.items()),
        "",
        "Machine:",
        "",
        *machine_lines(None),
        f"- run: {dt.datetime.now().isoformat(timespec='minutes')}",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    failed = [f"{name} (seed {s})" for name, row in results.items() for s, r in row.items() if r != "pass"]
    if failed:
        print("FAILED: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
