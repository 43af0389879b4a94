"""Re-execute the course notebooks in place, in sorted order, each in a fresh kernel.

Usage: python tests/tools/execute_notebooks.py [NOTEBOOK ...]
(default: every notebooks/*.ipynb). Stops at the first notebook that fails.
Used by `make execute`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TIMEOUT = 600  # seconds per cell
KERNEL = "python3"


def notebook_paths(args: list[str]) -> list[Path]:
    """The notebooks named on the command line, or all of notebooks/*.ipynb, sorted."""
    if args:
        return [Path(a).resolve() for a in args]
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def execute(path: Path) -> nbformat.NotebookNode:
    """Execute one notebook in a fresh kernel with notebooks/ as working directory."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=TIMEOUT,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        record_timing=False,  # keep per-cell timestamps out of the stored file
    )
    client.execute()
    return nb


def main(argv: list[str]) -> int:
    paths = notebook_paths(argv)
    if not paths:
        print("no notebooks to execute")
        return 0
    for path in paths:
        print(f"executing {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ...", flush=True)
        try:
            nb = execute(path)
        except CellExecutionError as err:
            print(err, file=sys.stderr)
            print(f"FAILED: {path.name}", file=sys.stderr)
            return 1
        nbformat.write(nb, path)
    print(f"executed {len(paths)} notebook(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
