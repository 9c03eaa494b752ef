"""NCRONTAB schedules (`{second} {minute} {hour} {day} {month} {day-of-week}`, UTC), as Azure uses.

One parser for the timer's `EXPORT_SCHEDULE` and for each export's own `schedule`, so both accept
exactly the same expressions. Evaluation is croniter's (a maintained cron library that reads the
seconds field first with `second_at_beginning`); this module adds what NCRONTAB requires on top:
exactly six fields, none of the cron extensions NCRONTAB lacks (`L`, `W`, `#`, `?`, `@daily`), and
day-of-month AND day-of-week both matching when both are restricted (`day_or=False`), as NCrontab
does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

__all__ = ["FORMAT_HINT", "Due", "Schedule", "ScheduleError", "due", "iso", "parse_iso", "validate"]

_NAMES = r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat"
_ONE_SECOND = timedelta(seconds=1)
_FIELD = re.compile(r"[0-9a-z*/,\-]+")
FORMAT_HINT = (
    "6 fields '{second} {minute} {hour} {day} {month} {day-of-week}' in UTC, "
    "e.g. '0 */5 * * * *' (every 5 minutes) or '0 30 2 * * *' (daily at 02:30)"
)


class ScheduleError(ValueError):
    """Not an NCRONTAB expression; the message says what is wrong and shows the format."""


@dataclass(frozen=True)
class Schedule:
    expression: str

    @classmethod
    def parse(cls, text: str) -> Schedule:
        fields = text.split()
        if len(fields) != 6:
            raise ScheduleError(
                f"{text!r} has {len(fields)} field(s); an NCRONTAB schedule has {FORMAT_HINT}"
            )
        for item in fields:
            lowered = item.lower()
            if not _FIELD.fullmatch(lowered) or re.search(r"[a-z]", re.sub(_NAMES, "", lowered)):
                raise ScheduleError(
                    f"{text!r}: field {item!r} is not NCRONTAB (numbers, ranges a-b, lists a,b, steps */n, "
                    f"* and month or day names only); {FORMAT_HINT}"
                )
        expression = " ".join(fields)
        if not croniter.is_valid(expression, second_at_beginning=True):
            raise ScheduleError(f"{text!r} is not a valid schedule (a value out of range?); {FORMAT_HINT}")
        try:  # is_valid accepts some expressions that can never fire (e.g. 30 February)
            cls(expression).next_after(datetime(2000, 1, 1, tzinfo=UTC))
        except (ValueError, KeyError) as exc:
            raise ScheduleError(f"{text!r} never fires ({exc}); {FORMAT_HINT}") from None
        return cls(expression)

    def _iter(self, moment: datetime) -> croniter:
        return croniter(self.expression, moment.astimezone(UTC), second_at_beginning=True, day_or=False)

    def next_after(self, moment: datetime) -> datetime:
        """The first time strictly after `moment` the schedule fires."""
        nxt: datetime = self._iter(moment).get_next(datetime)
        return nxt.astimezone(UTC)

    def last_at_or_before(self, moment: datetime) -> datetime:
        """The newest time at or before `moment` the schedule fired."""
        # get_prev is strictly before; a moment exactly on a firing time counts as that firing.
        prev: datetime = self._iter(moment.replace(microsecond=0) + _ONE_SECOND).get_prev(datetime)
        return prev.astimezone(UTC)


def validate(text: str) -> str:
    """The expression with its whitespace normalised; raises ScheduleError."""
    return Schedule.parse(text).expression


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with a `Z`, like the run records' timestamps."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class Due:
    """Whether a schedule has fired since the last firing that was acted on."""

    due: bool
    fired: datetime  # the newest firing at or before now
    next: datetime  # the first firing after now


def due(schedule: Schedule, now: datetime, handled: datetime | None) -> Due:
    """`handled` is the newest firing already acted on; None: never checked under this schedule.

    A schedule checked for the first time is not due: an export saved at 14:00 with a daily 02:00
    schedule first runs at 02:00 the next day, not at once for the firing it was saved after.
    """
    fired = schedule.last_at_or_before(now)
    nxt = schedule.next_after(now)
    return Due(due=handled is not None and fired > handled, fired=fired, next=nxt)
