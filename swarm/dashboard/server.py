"""The swarm page's HTTP server: aiohttp (Ray's own dependency), read-only, on 127.0.0.1 by default.

Routes, GET (and HEAD) only; anything else is 405:

- `/`: the page (static/index.html), `/static/app.js`, `/static/app.css`;
- `/static/plotly.min.js`: plotly.js from the installed plotly package (no CDN: a cluster head is
  often offline);
- `/api/snapshot`: everything the page shows (swarm.dashboard.snapshot), rebuilt at most once a
  second and only re-read from the journal when it changed (a corrupt journal: 500 with its one-line
  error, which the page shows);
- `/api/experiments/<id>`: one experiment's diff against its parent and the tail of its log.

Every response carries a Content-Security-Policy that allows scripts from this origin only (no
inline script, no eval), no framing, and `nosniff`. Bound to a loopback address, the server only
answers requests whose Host is a loopback name, so a web page elsewhere cannot read it through DNS
rebinding. `DashboardServer` runs the app on its own event loop in a daemon thread: `start()`
returns the URL, so `autoresearch run --dashboard` serves beside the coordinator and
`autoresearch dashboard` waits on it. Not covered: what the page shows (swarm.dashboard.snapshot).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from swarm.dashboard import DEFAULT_HOST, DEFAULT_PORT, snapshot
from swarm.dashboard.source import RunSource
from swarm.errors import ConfigError, JournalError

SNAPSHOT_MAX_AGE_S = 1.0
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'none'")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
STATIC = {"app.js": "application/javascript", "app.css": "text/css", "index.html": "text/html"}


def plotly_js() -> Path:
    """plotly.min.js as the installed plotly package ships it."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Dashboard:
    """The aiohttp application over one run directory."""

    def __init__(self, source: RunSource, host: str = DEFAULT_HOST):
        self.source = source
        self.loopback_only = is_loopback(host)
        self._doc: tuple[Any, float, str] | None = None  # (journal size, built at, JSON text)
        self._building = asyncio.Lock()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/plotly.min.js", self._plotly)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get(r"/api/experiments/{exp_id:\d+}", self._experiment)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        host = (URL(f"http://{request.host}").host or "") if request.host else ""
        if self.loopback_only and not is_loopback(host):
            return self._secure(request, web.Response(status=421, text="this dashboard answers on localhost only\n"))
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404, 405, ...: the same headers
            self._secure(request, exc)
            raise
        return self._secure(request, response)

    @staticmethod
    def _secure(request: web.Request, response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    async def _index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        data = (resources.files("swarm.dashboard") / "static" / name).read_bytes()
        return web.Response(body=data, content_type=STATIC[name], charset="utf-8")

    async def _plotly(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(plotly_js(), headers={"Content-Type": "application/javascript; charset=utf-8",
                                                      "Cache-Control": "max-age=3600"})

    async def _snapshot(self, request: web.Request) -> web.Response:
        async with self._building:  # one build at a time, shared by every poller
            now = time.time()
            key = self._journal_key()
            if self._doc is None or self._doc[0] != key or now - self._doc[1] >= SNAPSHOT_MAX_AGE_S:
                try:
                    text = await asyncio.get_running_loop().run_in_executor(None, self._build, now)
                except JournalError as exc:  # a corrupt journal: say so on the page, as `status` would
                    return web.Response(status=500, text=f"{exc}\n")
                self._doc = (key, now, text)
            text = self._doc[2]
        return web.Response(text=text, content_type="application/json")

    def _journal_key(self):
        try:
            st = self.source.journal.stat()
            return st.st_size, st.st_mtime_ns
        except FileNotFoundError:
            return None

    def _build(self, now: float) -> str:
        from plotly.io.json import to_json_plotly

        return to_json_plotly(snapshot.build(self.source, now))

    async def _experiment(self, request: web.Request) -> web.Response:
        exp_id = int(request.match_info["exp_id"])
        try:
            detail = await asyncio.get_running_loop().run_in_executor(None, self.source.detail, exp_id)
        except JournalError as exc:
            return web.Response(status=500, text=f"{exc}\n")
        if detail is None:
            raise web.HTTPNotFound(text=f"no experiment {exp_id}\n")
        return web.Response(text=json.dumps(detail, default=str), content_type="application/json")


class DashboardServer:
    """The dashboard served from a daemon thread with its own event loop."""

    def __init__(self, run_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 repo: str | Path | None = None):
        self.source = RunSource(run_dir, repo)
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 30.0) -> str:
        """Bind and serve; returns the URL. ConfigError (one line) when the address cannot be bound."""
        self._loop = asyncio.new_event_loop()
        ready, box = threading.Event(), {}

        def main() -> None:
            loop = self._loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                box["error"] = exc
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=main, name="swarm-dashboard", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise ConfigError(f"the dashboard did not start on {self.host}:{self.port} within {timeout:.0f} s")
        if "error" in box:
            exc = box["error"]
            raise ConfigError(f"cannot serve the dashboard on {self.host}:{self.port}: {exc} "
                              "(--port picks another port; 0 picks a free one)") from None
        return self.url

    async def _bind(self) -> None:
        app = Dashboard(self.source, self.host).app()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "DashboardServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
