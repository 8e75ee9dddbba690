"""The NCRONTAB parser of the local host: next occurrences as Azure's timer trigger computes them, and
one clear error per kind of bad expression."""

from __future__ import annotations

import datetime as dt

import pytest

from sandbox.ncrontab import CronError, parse

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("* * * * * *", "2024-05-01T10:03:07.400", "2024-05-01T10:03:08"),
    ("0 */5 * * * *", "2024-05-01T10:03:07", "2024-05-01T10:05:00"),
    ("0 */5 * * * *", "2024-05-01T10:05:00", "2024-05-01T10:10:00"),  # strictly after
    ("30 0 8-18/4 * * *", "2024-05-01T12:00:31", "2024-05-01T16:00:30"),
    ("5/20 * * * * *", "2024-05-01T10:00:26", "2024-05-01T10:00:45"),
    ("0 0,30 9 * * *", "2024-05-01T09:10:00", "2024-05-01T09:30:00"),
    ("0 30 9 * * MON-FRI", "2024-05-03T10:00:00", "2024-05-06T09:30:00"),  # Friday -> Monday
    ("0 0 0 * * 7", "2024-05-01T00:00:00", "2024-05-05T00:00:00"),  # 7 is Sunday too
    ("0 0 0 1 JAN *", "2024-12-31T23:59:59", "2025-01-01T00:00:00"),
    ("0 0 12 29 FEB *", "2025-03-01T00:00:00", "2028-02-29T12:00:00"),
    ("0 0 0 31 * *", "2024-04-01T00:00:00", "2024-05-31T00:00:00"),  # April has no 31st
    ("0 0 0 13 * FRI", "2024-01-01T00:00:00", "2024-09-13T00:00:00"),  # day AND day-of-week
    ("0 15 10 * nov-dec sun", "2024-03-01T00:00:00", "2024-11-03T10:15:00"),  # names, any case
])
def test_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert parse(expression).next_after(at(after)) == at(expected)


def test_next_occurrence_keeps_the_time_zone_and_drops_microseconds() -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    found = parse("0 0 9 * * *").next_after(dt.datetime(2024, 5, 1, 8, 59, 59, 999999, tzinfo=paris))
    assert found == dt.datetime(2024, 5, 1, 9, 0, 0, tzinfo=paris)
    assert found.microsecond == 0 and found.tzinfo is paris


def test_matches_only_occurrences() -> None:
    schedule = parse("0 30 9 * * MON-FRI")
    assert schedule.matches(at("2024-05-06T09:30:00"))
    assert not schedule.matches(at("2024-05-05T09:30:00"))  # a Sunday
    assert not schedule.matches(at("2024-05-06T09:30:01"))


@pytest.mark.parametrize(("expression", "message"), [
    ("0 */5 * * *", "has 5 fields; NCRONTAB needs 6"),
    ("60 * * * * *", "second field '60': 60 is outside 0-59"),
    ("0 0 24 * * *", "hour field '24': 24 is outside 0-23"),
    ("0 0 0 0 * *", "day field '0': 0 is outside 1-31"),
    ("0 0 0 * FOO *", "month field 'FOO': 'FOO' is not a number or a name (JAN, FEB"),
    ("0 0 0 * * MON-XYZ", "day-of-week field 'MON-XYZ': 'XYZ' is not a number or a name (SUN"),
    ("0 10-5 * * * *", "minute field '10-5': range '10-5' runs backwards"),
    ("0 0 0 * DEC-FEB *", "range 'DEC-FEB' runs backwards"),  # no wrap-around, as in NCrontab
    ("*/0 * * * * *", "second field '*/0': 0 is outside 1-60"),
    ("1,,2 * * * * *", "second field '1,,2': '' is not a number"),
    ("*/MON * * * * *", "'MON' is not a number"),
])
def test_bad_expressions_say_which_field_and_why(expression: str, message: str) -> None:
    with pytest.raises(CronError) as error:
        parse(expression)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_schedule_that_never_fires_is_an_error_not_a_hang() -> None:
    schedule = parse("0 0 0 30 FEB *")
    with pytest.raises(CronError, match="never fires"):
        schedule.next_after(at("2024-01-01T00:00:00"))
