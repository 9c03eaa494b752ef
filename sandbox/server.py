"""SandboxServer: a local ActiveCampaign account speaking real HTTP on loopback."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

from sandbox.api import Api
from sandbox.faults import Fault, FaultQueue
from sandbox.gateway import Gateway
from sandbox.httpserver import SandboxHttpServer
from sandbox.limits import Limits
from sandbox.messages import ApiRequest, Reply
from sandbox.model import FieldSpec
from sandbox.state import SandboxState
from sandbox.worker import BatchWorker

DEFAULT_LISTS: Mapping[int, str] = {1: "Newsletter"}
_POLL_INTERVAL = 0.05  # how soon serve_forever notices stop(); small so test teardown is quick
_JOIN_TIMEOUT = 5.0


def _field_specs(fields: Sequence[FieldSpec | str] | None) -> list[FieldSpec]:
    """Accept FieldSpec objects or bare perstags (numbered after the highest id given)."""
    specs = [f for f in fields or () if isinstance(f, FieldSpec)]
    next_id = max((f.id for f in specs), default=0) + 1
    for item in fields or ():
        if isinstance(item, str):
            specs.append(FieldSpec(next_id, item))
            next_id += 1
    return specs


class SandboxServer:
    """Start with `start()` or `with SandboxServer(key) as server:`; inspect `server.state`.

    `hostname` is what a user puts in the connection ("127.0.0.1:PORT"); `base_url` is the API
    root ("http://127.0.0.1:PORT/api/3", as `shared.hosts.base_url(hostname)` builds it);
    `root_url` serves the admin routes under /__sandbox/.
    """

    def __init__(
        self,
        api_key: str,
        *,
        limits: Limits | None = None,
        lists: Mapping[int, str] | None = None,
        fields: Sequence[FieldSpec | str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        time_zone: str = "UTC",
        field_options_sideload: bool = True,
    ) -> None:
        """`time_zone`: the account's (date-times are stored as its local time); with
        `field_options_sideload` False, GET /fields carries no `fieldOptions`."""
        self.limits = limits if limits is not None else Limits()
        self.state = SandboxState(
            DEFAULT_LISTS if lists is None else lists,
            _field_specs(fields),
            time_zone=time_zone,
            field_options_sideload=field_options_sideload,
        )
        self.faults = FaultQueue()
        self._api_key = api_key
        self._host = host
        self._port = port
        self._stopping = threading.Event()
        api = Api(self.state, lambda: self.limits, self.faults, lambda: self.base_url)
        self._gateway = Gateway(
            self.state, api, self.faults, lambda: self.limits, lambda: self._api_key, self._stopping
        )
        self._httpd: SandboxHttpServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        if self._httpd is not None:
            raise RuntimeError("sandbox already started")
        self._httpd = SandboxHttpServer((self._host, self._port), self)
        self._port = int(self._httpd.server_address[1])
        serve = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"sandbox-http-{self._port}",
            daemon=True,
        )
        worker = BatchWorker(self.state, lambda: self.limits, self._stopping)
        self._threads = [serve, worker]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and processing; idempotent. Batches still queued stay unprocessed."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        self.state.wake()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        for thread in self._threads:
            thread.join(_JOIN_TIMEOUT)

    def __enter__(self) -> SandboxServer:
        return self.start() if self._httpd is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def hostname(self) -> str:
        return f"{self._host}:{self._port}"

    @property
    def root_url(self) -> str:
        return f"http://{self.hostname}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api/3"

    # -- test controls ------------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        return self._api_key

    def set_api_key(self, new_key: str) -> None:
        """Rotate the account's key: the old one gets 403 from the next request on."""
        self._api_key = new_key

    def inject(self, fault: Fault) -> None:
        self.faults.add(fault)

    def pause_processing(self) -> None:
        """Keep newly queued batches `waiting` until resume_processing(): deterministic async tests."""
        self.state.set_paused(True)

    def resume_processing(self) -> None:
        self.state.set_paused(False)

    def wait_until_idle(self, timeout: float) -> bool:
        """Block until every queued batch is processed; False if `timeout` seconds pass first."""
        return self.state.wait_until_idle(timeout)

    def wait_for_batches(self, count: int, timeout: float) -> bool:
        """Block until `count` bulk imports have been queued in total (e.g. to stop a run midway)."""
        return self.state.wait_for_batches(count, timeout)

    # Backend for the HTTP layer.
    def serve(self, request: ApiRequest, token: str | None, received: float) -> Reply | None:
        return self._gateway.serve(request, token, received)
