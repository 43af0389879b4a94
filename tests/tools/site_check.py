"""Open every page of the built website in headless Chromium; fail on any browser console error.

Usage: python tests/tools/site_check.py [--site _build/html] [--browser PATH] [--shots DIR]
Used by `make site-check` (after `make book`).

The site is served on localhost; each page is loaded by Chromium with its
console logged to stderr, and a screenshot is saved (default
_build/site-check/). A console message counts as an error when it is an
uncaught exception, an error logged by a script, or a resource that failed to
load (the site must load everything from itself, with no network). Needs a
Chromium or Chrome binary: on Debian or Ubuntu `apt-get install chromium`, on
macOS Google Chrome. Exits non-zero if any page logs an error.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome",
            "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")
# Chromium's own network stays off: the machine may have no network at all.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,1000", "--virtual-time-budget=5000",
         "--enable-logging=stderr", "--v=0")
CONSOLE = re.compile(r':CONSOLE[^\]]*\] "(?P<message>.*)", source: (?P<source>\S*)')
ERROR = re.compile(r"Uncaught|Error|Failed to load|net::ERR_")


def find_browser(name: str | None) -> str:
    """Path of the browser to use: the one named, or the first known one on PATH."""
    for candidate in ([name] if name else BROWSERS):
        path = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if path:
            return path
    sys.exit("site-check needs Chromium or Chrome: install it (Debian/Ubuntu: apt-get install chromium) "
             "or name it with --browser PATH")


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    """Serve ``site`` on a free localhost port, in a background thread."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log on the terminal
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # the browser closed a connection early
        pass


def console_errors(browser: str, url: str, screenshot: Path) -> list[str]:
    """Load ``url``; return the console messages that are errors. Saves a screenshot."""
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}", url],
            capture_output=True, text=True, timeout=120)
    return [f"{m['message']} ({m['source']})" for m in CONSOLE.finditer(run.stderr) if ERROR.search(m["message"])]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--browser")
    parser.add_argument("--shots", type=Path, default=ROOT / "_build" / "site-check")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        sys.exit(f"no built site in {args.site}: run `make book` first")
    browser = find_browser(args.browser)
    pages = sorted(p.relative_to(args.site) for p in args.site.rglob("*.html")
                   if not p.relative_to(args.site).parts[0].startswith("_"))
    args.shots.mkdir(parents=True, exist_ok=True)
    server, port = serve(args.site)
    failed = 0
    try:
        for page in pages:
            shot = args.shots / (str(page.with_suffix("")).replace("/", "__") + ".png")
            errors = console_errors(browser, f"http://127.0.0.1:{port}/{page.as_posix()}", shot)
            print(f"{page}: " + ("ok" if not errors else f"{len(errors)} console error(s)"), flush=True)
            for error in errors:
                print(f"    {error}")
            failed += bool(errors)
    finally:
        server.shutdown()
    print(f"{len(pages)} pages, {failed} with console errors; screenshots in {args.shots}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
