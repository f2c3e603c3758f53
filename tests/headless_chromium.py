"""A headless Chromium driven over the DevTools protocol, for the dashboard's browser test and screenshots.

Test tooling (tests/test_dashboard_browser.py, benchmarks/dashboard_screenshots.py), not part of the
product: the swarm never drives a browser.

`Chromium()` starts the system's chromium (`find_chromium`: $CHROMIUM, or chromium / chromium-browser /
google-chrome on PATH) headless with a private profile, connects to its DevTools websocket with
aiohttp (no extra dependency) and offers a small synchronous API: `open(url)`, `evaluate(js)`,
`wait_for(js)`, `screenshot(path)`. It also records what a page should never do: JavaScript
dialogs (alert / confirm / prompt) and uncaught exceptions. Not covered: anything a test asserts;
driving more than one page at a time.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")


def find_chromium() -> str | None:
    """The Chromium binary to use: $CHROMIUM, else the first candidate on PATH (None: none)."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


class BrowserError(RuntimeError):
    """The browser did not start, or a page did not do what was waited for."""


class Chromium:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, binary: str | None = None, width: int = 1400, height: int = 900, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise BrowserError("no chromium on PATH (apt-get install chromium)")
        self.width, self.height, self.timeout = width, height, timeout
        self.dialogs: list[str] = []  # messages of JavaScript dialogs the page opened
        self.exceptions: list[str] = []  # uncaught exceptions of the page
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._profile = tempfile.mkdtemp(prefix="swarm-chromium-")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chromium-cdp", daemon=True)
        self._proc: subprocess.Popen | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws = None
        self._page_session: str | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> "Chromium":
        self._thread.start()
        try:
            self._run(self._start(), self.timeout)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._run(self._close(), 10)
            except Exception:  # noqa: BLE001 - closing best effort; the process is ended below
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _run(self, coro, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        argv = [self.binary, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage",
                "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
                f"--window-size={self.width},{self.height}", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium's own sandbox refuses to run as root
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        url = await asyncio.get_running_loop().run_in_executor(None, self._devtools_url)
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)
        asyncio.get_running_loop().create_task(self._reader())
        target = await self._send("Target.createTarget", {"url": "about:blank"})
        attached = await self._send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        self._page_session = attached["sessionId"]
        for method in ("Page.enable", "Runtime.enable"):
            await self._send(method, session=True)
        await self._send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                                 "deviceScaleFactor": 1, "mobile": False}, session=True)

    def _devtools_url(self) -> str:
        end = time.monotonic() + self.timeout
        lines = []
        while time.monotonic() < end:
            line = self._proc.stderr.readline().decode("utf-8", "replace")
            if not line and self._proc.poll() is not None:
                break
            lines.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                threading.Thread(target=self._drain, daemon=True).start()
                return m.group(1)
        raise BrowserError("chromium did not start: " + "".join(lines[-5:]).strip())

    def _drain(self) -> None:
        for _ in iter(self._proc.stderr.readline, b""):
            pass

    async def _close(self) -> None:
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._send("Browser.close"), 5)
            except Exception:  # noqa: BLE001
                pass
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    # ---- the protocol ---------------------------------------------------------------------------

    async def _send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._page_session
        future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self._ws.send_str(json.dumps(message))
        return await future

    async def _reader(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                future = self._pending.pop(data["id"])
                if "error" in data:
                    future.set_exception(BrowserError(f"{data['error'].get('message')}"))
                else:
                    future.set_result(data.get("result", {}))
            else:
                self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict) -> None:
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(str(params.get("message")))
            asyncio.get_running_loop().create_task(
                self._send("Page.handleJavaScriptDialog", {"accept": False}, session=True))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))

    # ---- what a test or script calls ------------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate the page to `url` and wait until its document has loaded."""
        self._run(self._send("Page.navigate", {"url": url}, session=True), self.timeout)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self._run(self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                           "awaitPromise": True}, session=True), self.timeout)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None, every: float = 0.2) -> Any:
        """Poll a JavaScript expression until it is truthy; its value. BrowserError on timeout."""
        end = time.monotonic() + (timeout or self.timeout)
        value = None
        while time.monotonic() < end:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(every)
        raise BrowserError(f"timed out waiting for {expression!r} (last value {value!r})")

    def screenshot(self, path: str | Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole document's height with `full_page`)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or self.height)
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": self.width, "height": max(height, 100), "scale": 1})
        data = self._run(self._send("Page.captureScreenshot", params, session=True), self.timeout)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
