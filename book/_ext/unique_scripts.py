"""Sphinx extension: load each script of a page once.

sphinx-thebe registers its inline configuration script (``const THEBE_JS_URL = ...``)
each time Sphinx fires ``env-before-read-docs``, which a Jupyter Book build does
twice. The second copy redeclares a ``const`` and the browser logs
"Identifier 'THEBE_JS_URL' has already been declared" on every page. This
extension drops repeated entries from the page's script list before the page is
written. ``make site-check`` verifies that pages log no console error.
"""
from __future__ import annotations


def _key(script) -> tuple:
    """What makes two script entries the same: file name and attributes (an inline one's body)."""
    filename = getattr(script, "filename", script) or ""  # an inline script has "" or None
    attributes = getattr(script, "attributes", {})
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of each identical script entry in ``context["script_files"]``."""
    seen: set[tuple] = set()
    unique = []
    for script in context.get("script_files", []):
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
