"""The install files agree: pyproject.toml, constraints.txt, environment.yml, Makefile."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"constraints.txt: {line!r} is not 'name==version'"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    reqs += [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]
    return reqs


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_constraints_are_exact_pins():
    pins = _constraints()
    assert pins, "constraints.txt is empty"
    assert "mmutils" not in pins, "constraints.txt must not pin the course package itself"
    assert "file://" not in (ROOT / "constraints.txt").read_text()


@pytest.mark.parametrize("req", _requirements(), ids=lambda r: r.name)
def test_dependency_pinned_and_allowed(req):
    pins = _constraints()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} (pyproject.toml) is not pinned in constraints.txt"
    assert req.specifier.contains(pins[name], prereleases=True), (
        f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's range {req.specifier}"
    )


@pytest.mark.parametrize(
    "name, version",
    [("torch", "2.14.1"), ("torchvision", "0.29.1"), ("jupyter-book", "1.0.4.post1")],
)
def test_key_pins(name, version):
    assert _constraints().get(name) == version


def test_environment_yml_installs_the_tested_set():
    env = _environment()
    assert env["name"] == "cross-modal-learning"
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    assert "pip" in deps
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs one pip section"
    pip = [" ".join(str(x).split()) for x in pip_sections[0]]
    assert "-c constraints.txt" in pip
    assert "-e .[dev]" in pip


def test_environment_python_matches_requires_python():
    pythons = [d for d in _environment()["dependencies"] if isinstance(d, str) and re.match(r"python\b", d)]
    assert len(pythons) == 1, f"environment.yml should name python once: {pythons}"
    version = pythons[0].split("=", 1)[1].lstrip("=")
    assert re.fullmatch(r"3\.\d+", version), f"pin python to a minor version, got {pythons[0]!r}"
    requires = SpecifierSet(PROJECT["requires-python"])
    assert requires.contains(Version(version + ".0")), f"python={version} is outside requires-python {requires}"


def test_makefile_installs_the_tested_set():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -c constraints.txt -e '.[dev]'" in makefile
    assert "ipykernel install --sys-prefix --name python3" in makefile
