"""Timer triggers on their NCRONTAB schedule, with the host's schedule monitor and `past_due`.

NCRONTAB (`{second} {minute} {hour} {day} {month} {day-of-week}`, UTC) is parsed and evaluated by
shared/schedules.py, the parser the app uses for EXPORT_SCHEDULE, so the local host accepts exactly
what the app validates.

With `useMonitor` (the default) the schedule status lives where the host keeps it, blob
`azure-webjobs-hosts/timers/<hostId>/Host.Functions.<name>/status` in AzureWebJobsStorage: a start
after a missed occurrence runs once at once with `past_due` true, as does an occurrence missed while
the previous invocation was still running. The timer never runs twice at the same time, nor in two
processes: as on the host, only the process holding the timer's listener lock (`ListenerLock`, a
blob lease in azure-webjobs-hosts) fires it, so several `scripts.serve` processes on one storage
account behave like several instances of one app.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.functions.timer import TimerRequest

from scripts.localhost.appindex import AppFunction
from scripts.localhost.invoke import Invocations, invoke
from shared.schedules import Schedule, ScheduleError

__all__ = [
    "LISTENER_LOCK_SECONDS",
    "MONITOR_CONTAINER",
    "ListenerLock",
    "Schedule",
    "ScheduleError",
    "ScheduleMonitor",
    "TimerHost",
    "host_id",
]

log = logging.getLogger("host.timer")
MONITOR_CONTAINER = "azure-webjobs-hosts"
# The host's listenerLockPeriod (host.json singleton settings): how long a dead holder blocks the timer.
LISTENER_LOCK_SECONDS = 15.0


def host_id() -> str:
    # Core Tools derives the host id from the machine name (lower case, at most 32 characters).
    name = re.sub(r"[^a-z0-9-]", "", socket.gethostname().lower()) or "localhost"
    return name[:32].rstrip("-")


class ScheduleMonitor:
    """Last/Next of one timer in the host's status blob; None where there is no storage."""

    def __init__(self, container: Any | None, function_name: str) -> None:
        self._container = container
        self._blob = f"timers/{host_id()}/Host.Functions.{function_name}/status"

    def read(self) -> dict[str, datetime] | None:
        if self._container is None:
            return None
        from azure.core.exceptions import ResourceNotFoundError

        try:
            raw = self._container.download_blob(self._blob).readall()
            doc = json.loads(raw)
            return {k: datetime.fromisoformat(doc[k]) for k in ("Last", "Next", "LastUpdated") if doc.get(k)}
        except ResourceNotFoundError:
            return None
        except (ValueError, KeyError) as exc:
            log.warning("timer status %s is unreadable (%s); starting afresh", self._blob, exc)
            return None

    def write(self, last: datetime, nxt: datetime) -> None:
        if self._container is None:
            return
        doc = {
            "Last": last.isoformat(),
            "Next": nxt.isoformat(),
            "LastUpdated": datetime.now(UTC).isoformat(),
        }
        self._container.upload_blob(self._blob, json.dumps(doc), overwrite=True)


class ListenerLock:
    """The host's singleton lock on a timer's listener: one process of the app fires each occurrence.

    A blob lease on `locks/<hostId>/Host.Functions.<name>.Listener` in azure-webjobs-hosts, as the
    Functions host takes (listenerLockPeriod 15 s): the process holding it renews it every few seconds
    from a thread of its own; the others try to take it as often, so when the holder stops or dies
    another takes over within one lease period. Without storage, every process fires (and says so).
    """

    def __init__(
        self, container: Callable[[], Any | None], function_name: str, period: float = LISTENER_LOCK_SECONDS
    ) -> None:
        self._container = container
        self.blob_name = f"locks/{host_id()}/Host.Functions.{function_name}.Listener"
        self._period = period
        self._lease: Any = None
        self._client: Any = None
        self._renewed = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listener-lock-{function_name}", daemon=True)
        self.unavailable = False

    def start(self) -> None:
        self.keep()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(Exception):
                lease.release()

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (renewed recently enough that nobody else can have it)."""
        if self.unavailable:
            return True
        with self._lock:
            return self._lease is not None and time.monotonic() - self._renewed < self._period * 2 / 3

    def _run(self) -> None:
        while not self._stop.wait(self._period / 3):
            self.keep()

    def keep(self) -> None:
        """Renew the lease if held, else try to take it."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError
        from azure.storage.blob import BlobLeaseClient

        try:
            container = self._client = self._client or self._container()
        except Exception as exc:
            if not self.unavailable:
                log.warning("timer listener lock: no storage (%s); this process fires every occurrence", exc)
            self.unavailable = True
            return
        if container is None:
            self.unavailable = True
            return
        self.unavailable = False
        blob = container.get_blob_client(self.blob_name)
        with self._lock:
            lease = self._lease
        try:
            if lease is not None:
                lease.renew()
            else:
                with contextlib.suppress(ResourceExistsError):
                    blob.upload_blob(b"", overwrite=False)
                lease = BlobLeaseClient(blob)
                lease.acquire(lease_duration=int(self._period))
                log.info("timer listener lock %s taken: this process fires the timer", self.blob_name)
            with self._lock:
                self._lease, self._renewed = lease, time.monotonic()
        except HttpResponseError as exc:
            if lease is not None and self._lease is not None:
                log.warning(
                    "timer listener lock lost (%s): another process fires the timer",
                    getattr(exc, "error_code", exc),
                )
            with self._lock:
                self._lease = None
        except Exception as exc:
            # Storage unreachable for a moment: keep trying (a renewal missed for a whole lock period
            # lets another process take the timer, as on the host).
            log.warning("timer listener lock: storage did not answer (%s); trying again", type(exc).__name__)


class TimerHost:
    def __init__(
        self,
        fn: AppFunction,
        invocations: Invocations,
        stop: threading.Event,
        monitor_container: Callable[[], Any | None],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.fn = fn
        self.schedule = Schedule.parse(str(fn.trigger["schedule"]))
        self.use_monitor = bool(fn.trigger.get("useMonitor", True))
        self.run_on_startup = bool(fn.trigger.get("runOnStartup", False))
        self._invocations = invocations
        self._stop = stop
        self._monitor_container = monitor_container
        self._now = now
        self._thread = threading.Thread(target=self._loop, name=f"timer-{fn.name}", daemon=True)
        self.listener = ListenerLock(monitor_container, fn.name)

    def start(self) -> None:
        self.listener.start()
        self._thread.start()

    def join(self, timeout: float | None) -> None:
        self._thread.join(timeout)
        self.listener.stop()

    def _monitor(self) -> ScheduleMonitor:
        container = None
        if self.use_monitor:
            try:
                container = self._monitor_container()
            except Exception as exc:
                from shared.reachability import storage_unreachable

                why = storage_unreachable(exc) or exc
                log.warning("timer %s: no schedule monitor (%s); past_due is not tracked", self.fn.name, why)
        return ScheduleMonitor(container, self.fn.name)

    def _fire(self, monitor: ScheduleMonitor, scheduled: datetime, past_due: bool) -> None:
        if not self.listener.held:
            # Another process of the app holds the timer's listener lock: it fires this occurrence.
            log.debug(
                "timer %s: occurrence %s fired by the process holding the lock", self.fn.name, scheduled
            )
            return
        nxt = self.schedule.next_after(scheduled)
        status = {
            "Last": scheduled.isoformat(),
            "Next": nxt.isoformat(),
            "LastUpdated": self._now().isoformat(),
        }
        request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
        reason = f"Timer fired at {self._now().isoformat()}" + (" (past due)" if past_due else "")
        try:
            invoke(self.fn, request, reason, self._invocations)
        except Exception:
            log.exception("timer function %s failed", self.fn.name)
        try:
            monitor.write(scheduled, nxt)
        except Exception as exc:
            log.warning("timer %s: could not record its schedule status: %s", self.fn.name, exc)

    def _loop(self) -> None:
        monitor = self._monitor()
        now = self._now()
        status = None
        try:
            status = monitor.read()
        except Exception as exc:
            log.warning("timer %s: could not read its schedule status: %s", self.fn.name, exc)
        if self.run_on_startup:
            self._fire(monitor, now, past_due=False)
        elif status and "Next" in status and status["Next"] < now:
            log.info(
                "timer %s missed its occurrence at %s: running it now (past due)",
                self.fn.name,
                status["Next"],
            )
            self._fire(monitor, status["Next"], past_due=True)
        nxt = self.schedule.next_after(self._now())
        log.info(
            "timer %s: next occurrence %s (schedule %r)",
            self.fn.name,
            nxt.isoformat(),
            self.schedule.expression,
        )
        while not self._stop.is_set():
            wait = (nxt - self._now()).total_seconds()
            if wait > 0 and self._stop.wait(wait):
                return
            self._fire(monitor, nxt, past_due=False)
            following = self.schedule.next_after(nxt)
            now = self._now()
            if following < now - timedelta(seconds=1):
                # The invocation outlived the next occurrence(s): run once for all of them, late.
                if self._stop.is_set():
                    return
                self._fire(monitor, following, past_due=True)
                following = self.schedule.next_after(self._now())
            nxt = following
