"""The website builds with warnings as errors, and loads nothing from a CDN."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"
CDN_HOSTS = ("cdn.jsdelivr", "cdnjs", "unpkg")
SCRIPT_SRC = re.compile(r"<script\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Build the book once into a temporary folder; return (result, html folder)."""
    out = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        [str(JUPYTER_BOOK), "build", str(ROOT), "--path-output", str(out),
         "-W", "-n", "--keep-going", "--all"],
        capture_output=True, text=True, timeout=1200,
    )
    return result, out / "_build" / "html"


def _pages(html: Path) -> list[Path]:
    return sorted(html.rglob("*.html"))


def test_build_succeeds_without_warnings(build):
    result, html = build
    assert result.returncode == 0, (
        f"jupyter-book build failed (rc {result.returncode}):\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    assert (html / "index.html").is_file()


def test_no_cdn_scripts(build):
    _, html = build
    assert _pages(html), "no pages were built"
    offenders = [
        f"{page.relative_to(html)}: {src}"
        for page in _pages(html)
        for src in SCRIPT_SRC.findall(page.read_text(encoding="utf-8"))
        if any(host in src for host in CDN_HOSTS) or re.match(r"(https?:)?//", src)
    ]
    assert not offenders, "scripts loaded from outside the site:\n" + "\n".join(offenders)


def test_mathjax_is_served_locally(build):
    _, html = build
    found = 0
    for page in _pages(html):
        for src in SCRIPT_SRC.findall(page.read_text(encoding="utf-8")):
            if "mathjax" not in src.lower():
                continue
            found += 1
            assert not re.match(r"([a-z]+:)?//", src), f"{page.name}: MathJax from {src}"
            target = (page.parent / src.split("?", 1)[0]).resolve()
            assert target.is_file(), f"{page.name}: MathJax script {src} is not in the build"
    assert found, "no page loads MathJax (the glossary has math, so at least it should)"
    assert any((html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff")), (
        "MathJax fonts are missing from the build"
    )
