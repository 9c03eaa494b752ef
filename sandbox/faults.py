"""Fault injection: queued misbehaviours that replace (or precede) the sandbox's normal answer.

Each fault matches requests whose path starts with `path` and fires `count` times, oldest
fault first. Batch faults do not touch HTTP: they mark the next queued bulk import so its
import/info ends `failed` or `interrupted` (`batch_failed`, `batch_interrupted`), reports failure
entries that match no contact of the batch (`stray_failures`), or its answer says fewer contacts
were queued than were sent (`short_queued`). `batch_unknown` answers import/info with a 404, as
for a batch ActiveCampaign no longer (or not yet) knows. `hold` is a test's hand on the clock: the
matching request waits until the test releases it, then is answered normally.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal[
    "status",
    "drop",
    "delay",
    "hold",
    "login_page",
    "batch_failed",
    "batch_interrupted",
    "stray_failures",
    "short_queued",
]
BATCH_KINDS: frozenset[str] = frozenset(
    {"batch_failed", "batch_interrupted", "stray_failures", "short_queued"}
)

LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Login | ActiveCampaign</title></head><body>"
    '<form method="post" action="/admin/index.php"><input name="user"><input name="pass" type="password">'
    "<button>Log in</button></form></body></html>"
)


@dataclass
class Fault:
    """One injected misbehaviour; build it with the class methods below or directly."""

    kind: FaultKind
    path: str = "/api/3/"
    count: int = 1
    status: int = 503
    body: object | None = None  # JSON-serialisable, or str sent as text/plain
    retry_after: int | None = None
    delay: float = 0.0
    # batch_interrupted: how many contacts of the batch are applied before it stops.
    applied: int | None = None
    # stray_failures: the entries import/info adds to the batch's failures.
    entries: tuple[str, ...] = ()
    # hold: set when a matching request starts waiting; the request goes on once `gate` is set.
    arrived: threading.Event | None = None
    gate: threading.Event | None = None

    @classmethod
    def http_status(
        cls,
        status: int,
        *,
        path: str = "/api/3/",
        count: int = 1,
        body: object | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        return cls("status", path=path, count=count, status=status, body=body, retry_after=retry_after)

    @classmethod
    def drop_connection(cls, *, path: str = "/api/3/", count: int = 1) -> Fault:
        return cls("drop", path=path, count=count)

    @classmethod
    def slow(cls, seconds: float, *, path: str = "/api/3/", count: int = 1) -> Fault:
        """Hold the answer `seconds` (to trip client timeouts), then process the request normally."""
        return cls("delay", path=path, count=count, delay=seconds)

    @classmethod
    def hold(cls, *, path: str = "/api/3/", count: int = 1) -> Fault:
        """Hold matching requests until `release()`, then answer them normally: a test decides when a
        request is answered (`arrived` says one is waiting), instead of guessing with a delay."""
        return cls("hold", path=path, count=count, arrived=threading.Event(), gate=threading.Event())

    def release(self) -> None:
        assert self.gate is not None, "only a hold fault is released"
        self.gate.set()

    @classmethod
    def login_page(cls, *, path: str = "/api/3/", count: int = 1) -> Fault:
        """A 200 text/html login page: what one client saw for an expired key."""
        return cls("login_page", path=path, count=count, status=200)

    @classmethod
    def batch_failed(cls, *, count: int = 1) -> Fault:
        return cls("batch_failed", path="/api/3/import/bulk_import", count=count)

    @classmethod
    def batch_interrupted(cls, *, applied: int | None = None, count: int = 1) -> Fault:
        return cls("batch_interrupted", path="/api/3/import/bulk_import", count=count, applied=applied)

    @classmethod
    def stray_failures(cls, *entries: str, count: int = 1) -> Fault:
        """The next batch completes, and import/info's `failure` also lists `entries` (default: "0",
        a request index as one peer reads the field), which match no contact of the batch."""
        return cls("stray_failures", path="/api/3/import/bulk_import", count=count, entries=entries or ("0",))

    @classmethod
    def short_queued(cls, *, count: int = 1) -> Fault:
        """The next bulk import answers `queued_contacts` one less than the contacts it was sent."""
        return cls("short_queued", path="/api/3/import/bulk_import", count=count)

    @classmethod
    def batch_unknown(cls, *, count: int = 1) -> Fault:
        """import/info answers 404 "No Result found", as for a batch it does not know."""
        return cls(
            "status",
            path="/api/3/import/info",
            count=count,
            status=404,
            body={"message": "No Result found for batch"},
        )


class FaultQueue:
    """Thread-safe queue of pending faults."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        if fault.count < 1:
            raise ValueError("a fault must fire at least once (count >= 1)")
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(f.count for f in self._faults)

    def take_http(self, path: str) -> Fault | None:
        """The first HTTP fault matching `path`, consuming one of its firings."""
        return self._take(path, batch=False)

    def take_batch(self, path: str) -> Fault | None:
        return self._take(path, batch=True)

    def _take(self, path: str, *, batch: bool) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if (fault.kind in BATCH_KINDS) == batch and path.startswith(fault.path):
                    fault.count -= 1
                    if fault.count == 0:
                        del self._faults[i]
                    return fault
        return None
