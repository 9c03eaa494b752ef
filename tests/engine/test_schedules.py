"""NCRONTAB schedules: what parses, what each mistake says, and when a schedule is due."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from shared.config import ConfigError, parse_config
from shared.schedules import Schedule, ScheduleError, due, iso
from shared.settings import SettingsError, load_settings
from tests.engine.test_config import TRUST, minimal


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2026-11-20T10:02:07", "2026-11-20T10:05:00"),
        ("0 30 2 * * *", "2026-11-20T02:30:00", "2026-11-21T02:30:00"),  # strictly after
        ("0 0 9 * * MON-FRI", "2026-11-21T00:00:00", "2026-11-23T09:00:00"),  # Saturday -> Monday
        ("30 15 */6 * * *", "2026-11-20T06:15:31", "2026-11-20T12:15:30"),  # seconds come first
        ("0 0 0 1 * Mon", "2026-11-20T00:00:00", "2027-02-01T00:00:00"),  # day AND weekday: a Monday the 1st
    ],
)
def test_next_firing(expression: str, after: str, expected: str) -> None:
    assert Schedule.parse(expression).next_after(at(after)) == at(expected)


def test_last_firing_counts_a_moment_exactly_on_a_firing() -> None:
    schedule = Schedule.parse("0 30 2 * * *")
    assert schedule.last_at_or_before(at("2026-11-20T02:30:00")) == at("2026-11-20T02:30:00")
    assert schedule.last_at_or_before(at("2026-11-20T02:29:59")) == at("2026-11-19T02:30:00")


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("0 0 6 * *", "has 5 field(s); an NCRONTAB schedule has 6 fields"),
        ("@daily", "has 1 field(s)"),
        ("0 0 0 L * *", "field 'L' is not NCRONTAB"),
        ("0 0 0 ? * *", "field '?' is not NCRONTAB"),
        ("0 0 0 * * mon#2", "field 'mon#2' is not NCRONTAB"),
        ("0 61 * * * *", "not a valid schedule"),
        ("0 0 0 30 2 *", "never fires"),
    ],
)
def test_bad_schedules_say_what_is_wrong(expression: str, fragment: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape("e.g. '0 */5 * * * *'")) as info:
        Schedule.parse(expression)
    assert fragment in str(info.value)


def test_due_once_per_firing_and_never_on_the_first_check() -> None:
    schedule = Schedule.parse("0 30 2 * * *")
    first = due(schedule, at("2026-11-20T14:00:00"), None)
    assert not first.due  # saved after today's firing: waits for tomorrow's
    assert (first.fired, first.next) == (at("2026-11-20T02:30:00"), at("2026-11-21T02:30:00"))
    assert not due(schedule, at("2026-11-21T02:29:00"), first.fired).due
    fired = due(schedule, at("2026-11-21T02:33:00"), first.fired)  # the first check after 02:30
    assert fired.due
    assert fired.fired == at("2026-11-21T02:30:00")
    assert not due(schedule, at("2026-11-21T02:38:00"), fired.fired).due  # acted on once
    assert due(schedule, at("2026-11-23T10:00:00"), fired.fired).due  # missed firings: once, not twice


def test_an_export_schedule_is_validated_and_normalised() -> None:
    doc = minimal()
    doc["exports"]["vip"].update(trigger="scheduled", schedule="0  30 2 * * *")
    assert parse_config(doc, **TRUST).exports["vip"].schedule == "0 30 2 * * *"
    doc["exports"]["vip"]["schedule"] = "30 2 * * *"
    with pytest.raises(ConfigError) as info:
        parse_config(doc, **TRUST)
    (error,) = info.value.errors
    assert error.startswith("exports.vip.schedule: '30 2 * * *' has 5 field(s)")


def test_a_schedule_without_trigger_scheduled_is_refused() -> None:
    doc = minimal()
    doc["exports"]["vip"]["schedule"] = "0 30 2 * * *"  # trigger defaults to onRefresh
    with pytest.raises(ConfigError) as info:
        parse_config(doc, **TRUST)
    (error,) = info.value.errors
    assert error.startswith('exports.vip.schedule: a schedule is only used with "trigger": "scheduled"')


def test_a_scheduled_export_without_schedule_uses_the_apps() -> None:
    doc = minimal()
    doc["exports"]["vip"]["trigger"] = "scheduled"
    assert parse_config(doc, **TRUST).exports["vip"].schedule is None


def test_export_schedule_setting_is_validated_with_the_same_rules() -> None:
    assert load_settings({}).export_schedule == "0 */5 * * * *"
    assert load_settings({"EXPORT_SCHEDULE": " 0 0 */6 * * * "}).export_schedule == "0 0 */6 * * *"
    with pytest.raises(SettingsError, match=r"^EXPORT_SCHEDULE: '0 \*/6 \* \* \*' has 5 field\(s\)"):
        load_settings({"EXPORT_SCHEDULE": "0 */6 * * *"})


def test_iso_is_utc_with_z() -> None:
    assert iso(at("2026-11-20T02:30:00") + timedelta(microseconds=5)) == "2026-11-20T02:30:00Z"
