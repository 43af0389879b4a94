"""The layering of mmutils: each module imports only modules of earlier layers, so the package has no cycle.

The layers, earliest first. A module may import a module of
an earlier group only; a family module (the last group) never imports another one.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmutils"

LAYERS = [
    {"checks"},
    {"runtime"},
    {"world.scenes"}, {"world.rendering"}, {"world.language"}, {"world.qa"}, {"world.motion"},
    {"world.audio"}, {"world.labels"}, {"world.perturb"}, {"world.texts"},
    {"world", "train", "text", "augment"},
    {"data", "metrics", "plot"},
    {"nn.layers", "nn.losses"},
    {"nn.encoders"},
    {"nn.fusion"},
    {"nn"},
    {"probes", "keras_port", "captioning", "matching", "vqa", "clip", "moco", "simcse", "pretraining",
     "distributed", "retrieval", "video", "generation", "autoregressive", "layout", "editing", "animation", "distill", "multitask"},
]
LAYER_OF = {name: i for i, group in enumerate(LAYERS) for name in group}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(name: str, path: Path) -> list[str]:
    parts = name.split(".") if name else []
    return parts if path.name == "__init__.py" else parts[:-1]


def _imports(path: Path) -> set[str]:
    """The mmutils modules that ``path`` imports, anywhere in the file (lazy imports included)."""
    name = _module_name(path)
    package = _package_of(name, path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("mmutils"):
                    continue
                base = node.module.split(".")[1:]
            else:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                candidate = ".".join(base + [alias.name])
                found.add(candidate if candidate in LAYER_OF else ".".join(base))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mmutils."):
                    found.add(alias.name.split(".", 1)[1])
    return {m for m in found if m and m != name}


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _module_name(p))


def test_every_module_has_a_layer():
    names = {_module_name(p) for p in MODULES}
    assert names == set(LAYER_OF), (f"modules without a layer: {sorted(names - set(LAYER_OF))}; "
                                    f"layers naming no module: {sorted(set(LAYER_OF) - names)}")


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_imports_only_earlier_layers(path):
    name = _module_name(path)
    bad = sorted(m for m in _imports(path) if LAYER_OF.get(m, len(LAYERS)) >= LAYER_OF[name])
    assert not bad, f"mmutils.{name} (layer {LAYER_OF[name]}) imports {bad}, which are not in an earlier layer"


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_module_docstring_opens_with_one_sentence(path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc, f"mmutils.{_module_name(path)} has no module docstring"
    first = doc.split("\n\n")[0]
    assert first.rstrip().endswith(".") and first.count(". ") == 0, \
        f"mmutils.{_module_name(path)}: the docstring should open with one sentence, got {first!r}"


def test_no_private_argument_checkers():
    """Argument checks live in mmutils.checks; no module keeps its own int/float checker."""
    offenders = []
    for path in MODULES:
        if _module_name(path) == "checks":
            continue
        text = path.read_text()
        if re.search(r"isinstance\([\w.\[\]]+, bool\) or not isinstance|def _check_int\b", text):
            offenders.append(_module_name(path))
    assert not offenders, f"private argument checkers in {offenders}: use mmutils.checks"
