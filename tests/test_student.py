"""The student copies written by `make student` (tests/tools/make_student.py)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import make_student  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXERCISE = "````{exercise}\n:label: ex-1\nAdd two numbers.\n````\n"
SOLUTION = "````{solution} ex-1\n:class: dropdown\n```python\nprint(1 + 2)\n```\nThe sum is 3.\n````\n"


def notebook(*cells) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=list(cells))


def your_turn(source: str, **spec) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["your-turn"]
    cell.metadata["your_turn"] = spec
    return cell


def test_solution_blocks_go_and_exercises_stay():
    text = "## Exercises\n\n" + EXERCISE + "\n" + SOLUTION + "\nAfter."
    result = make_student.strip_solutions(text)
    assert "{exercise}" in result and "Add two numbers." in result and "After." in result
    assert "{solution}" not in result and "The sum is 3." not in result and "print(1 + 2)" not in result


def test_an_unclosed_solution_block_is_an_error():
    with pytest.raises(ValueError, match="never closed"):
        make_student.strip_solutions("````{solution} ex-1\nThe sum is 3.\n")


def test_a_solution_span_of_cells_is_dropped():
    nb = notebook(
        nbformat.v4.new_markdown_cell("Before."),
        nbformat.v4.new_markdown_cell("```{solution-start} ex-1\n```"),
        nbformat.v4.new_code_cell("print(1 + 2)"),
        nbformat.v4.new_markdown_cell("```{solution-end}\n```"),
        nbformat.v4.new_markdown_cell("After."),
    )
    sources = [c.source for c in make_student.student_copy(nb).cells]
    assert sources[1:] == ["Before.", "After."]


def test_a_your_turn_cell_becomes_a_stub_that_raises_with_the_hint():
    source = 'def add(a, b):\n    """Sum of a and b."""\n    return a + b'
    check = nbformat.v4.new_code_cell("assert add(1, 2) == 3")
    nb = notebook(your_turn(source, keep=2, hint="return the sum"), check)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="x")]
    copy = make_student.student_copy(nb)
    stub = copy.cells[1]
    assert stub.source.startswith(source.splitlines()[0]) and "return a + b" not in stub.source
    assert stub.outputs == [] and stub.execution_count is None
    namespace: dict = {}
    exec(stub.source, namespace)
    with pytest.raises(NotImplementedError, match="return the sum"):
        namespace["add"](1, 2)
    assert "return a + b" in nb.cells[0].source  # the solution notebook is unchanged


def test_a_your_turn_cell_without_a_hint_is_an_error():
    with pytest.raises(ValueError, match="your_turn"):
        make_student.student_copy(notebook(your_turn("x = 1", keep=0)))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_course_student_copies_hold_no_solution_text(path, tmp_path):
    assert make_student.main([str(path), "--output", str(tmp_path)]) == 0
    original = nbformat.read(path, as_version=4)
    copy = nbformat.read(tmp_path / path.name, as_version=4)
    solution_lines = set()
    for cell in original.cells:
        if cell.cell_type == "markdown":
            blocks = re.finditer(r"^(`{3,}|:{3,})\{solution\}(.*?)^\1\s*$", cell.source, re.MULTILINE | re.DOTALL)
            for match in blocks:
                solution_lines |= {line.strip() for line in match[2].splitlines() if len(line.strip()) > 30}
    code = "\n".join(c.source for c in original.cells if c.cell_type == "code")
    solution_lines = {line for line in solution_lines if line not in code}  # the lesson's own code may recur
    student_text = "\n".join(c.source for c in copy.cells)
    assert solution_lines, "every chapter has solved exercises"
    assert "{solution" not in student_text
    assert not [line for line in solution_lines if line in student_text]
    assert student_text.count("{exercise}") == "\n".join(c.source for c in original.cells).count("{exercise}")
    assert all(c.outputs == [] for c in copy.cells if c.cell_type == "code")
