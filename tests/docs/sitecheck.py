"""Open the built documentation site in headless Chromium and check what a reader sees.

    python tests/docs/sitecheck.py [SITE_DIR] [SCREENSHOT_DIR]

Serves SITE_DIR (default ``site``) with ``python -m http.server --bind 127.0.0.1`` and
drives Chromium through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
no port, no websocket, no browser download). It checks that the home page, a how-to and
the ``SecureSession`` API page render with their navigation, that the client-side search
finds ``TLSProfile``, and that no page throws a JavaScript error; it saves a screenshot
of each under SCREENSHOT_DIR (default ``build/docs``). Exit code 0 when every check
passes, 1 otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)
WIDTH, HEIGHT = 1280, 900


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class ProtocolError(RuntimeError):
    pass


class Browser:
    """A headless Chromium driven over ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self, executable: str, profile: Path, log: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:  # in the child, before exec: the pipe ends as fds 3, 4
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            pass_fds=(3, 4),
            preexec_fn=wire_fds,  # no threads in this process
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        with contextlib.suppress(ProtocolError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ProtocolError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def _receive(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProtocolError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise ProtocolError("Chromium closed the DevTools pipe (did it crash?)")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(raw)
        return parsed


class Tab:
    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session)

    def open(self, url: str) -> None:
        self.browser.events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))

    def errors(self) -> list[str]:
        """JavaScript exceptions and console errors since the last :meth:`open`."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append(details.get("exception", {}).get("description") or str(details))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(params["entry"].get("text", ""))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(" ".join(str(a.get("value", "")) for a in params.get("args", [])))
        return found


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """``python -m http.server --bind 127.0.0.1`` on a free port; yields its base URL."""
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        cwd=site,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"port (\d+)", line)
        if not match:
            raise RuntimeError(f"http.server did not start: {line!r}")
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        server.terminate()
        server.wait(timeout=10)


# What the nav of every page must hold: the site's sections.
NAV_SECTIONS = ("Getting started", "How-to", "API reference", "Troubleshooting")

NAV_JS = """(() => {
  const nav = document.querySelector('nav.md-nav--primary');
  if (!nav) return null;
  const links = [...nav.querySelectorAll('.md-nav__link')].map(a => a.textContent.trim());
  const active = [...nav.querySelectorAll('a.md-nav__link--active')]
      .map(a => a.textContent.trim());
  const visible = nav.getBoundingClientRect().width > 100;
  return {links, active, visible};
})()"""

SEARCH_JS = """(() => {
  const items = [...document.querySelectorAll('.md-search-result__item a')];
  if (!items.length) return null;
  return items.map(a => ({href: a.href, text: a.textContent.trim().slice(0, 120)}));
})()"""


class Checks:
    def __init__(self, tab: Tab, base: str, shots: Path) -> None:
        self.tab, self.base, self.shots = tab, base, shots
        self.failures: list[str] = []
        self.passed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        (self.passed if ok else self.failures).append(f"{name}{': ' + detail if detail else ''}")
        print(f"  {'ok  ' if ok else 'FAIL'} {name}{'  (' + detail + ')' if detail else ''}")

    def page(
        self,
        label: str,
        path: str,
        *,
        h1: str,
        active: str | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        tab = self.tab
        start = time.monotonic()
        tab.open(self.base + path)
        title = tab.evaluate("document.querySelector('article h1')?.textContent.trim()")
        self.check(f"{label}: heading {h1!r}", bool(title) and h1 in title, repr(title))
        nav = tab.wait_for(NAV_JS)
        links = nav["links"] if nav else []
        missing = [s for s in NAV_SECTIONS if s not in links]
        self.check(
            f"{label}: navigation shows {', '.join(NAV_SECTIONS)}",
            bool(nav) and nav["visible"] and not missing,
            f"missing {missing}" if missing else f"{len(links)} links",
        )
        if active is not None:
            shown = nav["active"] if nav else []
            self.check(f"{label}: navigation marks {active!r} current", active in shown, str(shown))
        for what, expression in (extra or {}).items():
            value = tab.wait_for(expression, timeout=5)
            self.check(f"{label}: {what}", bool(value), repr(value)[:120])
        errors = tab.errors()
        self.check(f"{label}: no JavaScript error", not errors, "; ".join(errors)[:300])
        shot = self.shots / f"{path.strip('/').replace('/', '-') or 'home'}.png"
        tab.screenshot(shot)
        print(f"       screenshot {shot} ({time.monotonic() - start:.1f} s)")

    def search(self, term: str, expected_href: str) -> None:
        """Search for *term*; a result's URL must match the regular expression
        *expected_href* (Material adds ``?h=term`` to highlight it on the page)."""
        tab = self.tab
        tab.open(f"{self.base}/?q={term}")
        results = tab.wait_for(SEARCH_JS, timeout=30)
        hrefs = [r["href"] for r in results or []]
        self.check(
            f"search {term!r}: results shown",
            bool(results),
            f"{len(hrefs)} results" if results else "none",
        )
        self.check(
            f"search {term!r}: a result links to {expected_href}",
            any(re.search(expected_href, href) for href in hrefs),
            ", ".join(h.removeprefix(self.base) for h in hrefs[:5]),
        )
        errors = tab.errors()
        self.check(f"search {term!r}: no JavaScript error", not errors, "; ".join(errors)[:300])
        shot = self.shots / f"search-{term}.png"
        tab.screenshot(shot)
        print(f"       screenshot {shot}")


def run(site: Path, shots: Path, chromium: str) -> int:
    if not (site / "index.html").is_file():
        print(f"sitecheck: {site}/index.html does not exist: build the site first")
        return 1
    shots.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (
        serve(site) as base,
        tempfile.TemporaryDirectory(prefix="sitecheck-profile-") as profile,
    ):
        browser = Browser(chromium, Path(profile), shots / "chromium.log")
        try:
            checks = Checks(Tab(browser), base, shots)
            print(f"sitecheck: {site} at {base}, {chromium}")
            _all_checks(checks)
        finally:
            browser.close()
    print(
        f"sitecheck: {len(checks.passed)} passed, {len(checks.failures)} failed "
        f"in {time.monotonic() - started:.1f} s"
    )
    return 1 if checks.failures else 0


def _all_checks(checks: Checks) -> None:
    has: Callable[[str], str] = lambda selector: f"!!document.querySelector({selector!r})"  # noqa: E731
    checks.page(
        "home",
        "/",
        h1="securesession",
        active=None,
        extra={"links to Getting started": has("article a[href$='getting-started/']")},
    )
    checks.page(
        "how-to",
        "/how-to/add-a-service/",
        h1="Add a service",
        active="Add a service",
        extra={"shows its commands": has("article pre code")},
    )
    checks.page(
        "API page",
        "/reference/session/",
        h1="SecureSession",
        active="SecureSession",
        extra={
            "renders SecureSession's docstring": (
                "document.getElementById('securesession.SecureSession')"
                "?.closest('.doc-object')?.textContent.includes('requests.Session') || false"
            ),
            "renders its signature": has(".doc-signature"),
            "lists its members in the table of contents": (
                "[...document.querySelectorAll('.md-nav--secondary a')]"
                ".some(a => a.textContent.includes('send'))"
            ),
        },
    )
    checks.search("TLSProfile", r"/reference/tls/(\?[^#]*)?#securesession\.TLSProfile$")


def main(argv: list[str]) -> int:
    site = Path(argv[1]) if len(argv) > 1 else Path("site")
    shots = Path(argv[2]) if len(argv) > 2 else Path("build/docs")
    chromium = os.environ.get("CHROMIUM") or find_chromium()
    if chromium is None:
        print("sitecheck: no chromium found (apt-get install chromium)")
        return 1
    return run(site.resolve(), shots.resolve(), chromium)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
