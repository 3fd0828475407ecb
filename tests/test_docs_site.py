"""The documentation site, tested the way a student reads it.

The site is built with ``mkdocs build --strict`` (a broken link, a missing page or a missing image fails the build)
into a temporary folder, served over HTTP, and every page is opened in headless Chromium driven over the DevTools
protocol (``--remote-debugging-pipe``: no extra package): each page must load with no console error, no uncaught
exception and no failed request, every ``<img>`` must have loaded (``naturalWidth > 0``), and every internal link must
resolve to a file of the site and, when it has a fragment, to an element of the target page with that id.

The CLI reference is generated from the experiments' Configs: a test changes a flag's help and sees the reference
change.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import types
import urllib.parse
from pathlib import Path

import pytest
from conftest import chromium, need

ROOT = Path(__file__).resolve().parents[1]
DOCS_EXTRA = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "latex2mathml")


def _docs_extra_installed() -> bool:
    return all(importlib.util.find_spec(name.split(".")[0]) is not None for name in DOCS_EXTRA)


def _hook():
    """docs/hooks/cli_reference.py as a module (what MkDocs loads)."""
    spec = importlib.util.spec_from_file_location("dl1_docs_cli_reference", ROOT / "docs" / "hooks" /
                                                  "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    need("the docs extra (mkdocs, mkdocs-material, mkdocstrings, latex2mathml)", _docs_extra_installed())
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out


def _pages(site: Path) -> list[str]:
    """Every HTML page of the site as a path relative to its root ("" for the home page)."""
    pages = []
    for page in sorted(site.rglob("*.html")):
        relative = page.relative_to(site).as_posix()
        if relative.startswith(("assets/", "search/")):
            continue
        pages.append(relative[: -len("index.html")] if relative.endswith("index.html") else relative)
    return pages


def _high(fd: int) -> int:
    """``fd`` moved to a number >= 10, so that bash's ``3<&N 4>&M`` can never overwrite one pipe with the other
    (pytest's output capture leaves the low numbers free, and a pipe may get 3 or 4)."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """Headless Chromium over the DevTools protocol on a pipe (fd 3: commands in, fd 4: replies and events out,
    each message JSON ending in a NUL byte)."""

    def __init__(self, executable: str, profile: Path):
        to_browser_r, self._to_browser = (_high(fd) for fd in os.pipe())
        self._from_browser, from_browser_w = (_high(fd) for fd in os.pipe())
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-extensions", f"--user-data-dir={profile}", "about:blank"]
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", executable, *flags],
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session = None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for i, seen in enumerate(self.events):
            if seen.get("method") == event:
                return self.events.pop(i)
        while True:
            reply = self._read(deadline)
            if reply.get("method") == event:
                return reply
            self.events.append(reply)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_browser)
        os.close(self._from_browser)


INSPECT = """(async () => {
  await Promise.all([...document.images].map(i => i.complete ? null :
      new Promise(done => { i.addEventListener('load', done); i.addEventListener('error', done); })));
  return {
    title: document.title,
    images: [...document.images].map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    text: document.body.innerText,
  };
})()"""


def _problems(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and failed requests among DevTools events."""
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            out.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            out.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            out.append(f"request failed: {params.get('errorText')}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            out.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
    return out


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test's output clean
        pass


def test_every_page_loads_in_chromium_with_its_images_and_links(site, served, tmp_path):
    executable = chromium()
    need("Chromium", executable is not None)
    pages = _pages(site)
    assert len(pages) >= 25, pages
    browser = Browser(executable, tmp_path / "profile")
    seen: dict[str, dict] = {}
    failures: list[str] = []
    try:
        for page in pages:
            url = served + page
            browser.events.clear()
            browser.call("Page.navigate", {"url": url})
            browser.wait_for("Page.loadEventFired")
            result = browser.call("Runtime.evaluate", {"expression": INSPECT, "awaitPromise": True,
                                                       "returnByValue": True})
            time.sleep(0.05)  # let late console messages of the page arrive
            browser.call("Runtime.evaluate", {"expression": "1"})
            info = result["result"]["value"]
            seen[url] = info
            failures += [f"{page}: {p}" for p in _problems(browser.events)]
            failures += [f"{page}: image not loaded: {i['src']}" for i in info["images"] if i["width"] <= 0]
            if "$$" in info["text"] or "\\frac" in info["text"]:  # an equation left as TeX, not rendered
                failures.append(f"{page}: unrendered TeX")
    finally:
        browser.close()
    assert not failures, "\n".join(failures[:40])
    # every internal link resolves: to a file of the site, and a fragment to an element with that id
    for url, info in seen.items():
        for link in info["links"]:
            if not link.startswith(served):
                continue
            target, _, fragment = link.partition("#")
            path = urllib.parse.unquote(target[len(served):])
            file = site / path / "index.html" if path == "" or path.endswith("/") else site / path
            if not file.is_file():
                failures.append(f"{url}: link to a missing page: {link}")
            elif fragment and target in seen and fragment not in seen[target]["ids"]:
                failures.append(f"{url}: link to a missing anchor: {link}")
    assert not failures, "\n".join(failures[:40])
    # the pages a reader starts from say what they promise
    home = seen[served]
    assert "make demo" in home["text"] and "make test" in home["text"]
    figures = sum(len(info["images"]) for info in seen.values())
    assert figures >= 30, f"only {figures} figures on the whole site"


def test_cli_reference_lists_every_flag_of_every_experiment(site):
    hook = _hook()
    page = (site / "reference" / "cli" / "index.html").read_text()
    for name, _, config_cls, _, _ in hook.experiments_and_configs():
        assert f'id="{name}"' in page, f"no section for {name}"
        for field in dataclasses.fields(config_cls):
            flag = field.metadata.get("flag") or f"--{field.name}"
            assert f"<code>{flag}" in page, f"{name}: {flag} missing from the CLI reference"


def test_cli_reference_changes_when_a_flag_help_changes(monkeypatch):
    hook = _hook()
    entries = {name: config_cls for name, _, config_cls, _, _ in hook.experiments_and_configs()}
    config_cls = entries["mlp-numpy"]
    before = hook.generate()
    field = copy.copy(config_cls.__dataclass_fields__["lr"])
    field.metadata = types.MappingProxyType({**field.metadata, "help": "Step size of SGD, said anew (7f3a).",
                                             "max": 12.5})
    monkeypatch.setitem(config_cls.__dataclass_fields__, "lr", field)
    after = hook.generate()
    assert "said anew (7f3a)" in after and "said anew" not in before
    assert "value ≤ 12.5" in after and "value ≤ 12.5" not in before


def test_every_experiment_has_its_docs_page():
    """``dl1 run NAME --help`` points at docs/parts/NAME.md: every experiment has one, in the site's navigation."""
    hook = _hook()
    nav = (ROOT / "mkdocs.yml").read_text()
    for name, *_ in hook.experiments_and_configs():
        assert (ROOT / "docs" / "parts" / f"{name}.md").is_file(), f"no docs page for {name}"
        assert f"parts/{name}.md" in nav, f"docs/parts/{name}.md is not in the navigation"


def test_every_experiment_help_links_its_docs_page(capsys):
    from dl1.cli import main

    for name, *_ in _hook().experiments_and_configs():
        assert main(["run", name, "--help"]) == 0
        out = capsys.readouterr().out
        assert f"docs: docs/parts/{name}.md" in out and f"/parts/{name}/" in out, out[-400:]
        assert (ROOT / "docs" / "parts" / f"{name}.md").is_file()


def test_tour_help_lists_its_parts_and_budgets(capsys):
    from dl1 import tour

    with pytest.raises(SystemExit) as exit_:
        tour.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for part in tour._parts("shakespeare", None, None):
        assert f"  {part.key} " in out, f"{part.key} missing from dl1 tour --help"
    for budget in tour.BUDGETS:
        assert f"  {budget} " in out
    assert " s in all" in out  # the default budget's measured time
