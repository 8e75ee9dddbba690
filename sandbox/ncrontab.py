"""NCRONTAB schedules, as Azure Functions timer triggers read them.

Why our own parser: the local host must fire timers exactly where the real host would, and the format
is small enough that a dependency would cost more than it saves. Six fields, separated by spaces:
``second minute hour day month day-of-week``. Each field takes ``*``, a number or a name (``JAN``,
``MON``), a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from a to the field's maximum), and
comma-separated lists of those. Day of week counts from 0 (Sunday) to 6; 7 is also Sunday.

As in NCrontab (the library the Functions timer extension uses), a time matches when EVERY field
matches: a schedule that restricts both day and day-of-week fires only on days meeting both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_MONTHS = {name: number for number, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
_DAYS = {name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_NAMES = {"month": _MONTHS, "day-of-week": _DAYS}
_SEARCH_YEARS = 5
"""How far ahead `next_after` looks before calling a schedule impossible (Feb 30 never comes)."""


class CronError(ValueError):
    """An expression that is not a valid 6-field NCRONTAB schedule; the message says which part."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the set of allowed values of each field.

    Attributes:
        expression: the text it was parsed from (for log lines and errors).
    """

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 = Sunday ... 6 = Saturday (a 7 in the expression is folded into 0)."""

    def matches(self, moment: dt.datetime) -> bool:
        """Whether `moment` (to the second) is one of the schedule's occurrences."""
        return (moment.second in self.seconds and moment.minute in self.minutes and moment.hour in self.hours
                and self._day_matches(moment.date()) and moment.month in self.months)

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first occurrence strictly after `moment`, keeping its time zone (if any).

        Why skipping whole months, days, hours and minutes: a brute-force walk second by second would
        take millions of steps for a yearly schedule.

        Raises:
            CronError: when nothing matches within five years (e.g. ``0 0 0 30 2 *``).
        """
        candidate = moment.replace(microsecond=0) + dt.timedelta(seconds=1)
        limit = candidate + dt.timedelta(days=366 * _SEARCH_YEARS)
        while candidate < limit:
            if candidate.month not in self.months:
                year, month = divmod(candidate.month, 12)
                candidate = candidate.replace(year=candidate.year + year, month=month + 1, day=1,
                                              hour=0, minute=0, second=0)
            elif not self._day_matches(candidate.date()):
                candidate = (candidate + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif candidate.hour not in self.hours:
                candidate = (candidate + dt.timedelta(hours=1)).replace(minute=0, second=0)
            elif candidate.minute not in self.minutes:
                candidate = (candidate + dt.timedelta(minutes=1)).replace(second=0)
            elif candidate.second not in self.seconds:
                candidate += dt.timedelta(seconds=1)
            else:
                return candidate
        raise CronError(f"schedule {self.expression!r} never fires (nothing matches within {_SEARCH_YEARS} years)")

    def _day_matches(self, day: dt.date) -> bool:
        return day.day in self.days and day.isoweekday() % 7 in self.weekdays


def parse(expression: str) -> Schedule:
    """Parse a 6-field NCRONTAB expression.

    Raises:
        CronError: naming the field and the part that is wrong.
    """
    parts = expression.split()
    if len(parts) != len(_FIELDS):
        raise CronError(f"schedule {expression!r} has {len(parts)} fields; NCRONTAB needs 6: "
                        "second minute hour day month day-of-week (e.g. '0 */5 * * * *')")
    values = [_parse_field(part, field, low, high, expression) for part, (field, low, high) in zip(parts, _FIELDS)]
    weekdays = frozenset(day % 7 for day in values[5])
    return Schedule(expression, *values[:5], weekdays)


def _parse_field(text: str, field: str, low: int, high: int, expression: str) -> frozenset[int]:
    allowed: set[int] = set()
    for item in text.split(","):
        try:
            allowed.update(_parse_item(item, field, low, high))
        except CronError as exc:
            raise CronError(f"schedule {expression!r}: {field} field {text!r}: {exc}") from None
    return frozenset(allowed)


def _parse_item(item: str, field: str, low: int, high: int) -> range:
    span, _, step_text = item.partition("/")
    step = _number(step_text, field, 1, high - low + 1, names=False) if step_text else 1
    if span == "*":
        start, end = low, high
    elif "-" in span:
        first, _, last = span.partition("-")
        start, end = _number(first, field, low, high), _number(last, field, low, high)
        if start > end:
            raise CronError(f"range {span!r} runs backwards")
    else:
        start = _number(span, field, low, high)
        end = high if step_text else start
    return range(start, end + 1, step)


def _number(text: str, field: str, low: int, high: int, *, names: bool = True) -> int:
    table = _NAMES.get(field, {}) if names else {}
    if text.upper() in table:
        return table[text.upper()]
    if not text.isdigit():
        raise CronError(f"{text!r} is not a number" + (f" or a name ({', '.join(table)})" if table else ""))
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{value} is outside {low}-{high}")
    return value


__all__ = ["CronError", "Schedule", "parse"]
