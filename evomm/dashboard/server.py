"""``evomm serve``: the dashboard over HTTP with the standard library's threaded server.

The API answers JSON (documented in ``docs/dashboard.md``); ``/`` is the page and ``/static/``
its files. The standard library's server is enough for one person's browser on a run directory
and keeps the install light (no web framework to install or pin).

The one request that changes anything is ``POST /api/export`` (the export button). It must be
sent as ``application/json``: a browser sends that content type across origins only after a
CORS preflight, which this server never grants, so another site open in the same browser cannot
start exports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .exports import Exporter
from .page import ASSETS, asset, render_live
from .state import RunState, dumps

log = logging.getLogger(__name__)

#: Largest accepted request body (the export request is a few bytes).
MAX_BODY = 4096


class App:
    """The routes of one served run (no HTTP in here: :class:`Handler` calls :meth:`get`)."""

    def __init__(self, run_dir: Path, plugins_dirs: tuple[str, ...] = ()) -> None:
        self.state = RunState(run_dir)
        self.exporter = Exporter(self.state.run_dir, plugins_dirs)
        self._routes: dict[str, Callable[[dict[str, list[str]]], Any]] = {
            "/api/run": lambda q: self.state.run_payload(),
            "/api/front": lambda q: self.state.front_payload(_one(q, "stage"), _one(q, "view") or "full"),
            "/api/progress": lambda q: self.state.progress_payload(_one(q, "stage")),
            "/api/candidates": lambda q: self.state.candidates_payload(_int(q, "since"), _one(q, "view") or "full"),
            "/api/rescores": lambda q: self.state.rescores_payload(),
            "/api/exports": lambda q: self.exporter.payload(),
        }

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a GET."""
        if path in ("/", "/index.html"):
            return 200, "text/html; charset=utf-8", render_live(f"evomm run {self.state.run_dir.name}").encode()
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if name == "plotly.min.js" or name in ASSETS:
                kind = "text/css" if name.endswith(".css") else "text/javascript"
                return 200, f"{kind}; charset=utf-8", asset(name)
        if path.startswith("/api/candidate/"):
            payload = self.state.candidate_payload(unquote(path[len("/api/candidate/"):]))
            if payload is None:
                return _error(404, f"no candidate {path.rsplit('/', 1)[-1]!r} in the archive")
            return 200, "application/json", dumps(payload).encode()
        route = self._routes.get(path)
        if route is None:
            return _error(404, f"no such page: {path}")
        try:
            return 200, "application/json", dumps(route(query)).encode()
        except ValueError as exc:
            return _error(400, str(exc))

    def post(self, path: str, content_type: str, body: bytes) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a POST (only ``/api/export``)."""
        if path != "/api/export":
            return _error(404, f"no such action: {path}")
        if content_type.split(";")[0].strip() != "application/json":
            return _error(415, "send the export request as application/json")
        try:
            cid = json.loads(body)["candidate"]
        except (ValueError, KeyError, TypeError):
            return _error(400, 'the body must be {"candidate": "<id>"}')
        if not isinstance(cid, str) or self.state.candidate_payload(cid) is None:
            return _error(404, f"no candidate {cid!r} in the archive")
        return 202, "application/json", dumps(self.exporter.start(cid).to_json()).encode()


def _one(query: dict[str, list[str]], key: str) -> str | None:
    return query[key][-1] if key in query else None


def _int(query: dict[str, list[str]], key: str) -> int:
    text = _one(query, key) or "0"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"?{key}= must be a whole number, got {text!r}") from None


def _error(status: int, message: str) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps({"error": message}).encode()


class Handler(BaseHTTPRequestHandler):
    """Hands each request to the :class:`App` (set by :func:`make_server`)."""

    app: App

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        try:
            answer = self.app.get(url.path, parse_qs(url.query))
        except Exception as exc:  # a request must never take the server down; say what broke
            log.exception("GET %s failed", self.path)
            answer = _error(500, f"{type(exc).__name__}: {exc}")
        self._send(*answer)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(*_error(413, "request too large"))
            return
        body = self.rfile.read(length)
        try:
            answer = self.app.post(urlsplit(self.path).path, self.headers.get("Content-Type", ""), body)
        except Exception as exc:  # as in do_GET
            log.exception("POST %s failed", self.path)
            answer = _error(500, f"{type(exc).__name__}: {exc}")
        self._send(*answer)

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(HTTPStatus(status))
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if "javascript" in kind or "css" in kind else "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        log.debug(format, *args)


def make_server(run_dir: Path, host: str = "127.0.0.1", port: int = 8765,
                plugins_dirs: tuple[str, ...] = ()) -> ThreadingHTTPServer:
    """A server for ``run_dir`` bound to ``host:port`` (port 0: any free port); not started.

    Raises:
        SearchError: ``run_dir`` is not a run directory.
        OSError: the address is in use.
    """
    handler = type("RunHandler", (Handler,), {"app": App(Path(run_dir), plugins_dirs)})
    server = ThreadingHTTPServer((host, port), partial(handler))
    server.daemon_threads = True
    return server
