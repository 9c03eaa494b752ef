"""The run report: what was read, rejected, sent, accepted and failed, and proof that it adds up.

Other tools have marked jobs successful that never reached ActiveCampaign. Here every contact read
ends in exactly one bucket, `check_totals` verifies the sums, and a run whose totals do not add up
fails instead of reporting success.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

__all__ = [
    "FORMULA_TRIGGERS",
    "REJECTED_HEADER",
    "UNSUBSCRIBED_HEADER",
    "RejectedRowsWriter",
    "RunReport",
    "add_counts",
    "neutralise_cell",
    "unsubscribed_csv",
]

REJECTED_HEADER = ("partition", "line", "reason", "detail")


def add_counts(*counts: dict[str, int]) -> dict[str, int]:
    """Counts by kind summed (requests of a run's earlier invocations and of this one), sorted."""
    total: dict[str, int] = {}
    for part in counts:
        for kind, n in part.items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


UNSUBSCRIBED_HEADER = ("email", "outcome", "detail")


@dataclass
class RunReport:
    run_id: str
    export: str
    mode: str = "upsert"
    dry_run: bool = False
    # A withdraw run (shared/withdraw.py): `to_remove` are the export's delivered contacts it
    # unsubscribes, `left_unsubscribed` those it left alone because they had unsubscribed themselves.
    withdraw: bool = False
    left_unsubscribed: int = 0
    full: bool = False
    # The export's list or account changed since its last delivery: the state was not used (see pipeline).
    target_changed: bool = False
    status: str = "running"
    snapshot_id: str | None = None
    error: str | None = None
    # What the reader read differently from what the source lists (e.g. older refreshes left out).
    notes: list[str] = field(default_factory=list)
    # extract + normalize
    rows_read: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    # Custom field values their field type could not take, by field (perstag) and reason: left out
    # of the contact (onInvalidFieldValue "omit") or counted in `rejected` too ("reject").
    field_problems: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates: int = 0
    # Change tables (Synapse Link append-only): deleted records and older versions, read but not
    # members (shared/current_state.py). Part of rows_read, neither rejected nor sent.
    deleted: int = 0
    superseded: int = 0
    contacts: int = 0
    # sync
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    to_send: int = 0
    to_remove: int = 0
    # load
    batches: int = 0
    sent: int = 0  # accepted + failed + unconfirmed once the run ends
    accepted: int = 0
    failed: int = 0
    unconfirmed: int = 0
    removed: int = 0
    resubscribed: int = 0  # rejoiners this export had unsubscribed, subscribed again (mirror mode)
    remove_failed: int = 0
    remove_unconfirmed: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    # Mirror mode: contacts to take the export's tags off (leavers; everyone, for tags the setting
    # dropped), those done, those still tagged after a failure (tried again next run), tags deleted.
    to_untag: int = 0
    untagged: int = 0
    untag_failed: int = 0
    tags_removed: int = 0
    resumed_from: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    # Requests the run sent to ActiveCampaign (each attempt), by kind: "GET /import/info": 212.
    requests: dict[str, int] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    report_blob: str | None = None
    rejected_blob: str | None = None
    unsubscribed_blob: str | None = None  # mirror runs: who left the segment and what became of them
    changes_blob: str | None = None  # one row per contact acted on (shared/changes.py)
    # Freshness (issue 15): when the snapshot landed, and when ActiveCampaign first queued a batch.
    snapshot_landed_at: str | None = None
    first_contact_queued_at: str | None = None
    # The feedback folder written after the run (shared/feedback.py): kind, folder, counts, or the
    # error of a write that failed (the run's own status does not depend on it). Counts only.
    feedback: dict[str, Any] | None = None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def fail(self, reason: str, count: int = 1) -> None:
        self.failed += count
        self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + count

    def counts(self) -> dict[str, int]:
        """Flat integer counts, for live progress in the run record and for metrics."""
        return {
            "rowsRead": self.rows_read,
            "rejected": self.rejected_total,
            "duplicates": self.duplicates,
            "deleted": self.deleted,
            "superseded": self.superseded,
            "contacts": self.contacts,
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "toSend": self.to_send,
            "sent": self.sent,
            "accepted": self.accepted,
            "failed": self.failed,
            "unconfirmed": self.unconfirmed,
            "toRemove": self.to_remove,
            "removed": self.removed,
            "removeFailed": self.remove_failed,
            "resubscribed": self.resubscribed,
            "toUntag": self.to_untag,
            "untagged": self.untagged,
            "untagFailed": self.untag_failed,
            **self._feedback_counts(),
        }

    def _feedback_counts(self) -> dict[str, int]:
        if self.feedback is None:
            return {}
        if "error" in self.feedback:
            return {"feedbackFailed": 1}
        counts = self.feedback.get("counts", {})
        return {
            "feedbackRows": int(self.feedback.get("rows", 0)),
            "feedbackUnsubscribed": int(counts.get("unsubscribed", 0)),
            "feedbackBounced": int(counts.get("bounced", 0)),
            "feedbackSubscribed": int(counts.get("subscribed", 0)),
            "feedbackFailed": 0,
        }

    def check_totals(self, *, completed: bool) -> list[str]:
        """Every sum that must hold; an empty list means the report adds up."""
        problems = []
        if (
            self.rows_read
            != self.rejected_total + self.duplicates + self.deleted + self.superseded + self.contacts
        ):
            problems.append(
                f"rows read ({self.rows_read}) != rejected ({self.rejected_total}) + duplicates "
                f"({self.duplicates}) + deleted ({self.deleted}) + superseded ({self.superseded}) + "
                f"contacts ({self.contacts})"
            )
        if self.contacts != self.new + self.changed + self.unchanged:
            problems.append(
                f"contacts ({self.contacts}) != new ({self.new}) + changed ({self.changed}) + unchanged ({self.unchanged})"
            )
        if completed and not self.dry_run:
            outcomes = self.accepted + self.failed + self.unconfirmed
            if outcomes != self.to_send:
                problems.append(
                    f"to send ({self.to_send}) != accepted ({self.accepted}) + failed ({self.failed}) + "
                    f"unconfirmed ({self.unconfirmed})"
                )
            removals = self.removed + self.remove_failed + self.remove_unconfirmed
            if removals != self.to_remove:
                problems.append(f"removals done ({removals}) != to remove ({self.to_remove})")
            if self.untagged + self.untag_failed != self.to_untag:
                problems.append(
                    f"untagged ({self.untagged}) + untag failed ({self.untag_failed}) != to untag ({self.to_untag})"
                )
        return problems

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["rejected_total"] = self.rejected_total
        return doc


# Characters that make Excel, LibreOffice or Google Sheets read a cell as a formula (or, for tab and
# carriage return, that they strip before looking): OWASP's list for CSV injection.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: one starting with a formula trigger gets a leading `'`.

    OWASP's advice for CSV injection. The price: a value such as `-5` or `+1 555 0100` reads
    `'-5` in the file; the rejected rows are for people to look at, never to load back.
    """
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


class RejectedRowsWriter:
    """Rejected rows as CSV, spooled to disk past 8 MB so a bad snapshot cannot exhaust memory.

    The file holds personal data and goes only to the customer's own storage, never to logs. Marketers
    open it in Excel, and its cells come from the segment (anyone who can write a profile controls
    them), so every cell, the header included, goes through `neutralise_cell`.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        self._file: IO[str] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file)
        self._writer.writerow([neutralise_cell(c) for c in (*REJECTED_HEADER, *columns)])

    def write(self, partition: str, line: int, reason: str, detail: str, values: Sequence[str]) -> None:
        rest = map(neutralise_cell, (reason, detail, *values))
        self._writer.writerow([neutralise_cell(partition), line, *rest])

    def getvalue(self) -> bytes:
        self._file.seek(0)
        data = self._file.read().encode("utf-8")
        self._file.seek(0, io.SEEK_END)
        return data

    def close(self) -> None:
        self._file.close()


def unsubscribed_csv(rows: Iterable[tuple[str, str, str]]) -> IO[bytes]:
    """(email, outcome, detail) rows as CSV in a spooled file (rewound), for `unsubscribed.csv`.

    Outcomes: `unsubscribed`, `failed`, `unconfirmed` (sent, not confirmed in time: retried next
    run) and, in a dry run, `would_unsubscribe`. Personal data: stored in the app's own storage only.
    """
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(UNSUBSCRIBED_HEADER)
    for email, outcome, detail in rows:
        writer.writerow([neutralise_cell(email), outcome, neutralise_cell(detail)])
    text.flush()
    text.detach()
    out.seek(0)
    return out
