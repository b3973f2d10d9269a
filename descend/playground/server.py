"""The playground's web server: a thin Starlette layer over ``descend.playground.api``.

Routes: ``/`` the page, ``/static/*`` its script and style, ``/plotly.min.js`` the plotly.js that
ships inside the ``plotly`` Python package (no network needed), ``/api/catalog``, ``/api/run`` and
``/api/csv``; ``/report/`` the lab report in ``./report`` (the files its ``.descend-report`` lists), so
that the report's "open in the playground" links and the presets' links to their claims work.  Requests whose ``Host`` or ``Origin`` is not this machine's loopback are refused
(403) unless the server was opened to that host with ``--host``: this keeps other web pages, and
DNS-rebinding tricks, from driving a server on 127.0.0.1.  A request body larger than
``MAX_BODY_BYTES`` (1 MB; a setup is a few kB) is refused with 413 before it is read: at once when
its ``Content-Length`` says so, and once a chunked body passes the limit while it streams in.  A
body that is not a setup (not a JSON object, nested too deeply, a number no float holds) is a 400
with a message.
"""
from __future__ import annotations

import csv
import io
import ipaddress
import json
import socket
import threading
import webbrowser
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import api

STATIC = Path(str(resources.files("descend.playground") / "static"))
MAX_BODY_BYTES = 1_000_000
MAX_INTEGER_DIGITS = 1000  # a longer integer is refused while the JSON is parsed (no float holds 310 digits)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plotly_js() -> Path | str:
    """The plotly.js bundled with the plotly Python package: its file, or the text when it is not a file."""
    bundled = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if bundled.is_file():
        return bundled
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _hostname(value: str) -> str:
    """The host of a ``Host`` header (``name:port``, ``[::1]:port``) or of an ``Origin`` URL."""
    if "://" not in value:
        value = "//" + value
    return (urlsplit(value).hostname or "").lower()


class LoopbackOnly:
    """ASGI middleware: 403 for requests whose Host or Origin names a machine not allowed to reach us."""

    def __init__(self, app, opened_to: str | None = None):
        self.app = app
        opened = (opened_to or "").strip("[]").lower()
        self.anyone = opened in ("0.0.0.0", "::")
        self.allowed = {opened} if opened and not is_loopback(opened) else set()

    def allows(self, host: str) -> bool:
        return self.anyone or is_loopback(host) or host in self.allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            for header in ("host", "origin"):
                if header in headers and not self.allows(_hostname(headers[header])):
                    response = PlainTextResponse(
                        f"descend playground: refused a request with {header} {headers[header]!r}; "
                        "only this machine may use it (see --host)", status_code=403)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def _page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def _plotly(request: Request) -> Response:
    found = plotly_js()
    if isinstance(found, Path):
        return FileResponse(found, media_type="text/javascript")
    return Response(found, media_type="text/javascript")


async def _catalog(request: Request) -> Response:
    return JSONResponse(api.catalog())


class BodyTooLarge(Exception):
    """The request body is past ``MAX_BODY_BYTES``: answered with 413."""


async def _body(request: Request) -> bytes:
    """The request body, refused (BodyTooLarge) before it is read when its Content-Length is past the
    limit, and as soon as a body without one (chunked) grows past it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge
    return bytes(body)


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise api.SetupError(f"the setup holds an integer of {len(text.lstrip('-'))} digits, too large for a number")
    return int(text)


async def _setup_of(request: Request) -> dict:
    """The setup a request sends: a JSON object, or SetupError with the message for the page."""
    body = await _body(request)
    try:
        setup = json.loads(body, parse_int=_integer)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise api.SetupError(f"the request is not valid JSON: {error}") from None
    except RecursionError:
        raise api.SetupError("the request is not a setup: its JSON is nested too deeply to read") from None
    if not isinstance(setup, dict):
        raise api.SetupError("the setup must be a JSON object")
    return setup


def _refusal(error: api.SetupError | BodyTooLarge) -> Response:
    if isinstance(error, BodyTooLarge):
        return JSONResponse({"error": f"the request body is larger than the playground takes ({MAX_BODY_BYTES} "
                                      "bytes); a setup is a few kB", "run": None}, status_code=413)
    return JSONResponse({"error": str(error), "run": error.run}, status_code=400)


async def _run(request: Request) -> Response:
    try:
        setup = await _setup_of(request)
        # the trajectories are pure Python/CPU work: run them off the event loop
        from starlette.concurrency import run_in_threadpool

        return JSONResponse(await run_in_threadpool(api.run_setup, setup))
    except (api.SetupError, BodyTooLarge) as error:
        return _refusal(error)


def setup_csv(result: dict) -> str:
    """The numbers of a computed setup as CSV: one row per optimizer and step."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["optimizer", "step", "x", "y", "loss", "diverged_at"])
    for run in result["runs"]:
        for step, ((x, y), loss) in enumerate(zip(run["points"], run["losses"])):
            writer.writerow([run["optimizer"], step, repr(x), repr(y), repr(loss),
                             "" if run["diverged_at"] is None else run["diverged_at"]])
    return out.getvalue()


async def _csv(request: Request) -> Response:
    try:
        setup = {**(await _setup_of(request)), "surface": False}
        from starlette.concurrency import run_in_threadpool

        result = await run_in_threadpool(api.run_setup, setup)
    except (api.SetupError, BodyTooLarge) as error:
        return _refusal(error)
    return Response(setup_csv(result), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="descend-playground.csv"'})


NO_REPORT = """<!doctype html><html lang="en"><meta charset="utf-8"><title>no lab report here</title>
<body style="font: 16px/1.5 system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>No lab report here</h1><p>The playground serves the lab report it finds in <code>{folder}</code>, and there
is none. Run <code>descend lab</code> (it writes <code>report/index.html</code>) in the folder where you start
<code>descend playground</code>, then reload this page.</p><p><a href="/">back to the playground</a></p></body>"""


def _report_files(folder: Path) -> set[str]:
    """The files a lab report in ``folder`` lists in its marker (what descend lab wrote), or none."""
    try:
        listed = json.loads((folder / ".descend-report").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {name for name in listed if isinstance(name, str) and "/" not in name and not name.startswith(".")}


async def _report(request: Request) -> Response:
    folder = request.app.state.report
    name = request.path_params.get("name") or "index.html"
    files = _report_files(folder)
    if not files:
        return HTMLResponse(NO_REPORT.format(folder=folder), status_code=404)
    if name not in files or not (folder / name).is_file():
        return PlainTextResponse(f"{name}: not a file of the lab report", status_code=404)
    return FileResponse(folder / name)


def create_app(opened_to: str | None = None, report: Path | None = None) -> Starlette:
    """The playground app; ``opened_to``: the ``--host`` it was started with (loopback when None); ``report``:
    the lab report folder served at /report/ (default ``./report``)."""
    routes = [
        Route("/", _page),
        Route("/report", lambda request: RedirectResponse("/report/")),
        Route("/report/", _report),
        Route("/report/{name}", _report),
        Route("/plotly.min.js", _plotly),
        Route("/api/catalog", _catalog),
        Route("/api/run", _run, methods=["POST"]),
        Route("/api/csv", _csv, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(LoopbackOnly, opened_to=opened_to)])
    app.state.report = Path(report if report is not None else Path.cwd() / "report").absolute()
    return app


class PortInUse(OSError):
    pass


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); PortInUse when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise PortInUse(f"port {port} on {host} is in use; choose another with --port, or leave --port out "
                            "for a free one") from None
        raise
    sock.listen(128)
    return sock


def serve(host: str = "127.0.0.1", port: int = 0, open_browser: bool = True) -> None:
    """Serves the playground until interrupted (the socket is bound first, so a taken port fails at once)."""
    import uvicorn

    sock = bind(host, port)
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    print(f"descend playground: {url}  (Ctrl+C stops it)", flush=True)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(create_app(opened_to=host), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


class Running:
    """A playground server on a background thread, for tests and benchmarks.

    >>> with Running() as url:  # doctest: +SKIP
    ...     urllib.request.urlopen(url + "api/catalog")
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, opened_to: str | None = None,
                 report: Path | None = None):
        self.host, self.port, self.opened_to, self.report = host, port, opened_to, report

    def __enter__(self) -> str:
        import time

        import uvicorn

        sock = bind(self.host, self.port)
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.opened_to or self.host, self.report),
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the playground server did not start")
            time.sleep(0.02)
        return f"http://{self.host}:{sock.getsockname()[1]}/"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
