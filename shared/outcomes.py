"""What a run did to each contact, as values: the action of a planned operation and its outcome.

The failure codes sit beside the rejection reasons of `shared.mapping` (one vocabulary of stable
codes): they appear in run reports (`failure_reasons`), the rejected-rows CSV and the change log's
`reason` column, so they are never renamed. A `Failure` is decided where it happens (the sender,
the rejoin step) and kept as a value: nothing parses a message to find out what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BATCH_FAILED",
    "BATCH_INTERRUPTED",
    "BATCH_STATUS_CODES",
    "CONTACT_TOO_LARGE",
    "FAILURE_CODES",
    "IMPORT_FAILED",
    "REJECTED",
    "REMOVE_FAILED_ROW",
    "RESUBSCRIBE_FAILED",
    "SEND_FAILED_ROW",
    "UNCONFIRMED",
    "Action",
    "Failure",
    "Outcome",
]


class Action(StrEnum):
    """What a planned operation does to a contact (the change log's `action`)."""

    ADD = "add"  # the key was not in the delivered state
    UPDATE = "update"  # in the delivered state with another fingerprint (or a full resync)
    RESUBSCRIBE = "resubscribe"  # a mirror rejoiner this export had unsubscribed: sent, then subscribed
    REMOVE = "remove"  # mirror mode: left the segment, unsubscribed from the list


class Outcome(StrEnum):
    """What became of an operation (the change log's `outcome`)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # ActiveCampaign refused the contact in the request (400 failureReasons)
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"  # sent; ActiveCampaign's answer does not prove it: sent again next run
    PLANNED = "planned"  # a dry run: what a run would have done


# Failure codes: stable, never rename (see the module's docstring).
REJECTED = "rejected"  # named in a bulk_import 400's failureReasons
IMPORT_FAILED = "failed"  # import/info listed the contact among the batch's failures
BATCH_FAILED = "batch_failed"  # import/info said the batch failed, twice
BATCH_INTERRUPTED = "batch_interrupted"  # import/info said the batch was interrupted, twice
CONTACT_TOO_LARGE = "contact_too_large"  # one contact over the request size limit: never sent
UNCONFIRMED = "unconfirmed"  # see Outcome.UNCONFIRMED
RESUBSCRIBE_FAILED = "resubscribe_failed"  # imported, but subscribing the rejoiner again failed
FAILURE_CODES: tuple[str, ...] = (
    REJECTED,
    IMPORT_FAILED,
    BATCH_FAILED,
    BATCH_INTERRUPTED,
    CONTACT_TOO_LARGE,
    UNCONFIRMED,
    RESUBSCRIBE_FAILED,
)
BATCH_STATUS_CODES = {"failed": BATCH_FAILED, "interrupted": BATCH_INTERRUPTED}
# The `reason` of the rejected-rows CSV's lines for contacts ActiveCampaign did not take.
SEND_FAILED_ROW = "activecampaign_failed"
REMOVE_FAILED_ROW = "unsubscribe_failed"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an operation did not succeed: a stable code and a detail for people (no cell values)."""

    code: str  # one of FAILURE_CODES
    detail: str

    @property
    def outcome(self) -> Outcome:
        if self.code == UNCONFIRMED:
            return Outcome.UNCONFIRMED
        if self.code == REJECTED:
            return Outcome.REJECTED
        return Outcome.FAILED

    def __str__(self) -> str:
        # For people (the rejected-rows CSV's detail); never read back.
        return f"{self.code}: {self.detail}" if self.detail else self.code

    def to_json(self) -> list[str]:
        return [self.code, self.detail]

    @staticmethod
    def from_json(value: object) -> Failure:
        if not isinstance(value, list) or len(value) != 2 or not all(isinstance(part, str) for part in value):
            raise ValueError(f"a failure must be [code, detail], got {value!r}")
        return Failure(value[0], value[1])

    @staticmethod
    def from_legacy(text: str) -> Failure:
        """A failure stored as `"code: detail"` (checkpoint formats 1-3), for their migration only."""
        code, sep, detail = text.partition(":")
        if not sep or not code.strip():
            return Failure(IMPORT_FAILED, text.strip())
        return Failure(code.strip(), detail.strip())
