"""Hygiene of the notebooks and the table of contents (DESIGN sections 3, 5 and 7).

Each notebook is stored executed in order, without errors or widget output, is
small, follows the chapter anatomy, holds no absolute paths, and is listed in
_toc.yml; _toc.yml names no missing file.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MAX_BYTES = int(1.5 * 1024 * 1024)

# The chapters of DESIGN section 3: numbers and slugs are fixed.
CHAPTERS = [
    "00_shapesworld",
    "01_modality_encoders",
    "02_fusion_strategies",
    "03_image_captioning",
    "04_image_text_matching",
    "05_visual_question_answering",
    "06_text_to_image",
    "07_image_to_image",
    "08_text_to_image_sequences",
    "09_contrastive_clip",
    "10_moco",
    "11_simcse",
    "12_multi_objective_pretraining",
    "13_data_augmentation",
    "14_knowledge_distillation",
    "15_multi_task_learning",
    "16_retrieval_and_assistant",
    "17_video_understanding",
    "18_scaling_out",
]

WIDGET_MIMES = (
    "application/vnd.jupyter.widget-view+json",
    "application/vnd.jupyter.widget-state+json",
)
ABSOLUTE_PATH = re.compile(r"/home/|/work/|/root/|/Users/|(?<!\w)C:\\")
HEADING = r"^#{1,6}\s+%s\b"
DIRECTIVE = r"^\s*(?:`{3,}|:{3,})\{%s\}"


def _params():
    return [pytest.param(p, id=p.stem) for p in NOTEBOOKS]


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _markdown(nb) -> str:
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _code(nb) -> str:
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "code")


def _output_texts(nb):
    """(cell index, text) for every textual output; images are skipped."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if "text" in out:
                yield i, out["text"]
            if out.get("output_type") == "error":
                yield i, "\n".join(out.get("traceback", []))
            for mime, value in out.get("data", {}).items():
                if mime.startswith("image/") and mime != "image/svg+xml":
                    continue
                yield i, value if isinstance(value, str) else str(value)


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def _resolve_toc_entry(entry: str) -> Path | None:
    path = ROOT / entry
    if path.suffix in (".md", ".ipynb") and path.is_file():
        return path
    for suffix in (".md", ".ipynb"):
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _bib_keys() -> set[str]:
    text = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    return set(re.findall(r"^@\w+\{([^,\s]+),", text, flags=re.MULTILINE))


# ---------------------------------------------------------------- table of contents


def test_toc_names_no_missing_file():
    missing = [f for f in _toc_files() if _resolve_toc_entry(f) is None]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"


def test_toc_entries_are_unique():
    files = _toc_files()
    assert len(files) == len(set(files)), f"_toc.yml lists a file twice: {files}"


# ---------------------------------------------------------------- every notebook


@pytest.mark.parametrize("path", _params())
def test_name_matches_chapter_table(path):
    assert path.stem in CHAPTERS, (
        f"{path.name}: notebook names are NN_slug from DESIGN section 3, one of {CHAPTERS}"
    )


@pytest.mark.parametrize("path", _params())
def test_listed_in_toc(path):
    listed = {_resolve_toc_entry(f) for f in _toc_files()}
    assert path in listed, f"{path.name} is not listed in _toc.yml"


@pytest.mark.parametrize("path", _params())
def test_valid_and_small(path):
    nbformat.validate(_read(path))
    size = path.stat().st_size
    assert size <= MAX_BYTES, f"{path.name} is {size / 1024**2:.2f} MB > 1.5 MB: shrink figures (dpi 80-100)"


@pytest.mark.parametrize("path", _params())
def test_kernel_is_python3(path):
    spec = _read(path).metadata.get("kernelspec", {})
    assert spec.get("name") == "python3", f"{path.name}: kernelspec name is {spec.get('name')!r}, expected 'python3'"


@pytest.mark.parametrize("path", _params())
def test_stored_executed_in_order(path):
    nb = _read(path)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert counts, f"{path.name} has no code cells"
    expected = list(range(1, len(counts) + 1))
    assert counts == expected, (
        f"{path.name}: execution counts {counts} are not 1..{len(counts)}; "
        "re-run it top to bottom in a fresh kernel (make execute)"
    )


@pytest.mark.parametrize("path", _params())
def test_no_error_outputs(path):
    nb = _read(path)
    errors = [
        i for i, c in enumerate(nb.cells)
        for out in c.get("outputs", []) if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error output in cells {errors}"


@pytest.mark.parametrize("path", _params())
def test_no_widget_outputs(path):
    nb = _read(path)
    assert "widgets" not in nb.metadata, f"{path.name}: notebook metadata holds widget state"
    bad = [
        i for i, c in enumerate(nb.cells)
        for out in c.get("outputs", [])
        if any(m in out.get("data", {}) for m in WIDGET_MIMES)
    ]
    assert not bad, f"{path.name}: widget output in cells {bad}; use plain tqdm, not tqdm.auto/notebook"


PLOT_CALL = re.compile(r"\bplt\.(?:show|subplots|figure|imshow|plot|bar)\b|\bmm\.plot\.\w+\(|\bax(?:es)?\b[\w\[\], ]*\.(?:imshow|plot|bar)\(")


@pytest.mark.parametrize("path", _params())
def test_cells_that_plot_store_an_image(path):
    """A figure closed before display, or suppressed by a trailing ';', leaves the website without it."""
    nb = _read(path)
    silent = [
        i for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and PLOT_CALL.search(c.source)
        and not any("image/png" in out.get("data", {}) for out in c.get("outputs", []))
    ]
    assert not silent, f"{path.name}: cells {silent} draw a figure but store no image"


@pytest.mark.parametrize("path", _params())
def test_no_absolute_paths(path):
    nb = _read(path)
    where = [i for i, c in enumerate(nb.cells) if ABSOLUTE_PATH.search(c.source)]
    where += [i for i, text in _output_texts(nb) if ABSOLUTE_PATH.search(text)]
    assert not where, f"{path.name}: absolute paths in cells {sorted(set(where))}"


@pytest.mark.parametrize("path", _params())
def test_objectives_and_runtime_note(path):
    md = _markdown(_read(path))
    assert "You will learn" in md, f"{path.name}: no 'You will learn' objectives"
    assert re.search(r"Runs in about \d+ s", md), f"{path.name}: no 'Runs in about N s' runtime note"


@pytest.mark.parametrize("path", _params())
@pytest.mark.parametrize("heading", ["Summary", "Exercises", "References"])
def test_closing_sections(path, heading):
    md = _markdown(_read(path))
    assert re.search(HEADING % heading, md, flags=re.MULTILINE), f"{path.name}: no '{heading}' heading"


@pytest.mark.parametrize("path", _params())
def test_exercises_have_solutions(path):
    md = _markdown(_read(path))
    exercises = re.findall(DIRECTIVE % "exercise", md, flags=re.MULTILINE)
    assert len(exercises) >= 3, f"{path.name}: {len(exercises)} {{exercise}} directives, expected at least 3"
    labels = re.findall(
        r"\{exercise\}[^\n]*\n(?:[ \t]*:[\w-]+:[^\n]*\n)*?[ \t]*:label:\s*(\S+)", md
    )
    targets = re.findall(r"\{solution(?:-start)?\}\s*(\S+)", md)  # a block, or a span of cells
    assert len(labels) == len(exercises), f"{path.name}: every {{exercise}} needs a :label:"
    assert sorted(targets) == sorted(labels), (
        f"{path.name}: exercises {sorted(labels)} and solutions {sorted(targets)} do not pair up"
    )
    blocks = re.findall(r"\{solution(?:-start)?\}[^\n]*\n((?:[ \t]*:[\w-]+:[^\n]*\n)*)", md)
    assert all(":class: dropdown" in b for b in blocks), f"{path.name}: solutions go in dropdowns (:class: dropdown)"


@pytest.mark.parametrize("path", _params())
def test_references_cite_the_bibliography(path):
    md = _markdown(_read(path))
    match = re.search(HEADING % "References", md, flags=re.MULTILINE)
    assert match, f"{path.name}: no 'References' heading"
    tail = md[match.end():]
    assert "{cite" in tail or "{bibliography}" in tail, f"{path.name}: References use no {{cite}} or {{bibliography}}"
    keys = {
        k.strip()
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", md)
        for k in group.split(",")
    }
    unknown = sorted(keys - _bib_keys())
    assert not unknown, f"{path.name}: cites keys missing from book/references.bib: {unknown}"


@pytest.mark.parametrize("path", _params())
def test_conventions(path):
    code = _code(_read(path))
    assert re.search(r"^import mmutils as mm\b", code, flags=re.MULTILINE), f"{path.name}: no 'import mmutils as mm'"
    assert "mm.seed_everything(" in code, f"{path.name}: no mm.seed_everything(...) cell"


def _readme_row(stem: str) -> str | None:
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("|") and f"(notebooks/{stem}.ipynb)" in line:
            return line
    return None


@pytest.mark.parametrize("path", _params())
def test_readme_chapter_map_lists_the_notebook_with_its_runtime(path):
    row = _readme_row(path.stem)
    assert row, f"README.md's chapter map has no row linking notebooks/{path.name}"
    runtime = row.rstrip(" |").rsplit("|", 1)[-1]
    assert re.search(r"\d+\s*s\b", runtime), f"README.md row of {path.name} gives no runtime in seconds: {row!r}"


@pytest.mark.parametrize("path", _params())
def test_intro_chapter_map_marks_the_notebook_available(path):
    number = path.stem.split("_", 1)[0]
    rows = [line for line in (ROOT / "book" / "intro.md").read_text().splitlines()
            if re.match(rf"^\|[^|]*\|\s*{number}\s", line)]
    assert rows, f"book/intro.md's chapter map has no row for chapter {number}"
    assert rows[0].rstrip(" |").rsplit("|", 1)[-1].strip() == "yes", \
        f"book/intro.md marks chapter {number} as not available: {rows[0]!r}"


def test_intro_chapter_map_marks_only_existing_chapters_available():
    stems = {p.stem.split("_", 1)[0] for p in NOTEBOOKS}
    for line in (ROOT / "book" / "intro.md").read_text().splitlines():
        match = re.match(r"^\|[^|]*\|\s*(\d\d)\s", line)
        if match and line.rstrip(" |").rsplit("|", 1)[-1].strip() == "yes":
            assert match.group(1) in stems, f"book/intro.md marks chapter {match.group(1)} available, " \
                                            f"but notebooks/ has no such notebook"


MAX_CODE_LINE = 100  # characters: a code line of the website fits the page without scrolling


@pytest.mark.parametrize("path", _params())
def test_code_lines_fit_the_page(path):
    long = [
        f"cell {i}: {line[:60]}..."
        for i, cell in enumerate(_read(path).cells)
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if len(line) > MAX_CODE_LINE
    ]
    assert not long, f"{path.name}: code lines over {MAX_CODE_LINE} characters: {long}"


@pytest.mark.parametrize("path", _params())
def test_a_your_turn_cell_with_a_check(path):
    """At least one code cell is left to the student (tests/tools/make_student.py), and a later code cell asserts."""
    cells = _read(path).cells
    turns = [i for i, c in enumerate(cells) if "your-turn" in c.metadata.get("tags", [])]
    assert turns, f"{path.name}: no code cell tagged 'your-turn'"
    for i in turns:
        assert cells[i].cell_type == "code", f"{path.name}: cell {i} is tagged 'your-turn' but is not code"
        later = [c.source for c in cells[i + 1:] if c.cell_type == "code"]
        assert any(re.search(r"^\s*(?:assert\b|torch\.testing\.assert_close)", s, flags=re.MULTILINE) for s in later[:3]), \
            f"{path.name}: no assert within three code cells after the 'your-turn' cell {i}"


@pytest.mark.parametrize("path", _params())
def test_a_predict_then_run_exercise(path):
    md = _markdown(_read(path))
    exercises = re.findall(r"\{exercise\}.*?\n(?:`{3,}|:{3,})\s*$", md, flags=re.MULTILINE | re.DOTALL)
    assert any("Predict, then run" in e for e in exercises), \
        f"{path.name}: no exercise asks the reader to predict before running (\"Predict, then run\")"

