"""HTTP/1.1 plumbing on the standard library: read a request, hand it on, write the answer.

Keep-alive is supported (clients pool connections) and Nagle is off, so a small answer is not
held back waiting for an ACK: the throughput benchmark needs the sandbox not to be the bottleneck.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from sandbox.admin import PREFIX, handle_admin
from sandbox.messages import ApiRequest, Reply, message
from sandbox.state import SandboxState

# Bodies larger than this are refused unread (the API limit is 400,000 bytes; 10x leaves room to test it).
MAX_READ_BYTES = 4_000_000


class Backend(Protocol):
    state: SandboxState

    def serve(self, request: ApiRequest, token: str | None, received: float) -> Reply | None: ...


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class SandboxHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, SandboxHandler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut every open client connection so idle keep-alive threads end with the server."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hung up (timeout tests, dropped connections) is normal here, not an error.
        return


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "ActiveCampaignSandbox/1.0"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    server: SandboxHttpServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError):  # the client may have hung up first
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        return  # the request log in SandboxState is the record; stderr stays quiet

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _read_body(self) -> bytes | Reply:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            return message(411, "Send a Content-Length; chunked bodies are not supported.", outcome="invalid")
        raw = self.headers.get("Content-Length") or "0"
        if not raw.isdigit():
            self.close_connection = True
            return message(400, "Invalid Content-Length.", outcome="invalid")
        length = int(raw)
        if length > MAX_READ_BYTES:
            self.close_connection = True
            return message(413, f"Request body over {MAX_READ_BYTES} bytes.", outcome="too_large")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        received = time.monotonic()
        split = urlsplit(self.path)
        body = self._read_body()
        if isinstance(body, Reply):
            self._write(body)
            return
        request = ApiRequest(self.command, split.path, parse_qs(split.query, keep_blank_values=True), body)
        if split.path.startswith(PREFIX):
            if not is_loopback(self.client_address[0]):
                self._write(message(403, "Sandbox admin routes answer loopback clients only."))
                return
            self._write(handle_admin(self.server.backend.state, request))
            return
        reply = self.server.backend.serve(request, self.headers.get("Api-Token"), received)
        if reply is None:
            self.close_connection = True  # the injected "dropped connection": no answer at all
            return
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        data = reply.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
