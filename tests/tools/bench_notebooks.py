"""Time each course notebook and measure its peak memory; write bench/notebooks.md.

Usage: python tests/tools/bench_notebooks.py [--cpus N] [--output FILE] [NOTEBOOK ...]

Each notebook (default: every notebooks/*.ipynb, sorted) is executed in a fresh
kernel with notebooks/ as working directory; the executed copy is discarded.
Wall time covers kernel start-up and all cells. A notebook that fails is
marked in the table with the cell that failed; the others are still timed, and
the script exits non-zero at the end. Peak RSS is the largest sum of
the resident memory of the kernel process tree (every child process of this
script: the kernel and whatever it starts), sampled every 0.1 s.
`--cpus N` restricts this script, and so the kernels it starts, to N CPUs
(Linux only), to approximate a smaller machine. Used by `make bench`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TIMEOUT = 600  # seconds per cell
KERNEL = "python3"
INTERVAL = 0.1  # seconds between memory samples
MiB = 1024 * 1024


class PeakRSS(threading.Thread):
    """Samples the summed RSS of all child processes of this process."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self._stop_event = threading.Event()
        self._me = psutil.Process()

    def sample(self) -> None:
        total = 0
        for proc in self._me.children(recursive=True):
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.peak = max(self.peak, total)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(INTERVAL)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def failed_cell(nb: nbformat.NotebookNode) -> str:
    """'cell N: ErrorName' for the first code cell of an executed notebook that stored an error."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                return f"cell {i}: {out.get('ename', 'error')}"
    return "error"


def bench(path: Path) -> tuple[float, float, str | None]:
    """Execute one notebook; return (wall seconds, peak RSS in MiB, None or where it failed)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=TIMEOUT,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    monitor = PeakRSS()
    monitor.start()
    start = time.perf_counter()
    failure = None
    try:
        client.execute()
    except CellTimeoutError:  # a cell over TIMEOUT: marked as a failure, the other notebooks still run
        failure = f"a cell still running after {TIMEOUT} s"
    except CellExecutionError:
        failure = failed_cell(nb)
    finally:
        wall = time.perf_counter() - start
        peak = monitor.stop()
    return wall, peak / MiB, failure


def render_rate(n: int = 20_000, size: int = 32, repeats: int = 3) -> float:
    """Scenes per second of ``mmutils.world.render`` at ``size`` x ``size`` (best of ``repeats``).

    Rendering is numpy code; it runs in this process, on one core (the kernels
    started above have exited).
    """
    from mmutils import world

    scenes = world.sample_scenes(n, seed=0)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        world.render(scenes, size=size)
        best = min(best, time.perf_counter() - start)
    return n / best


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(cpus: int | None) -> list[str]:
    logical = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    lines = [
        f"- CPU: {cpu_model()}; {logical} logical CPUs, {psutil.cpu_count(logical=False)} physical cores",
        f"- CPUs available to the kernels: {usable}" + (" (restricted with `--cpus`)" if cpus else ""),
        f"- memory: {psutil.virtual_memory().total / 1024**3:.0f} GiB",
        f"- {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"torch {metadata.version('torch')}",
        f"- date: {dt.date.today().isoformat()}",
    ]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--cpus", type=int, default=None, help="use only the first N CPUs")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "notebooks.md")
    args = parser.parse_args(argv)

    if args.cpus:
        if not hasattr(os, "sched_setaffinity"):
            parser.error("--cpus needs Linux (os.sched_setaffinity)")
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])

    paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        print("no notebooks to benchmark")
        return 0

    rows = []
    for path in paths:
        print(f"{path.name} ...", end=" ", flush=True)
        wall, peak, failure = bench(path)
        print(f"{wall:.1f} s, {peak:.0f} MiB" + (f", FAILED at {failure}" if failure else ""), flush=True)
        rows.append((path.stem, wall, peak, failure))

    total_wall = sum(r[1] for r in rows)
    rate = render_rate()
    print(f"ShapesWorld render: {rate:,.0f} scenes/s at 32x32", flush=True)
    lines = [
        "# Notebook benchmark",
        "",
        "Written by `make bench` (tests/tools/bench_notebooks.py): each notebook executed",
        "in a fresh kernel; wall time includes kernel start-up; peak RSS is the largest",
        "resident memory of the kernel process tree, sampled every 0.1 s.",
        "",
        "| notebook | wall s | peak RSS MiB | result |",
        "|---|---:|---:|---|",
        *(f"| {name} | {wall:.1f} | {peak:.0f} | {'FAILED at ' + failure if failure else 'ok'} |"
          for name, wall, peak, failure in rows),
        f"| **total** | **{total_wall:.1f}** | **{max(r[2] for r in rows):.0f}** (max) | |",
        "",
        f"ShapesWorld rendering (`mmutils.world.render`, 20,000 scenes of 1 or 2 objects at 32x32,",
        f"one process, best of 3): **{rate:,.0f} scenes/s**.",
        "",
        "Machine:",
        "",
        *machine_lines(args.cpus),
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output.relative_to(ROOT) if args.output.resolve().is_relative_to(ROOT) else args.output}")
    failed = [name for name, *_, failure in rows if failure]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
