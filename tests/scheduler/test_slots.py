"""Which cron slot is due: the latest at or before now, never one older than the schedule."""

from datetime import datetime, timedelta, timezone

import pytest

from flexiq_search.errors import FlexiqError
from flexiq_search.scheduler import check_schedule, due_slot, latest_slot, next_slot

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("now, slot", [
    ("2026-11-26T02:00:00", "2026-11-26T02:00:00"),  # exactly on the slot: due
    ("2026-11-26T02:00:59.9", "2026-11-26T02:00:00"),
    ("2026-11-26T01:59:59.9", "2026-11-25T02:00:00"),  # a moment before: yesterday's
    ("2026-11-29T13:00:00", "2026-11-29T02:00:00"),  # after days of downtime: only the newest
])
def test_the_latest_slot_at_or_before_now(now, slot):
    assert latest_slot("0 2 * * *", "UTC", at(now)) == at(slot)


def test_slots_follow_the_schedules_time_zone_across_daylight_saving():
    # 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer
    assert latest_slot("0 2 * * *", "Europe/Berlin", at("2026-11-26T12:00:00")) == at("2026-11-26T01:00:00")
    assert latest_slot("0 2 * * *", "Europe/Berlin", at("2026-07-01T12:00:00")) == at("2026-07-01T00:00:00")
    assert next_slot("0 2 * * *", "Europe/Berlin", at("2026-11-26T01:00:00")) == at("2026-11-27T01:00:00")


def test_a_schedule_never_runs_a_slot_older_than_itself():
    schedule = {"cron": "0 2 * * *", "timezone": "UTC", "created": "2026-11-26T02:00:30+00:00"}
    assert due_slot(schedule, at("2026-11-26T09:00:00")) is None  # today's 02:00 predates it
    assert due_slot(schedule, at("2026-11-27T02:00:00")) == at("2026-11-27T02:00:00")


@pytest.mark.parametrize("name, cron, zone, message", [
    ("nightly", "0 2 * *", "UTC", "five fields"),
    ("nightly", "0 2 * * * *", "UTC", "five fields"),  # croniter would read a seconds field
    ("nightly", "61 2 * * *", "UTC", "not valid"),
    ("nightly", "0 2 * * *", "Mars/Olympus", "unknown time zone"),
    ("night ly", "0 2 * * *", "UTC", "schedule name"),
    ("", "0 2 * * *", "UTC", "schedule name"),
])
def test_bad_schedules_are_one_line_errors(name, cron, zone, message):
    with pytest.raises(FlexiqError, match=message) as error:
        check_schedule(name, cron, zone)
    assert "\n" not in str(error.value)


def test_slot_arithmetic_is_whole_minutes():
    now = at("2026-11-26T02:07:31.5")
    assert latest_slot("*/5 * * * *", "UTC", now) == at("2026-11-26T02:05:00")
    assert next_slot("*/5 * * * *", "UTC", now) - now == timedelta(minutes=2, seconds=28.5)
