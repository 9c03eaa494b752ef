"""Handing an ActiveCampaign account from one run to the next within seconds, in the order runs were queued.

Runs on one account take turns (they share its rate budget: the account lease, `locks/<host>`). A run
that finds the account taken must neither block an instance (the instance could work for another
account meanwhile) nor come back a fixed minute later (the account would sit idle). So:

- the holder says how far it is: the lease blob's metadata names its run and, once it has planned,
  when it expects to be done (its contacts at the account's bulk ceiling);
- a run that finds the account taken waits in-process only if the holder expects to be done within
  the bounded wait (RunContext.lease_wait); otherwise its message goes back on the run queue,
  invisible until the holder's expected end (capped), and the run writes a waiting entry
  (`waiting/<host>/<runId>.json`: the message's id and pop receipt);
- the holder, when it releases the account, makes the first waiting run's message visible at once
  (Update Message with visibility 0), so the next run starts within the queue's polling interval;
  if the holder dies instead, each waiting message still comes back at its own time;
- waiting runs go in the order they were queued (run ids sort by creation): a run that finds the
  account free while an earlier run waits for it wakes that run and waits its turn.

An entry is trusted until a grace period after its message was due (woken, or its delay passed): a
run that died or was deleted meanwhile never blocks the account for longer.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.storage import account_lease_blob, account_waiting_blob, account_waiting_prefix

__all__ = ["ENTRY_GRACE", "AccountTurns", "Holder", "Waiting", "expected_seconds", "later", "utc_now"]

log = logging.getLogger(__name__)
# How long after its message became visible a waiting run may take to reach the account (a poll of
# the queue, reading its record, the ActiveCampaign preflight) before the next one may go first.
ENTRY_GRACE = timedelta(seconds=30)
_JSON = ContentSettings(content_type="application/json")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def expected_seconds(contacts: int, bulk_imports_per_minute: float, contacts_per_import: int = 250) -> float:
    """How long sending `contacts` takes at the account's bulk ceiling."""
    per_second = bulk_imports_per_minute * contacts_per_import / 60.0
    return contacts / per_second if per_second > 0 else 0.0


@dataclass(frozen=True)
class Holder:
    """The run holding the account, and when it expects to be done (None: not planned yet)."""

    run_id: str
    export: str
    expected_end: datetime | None

    def remaining(self, now: datetime) -> float | None:
        if self.expected_end is None:
            return None
        return max(0.0, (self.expected_end - now).total_seconds())


@dataclass(frozen=True)
class Waiting:
    """A run waiting for the account: its message on the queue (or, without a message id, a run
    waiting in-process for a holder that is about done)."""

    run_id: str
    export: str
    message_id: str
    pop_receipt: str
    due_at: datetime  # when its message becomes visible (woken: now)
    woken: bool = False

    def live(self, now: datetime) -> bool:
        return now < self.due_at + ENTRY_GRACE

    def to_json(self) -> str:
        return json.dumps(
            {
                "runId": self.run_id,
                "export": self.export,
                "messageId": self.message_id,
                "popReceipt": self.pop_receipt,
                "dueAt": _iso(self.due_at),
                "woken": self.woken,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Waiting | None:
        try:
            doc: Any = json.loads(data)
            due = _parse(doc["dueAt"])
            if due is None:
                return None
            return cls(
                str(doc["runId"]),
                str(doc["export"]),
                str(doc["messageId"]),
                str(doc["popReceipt"]),
                due,
                bool(doc.get("woken")),
            )
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: treated as absent (it only orders runs, it holds no state)


class AccountTurns:
    """The holder's progress and the waiting runs of one ActiveCampaign account, in app storage."""

    def __init__(self, container: ContainerClient, hostname: str) -> None:
        self._container = container
        self.hostname = hostname
        self._lock = container.get_blob_client(account_lease_blob(hostname))

    # ------------------------------------------------------------------ the holder
    def announce(self, lease_id: str, run_id: str, export: str, expected_end: datetime | None) -> None:
        """Say who holds the account and when it expects to be done (written under its lease)."""
        metadata = {
            "runid": run_id,
            "export": export,
            "expectedend": _iso(expected_end) if expected_end else "",
        }
        try:
            self._lock.set_blob_metadata(metadata, lease=lease_id)
        except HttpResponseError as exc:  # a hint for waiting runs, never a reason to stop
            log.warning(
                "could not record the progress of run %s on its account: %s", run_id, type(exc).__name__
            )

    def holder(self) -> Holder | None:
        """The run holding the account (None when it is free)."""
        try:
            props = self._lock.get_blob_properties()
        except ResourceNotFoundError:
            return None
        if props.lease.state != "leased":
            return None
        meta = props.metadata or {}
        return Holder(meta.get("runid", ""), meta.get("export", ""), _parse(meta.get("expectedend")))

    # ------------------------------------------------------------------ waiting runs
    def wait(self, entry: Waiting) -> None:
        self._container.upload_blob(
            account_waiting_blob(self.hostname, entry.run_id),
            entry.to_json(),
            overwrite=True,
            content_settings=_JSON,
        )

    def leave(self, run_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._container.delete_blob(account_waiting_blob(self.hostname, run_id))

    def waiting(self, now: datetime, *, before: str | None = None, first: bool = False) -> list[Waiting]:
        """The live waiting runs, first queued first (`before`: only runs queued before that run id;
        `first`: only the first); entries past their grace are removed on the way."""
        entries: list[Waiting] = []
        prefix = account_waiting_prefix(self.hostname)
        # Blob names are run ids, which sort by creation: the listing is already in queued order.
        for name in sorted(b.name for b in self._container.list_blobs(name_starts_with=prefix)):
            if before is not None and name[len(prefix) :].removesuffix(".json") >= before:
                break
            try:
                data = self._container.download_blob(name).readall()
            except ResourceNotFoundError:
                continue
            entry = Waiting.from_json(data)
            if entry is None or not entry.live(now):
                with contextlib.suppress(ResourceNotFoundError):
                    self._container.delete_blob(name)
                continue
            entries.append(entry)
            if first:
                break
        return entries

    def ahead_of(self, run_id: str, now: datetime) -> Waiting | None:
        """The first live waiting run queued before `run_id`, if any: it goes first."""
        found = self.waiting(now, before=run_id, first=True)
        return found[0] if found else None

    def wake_first(self, queue: Any, now: datetime) -> Waiting | None:
        """Make the first waiting run's message visible now (the account was released, or is free).

        `queue`: the run queue's QueueClient. An entry already woken is on its way: nothing to do.
        """
        entries = self.waiting(now, first=True)
        if not entries:
            return None
        first = entries[0]
        if first.woken or not first.message_id:
            return first  # on its way, or waiting in-process (it polls the lease itself)
        try:
            queue.update_message(first.message_id, first.pop_receipt, visibility_timeout=0)
        except HttpResponseError as exc:
            # Taken by a worker already (its pop receipt changed) or gone: it is on its way, or
            # its entry lapses after the grace period.
            log.info("waiting run %s: its message could not be woken (%s)", first.run_id, type(exc).__name__)
        woken = Waiting(first.run_id, first.export, first.message_id, first.pop_receipt, now, woken=True)
        self.wait(woken)
        log.info(
            "account %s: woke run %s of export %s (first in line)", self.hostname, first.run_id, first.export
        )
        return woken


def clamp_wait(seconds: float | None, *, floor: float, ceiling: float) -> float:
    """A waiting run's message delay: the holder's expected remaining time, within [floor, ceiling]."""
    if seconds is None:
        return ceiling / 4
    return min(max(seconds, floor), ceiling)


def utc_now() -> datetime:
    return datetime.now(UTC)


def later(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
