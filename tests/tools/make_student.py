"""Write student copies of the course notebooks: no solutions, and "your turn" cells left to fill in.

Usage: python tests/tools/make_student.py [--output student] [NOTEBOOK ...]
(default: every notebooks/*.ipynb). Used by `make student`.

For each notebook, the copy ``student/NN_slug.ipynb``:

- drops every ``{solution}`` block (and every ``{solution-start}`` ... ``{solution-end}``
  span of cells) of sphinx-exercise, so the exercises stay and their answers go;
- replaces each code cell tagged ``your-turn`` by a stub that raises
  ``NotImplementedError`` with a hint, in the style of Neuromatch Academy's student
  notebooks. The cell's metadata says what to keep and what to ask::

      "tags": ["your-turn"],
      "your_turn": {"keep": 2, "hint": "compute the weights, softmax over the regions"}

  ``keep`` leading lines stay (a ``def`` line, a docstring); the stub follows them,
  indented under a trailing ``:``. The course's own ``assert`` cells after the
  stub then check the student's code;
- has no outputs, so a student runs it from the top;
- opens with a note saying all this.

The solution notebooks are not changed.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TAG = "your-turn"
MAX_LINE = 100  # the hint comment is wrapped to the course's code-line width
# An opening fence of backticks or colons with the solution directive; it closes at the same fence.
SOLUTION_OPEN = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution\}")
SPAN_START = re.compile(r"^(`{3,}|:{3,})\{solution-start\}", re.MULTILINE)
SPAN_END = re.compile(r"^(`{3,}|:{3,})\{solution-end\}", re.MULTILINE)
BANNER = (
    "```{note}\n"
    "**Student copy.** The solutions of the exercises are removed. Code cells that start with\n"
    "`# Your turn` raise `NotImplementedError` until you write the missing code; the `assert`\n"
    "cells after them check your work. Run the notebook from the top.\n"
    "```"
)


def strip_solutions(markdown: str) -> str:
    """Remove every fenced ``{solution}`` block from a markdown cell's text."""
    kept, closing = [], None
    for line in markdown.splitlines(keepends=True):
        if closing is None:
            match = SOLUTION_OPEN.match(line)
            if match:
                closing = match["fence"]
                continue
            kept.append(line)
        elif line.strip() == closing:
            closing = None
    if closing is not None:
        raise ValueError(f"a {{solution}} block opened with {closing} is never closed")
    return re.sub(r"\n{3,}", "\n\n", "".join(kept)).strip("\n")


def stub(source: str, spec: dict) -> str:
    """The student version of a ``your-turn`` cell: its first ``keep`` lines, then a raise with the hint."""
    if not isinstance(spec, dict) or not isinstance(spec.get("hint"), str) or not spec["hint"]:
        raise ValueError(f"a '{TAG}' cell needs metadata your_turn = {{'hint': str, 'keep': int}}, got {spec!r}")
    keep = spec.get("keep", 0)
    if not isinstance(keep, int) or keep < 0:
        raise ValueError(f"your_turn['keep'] must be an int >= 0, got {keep!r}")
    lines = source.splitlines()[:keep]
    indent = re.match(r"\s*", lines[-1]).group() if lines else ""
    if lines and lines[-1].rstrip().endswith(":"):
        indent += "    "
    hint = spec["hint"]
    # The hint, wrapped to the code-line width as adjacent string literals (Python joins them).
    parts = textwrap.wrap(f"Your turn: {hint}", width=MAX_LINE - len(indent) - 8, drop_whitespace=False)
    body = [
        f"{indent}# Your turn: write your code here, in place of the raise.",
        f"{indent}raise NotImplementedError(",
        *(f"{indent}    {part!r}" for part in parts),
        f"{indent})",
    ]
    return "\n".join([*lines, *body])


def student_copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of one notebook (the argument is not changed)."""
    result = copy.deepcopy(notebook)
    cells, in_span = [], False
    for cell in result.cells:
        text = cell.source
        if in_span:
            in_span = not (cell.cell_type == "markdown" and SPAN_END.search(text))
            continue
        if cell.cell_type == "markdown" and SPAN_START.search(text):
            in_span = not SPAN_END.search(text)
            continue
        if cell.cell_type == "markdown":
            cell.source = strip_solutions(text)
        elif cell.cell_type == "code":
            if TAG in cell.metadata.get("tags", []):
                cell.source = stub(text, cell.metadata.get("your_turn"))
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    if in_span:
        raise ValueError("a {solution-start} span is never closed by {solution-end}")
    banner = nbformat.v4.new_markdown_cell(BANNER)
    banner.id = "student-copy-note"  # fixed, so the copies do not change from run to run
    result.cells = [banner, *cells]
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--output", type=Path, default=ROOT / "student")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    args.output.mkdir(parents=True, exist_ok=True)
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        copy_ = student_copy(notebook)
        stubs = sum(TAG in c.metadata.get("tags", []) for c in notebook.cells if c.cell_type == "code")
        nbformat.write(copy_, args.output / path.name)
        print(f"{args.output.name}/{path.name}: {stubs} your-turn cell(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
