"""Records the sandbox keeps: account objects, queued batches and the request log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sandbox.validation import ImportContact

BatchStatus = Literal["waiting", "claimed", "active", "completed", "failed", "interrupted"]
BatchOutcome = Literal["completed", "failed", "interrupted"]
SUBSCRIBED = 1
UNSUBSCRIBED = 2
# contactList status 3: the address bounced (the contactLists page's example carries status "3").
BOUNCED = 3


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class FieldSpec:
    """A custom field of the account; `perstag` is what mappings name, `id` what imports send."""

    id: int
    perstag: str
    title: str = ""
    type: str = "text"
    # Choice fields (dropdown, radio, checkbox, listbox, multiselect): the option values, in order.
    options: tuple[str, ...] = ()

    @property
    def display_title(self) -> str:
        return self.title or self.perstag.replace("_", " ").title()


@dataclass(frozen=True)
class ListInfo:
    id: int
    name: str
    cdate: str


@dataclass
class ContactRecord:
    id: int
    email: str
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    customer_acct_name: str = ""
    fields: dict[int, str] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    cdate: str = field(default_factory=now_iso)
    udate: str = field(default_factory=now_iso)
    # Bounce fields of the contact object (contacts pages): a count and the day of the last bounce.
    bounced_hard: int = 0
    bounced_date: str = "0000-00-00"

    def snapshot(self) -> ContactRecord:
        """A copy a test may hold while the worker keeps updating the original."""
        return ContactRecord(
            self.id,
            self.email,
            self.first_name,
            self.last_name,
            self.phone,
            self.customer_acct_name,
            dict(self.fields),
            set(self.tags),
            self.cdate,
            self.udate,
            self.bounced_hard,
            self.bounced_date,
        )


@dataclass
class Batch:
    batch_id: str
    contacts: list[ImportContact]
    exclude_automations: bool
    callback: object | None
    posted_at: float  # time.monotonic() of the POST
    outcome: BatchOutcome = "completed"
    applied_before_interrupt: int | None = None
    # Failure entries import/info reports beyond the real ones (entries matching no contact sent).
    stray_failures: list[str] = field(default_factory=list)
    status: BatchStatus = "waiting"
    success: list[int] = field(default_factory=list)
    failure: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed", "interrupted")


@dataclass(frozen=True)
class RequestRecord:
    """One request the sandbox answered (or dropped): what a test checks the client against."""

    at: float  # time.monotonic() when the request was read
    method: str
    path: str
    query: str
    status: int  # 0: connection dropped without an answer
    outcome: str  # "ok", "forbidden", "rate_limited", "bulk_rate_limited", "invalid", "fault:<kind>", ...
    contacts: int = 0  # bulk_import: contacts in the body
    body_bytes: int = 0
    response: object | None = None
