"""HTTP triggers on `http://HOST:PORT/<routePrefix>/<route>`, with real azure.functions objects.

The request becomes a `func.HttpRequest` as the Python worker builds it (method, full URL, headers,
query, route parameters, body bytes); the function's `func.HttpResponse` goes out through the
worker's own converter (`HttpResponseConverter`, which supplies the Content-Type). As on the real
host: no route -> 404 with an empty body, an unhandled exception -> 500 with an empty body, bodies
over 100 MB -> 413. Function keys are not checked (as with Core Tools) unless the host is given one
(`function_key`, from SERVE_FUNCTION_KEY): then a route whose authLevel is `function` or `admin`
answers 401 with an empty body unless the request carries that key in `x-functions-key` or `?code=`,
as the Functions host does (which also takes host and master keys; locally there is just the one).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions.http import HttpResponseConverter

from scripts.localhost.appindex import AppFunction
from scripts.localhost.invoke import Invocations, invoke
from scripts.localhost.routes import Route, Router, parse_route

log = logging.getLogger("host.http")
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions host's request size limit
_KEYED_LEVELS = ("function", "admin")


def build_router(functions: Sequence[AppFunction]) -> Router[AppFunction]:
    routes: list[Route[AppFunction]] = []
    for fn in functions:
        route = fn.trigger.get("route") or fn.name
        methods = fn.trigger.get("methods") or None
        routes.append(parse_route(str(route), [str(m) for m in methods] if methods else None, fn))
    return Router(routes)


def to_http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of what an HTTP function returned, as the worker encodes it."""
    if isinstance(result, str):
        return 200, [("Content-Type", "text/plain; charset=utf-8")], result.encode()
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not func.HttpResponse")
    datum = HttpResponseConverter.encode(result, expected_type=None)
    value = datum.value
    headers = [(str(k), str(v.value)) for k, v in value["headers"].items()]
    # The worker lifts Set-Cookie headers into cookies; they go back out as headers.
    for cookie in value.get("cookies") or []:
        headers.extend(("Set-Cookie", morsel.OutputString()) for morsel in cookie.values())
    body = value["body"].value if value["body"] is not None else b""
    return int(value["status_code"].value), headers, bytes(body or b"")


class _Server(ThreadingHTTPServer):
    # A stop waits for running invocations (Invocations), not for idle keep-alive connections.
    daemon_threads = True
    block_on_close = False
    # Set after construction; typed here for the handler.
    router: Router[AppFunction]
    prefix: str
    invocations: Invocations
    function_key: str | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        # One access line per request; the query string is dropped (it may hold `code=`).
        log.debug("%s %s", self.command, urlsplit(self.path).path)

    def _send(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        split = urlsplit(self.path)
        prefix = "/" + self.server.prefix if self.server.prefix else ""
        path = split.path
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(413, [], b"")
            return
        body = self.rfile.read(length) if length else b""
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            self._send(404, [], b"")
            return
        found = self.server.router.find(self.command, path[len(prefix) :])
        if found is None:
            self._send(404, [], b"")
            return
        route, params = found
        fn = route.target
        if not self._key_accepted(fn, split.query):
            self._send(401, [], b"")
            return
        address, port = self.server.server_address[:2]
        host = self.headers.get("Host") or f"{address!s}:{port}"
        request = func.HttpRequest(
            method=self.command,
            url=f"http://{host}{self.path}",
            headers=dict(self.headers.items()),
            params=dict(parse_qsl(split.query, keep_blank_values=True)),
            route_params=params,
            body=body,
        )
        try:
            result = invoke(
                fn,
                request,
                "This function was programmatically called via the host APIs.",
                self.server.invocations,
            )
            status, headers, payload = to_http_response(result)
        except Exception:
            log.exception("Functions.%s failed; answering 500", fn.name)
            status, headers, payload = 500, [], b""
        self._send(status, headers, payload)

    def _key_accepted(self, fn: AppFunction, query: str) -> bool:
        expected = self.server.function_key
        if expected is None or str(fn.trigger.get("authLevel") or "function").lower() not in _KEYED_LEVELS:
            return True
        sent = self.headers.get("x-functions-key") or dict(parse_qsl(query)).get("code") or ""
        return hmac.compare_digest(sent.encode(), expected.encode())

    def __getattr__(self, name: str) -> Any:
        # Every method reaches the router (TRACE, PROPFIND, ...): one no route declares is a 404, as
        # on the real host, never http.server's 501.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


class HttpHost:
    def __init__(
        self,
        functions: Sequence[AppFunction],
        prefix: str,
        invocations: Invocations,
        host: str,
        port: int,
        *,
        function_key: str | None = None,
    ) -> None:
        self.server = _Server((host, port), _Handler)
        self.server.router = build_router(functions)
        self.server.prefix = prefix
        self.server.invocations = invocations
        self.server.function_key = function_key
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting requests, then wait for the ones in flight."""
        self.server.shutdown()
        self.server.server_close()
