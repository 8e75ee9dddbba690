"""The Salesforce change-poll cursor, as plain functions: where to start reading, what is new, how to advance.

The cursor is the (SystemModstamp, Id) of the newest row handed on, plus the rows handed on inside the
look-back window. Each poll reads `SystemModstamp >= newest - overlap`, ordered by `SystemModstamp, Id`:

- The overlap catches rows that commit late with an earlier SystemModstamp (a long transaction stamps
  its rows when it starts, they become visible when it ends): a poll that ran in between did not see them,
  the next one does, as long as the delay is shorter than the overlap (setting
  `COSELL_SF_POLL_OVERLAP_SECONDS`, 5 minutes by default).
- The overlap also re-reads rows already handed on. The cursor keeps their ids with the SystemModstamp they
  had (`seen`), so such a row is handed on again only if it changed since. Why this rather than comparing
  with each link's last synced SystemModstamp: opted-in opportunities without a link yet and solutions rows
  have no link, the check needs no store read per row, and the window is small, so `seen` stays small
  (entries older than the window are dropped as the cursor advances).

The cursor is saved only after a batch was enqueued. A crash between the two hands that batch on again
after restart: harmless, since the sync reads both sides fresh and a row with nothing new costs no write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def parse_modstamp(value: str) -> dt.datetime:
    """Salesforce's `2026-11-26T05:48:28.593+0000` (or any ISO 8601 form) as an aware UTC datetime."""
    moment = dt.datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def format_modstamp(value: dt.datetime) -> str:
    """A SOQL dateTime literal with milliseconds (`2026-11-26T05:48:28.593Z`); also the stored form."""
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Row:
    """One changed row: its Id and SystemModstamp (the poller keeps the record beside it)."""

    id: str
    modstamp: dt.datetime

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Row:
        return cls(str(record["Id"]), parse_modstamp(str(record["SystemModstamp"])))


@dataclass(frozen=True)
class PollCursor:
    """Where a poll stands.

    Attributes:
        modstamp: SystemModstamp of the newest row handed on (None: nothing yet, read from the beginning).
        last_id: that row's Id (the second half of the (timestamp, id) position, shown on the status page).
        seen: Id -> SystemModstamp (stored form) of the rows handed on inside the look-back window.
    """

    modstamp: dt.datetime | None = None
    last_id: str | None = None
    seen: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> PollCursor:
        """From the stored `Cursor.value` (an empty one: a cursor that has handed on nothing)."""
        modstamp = value.get("modstamp")
        return cls(parse_modstamp(modstamp) if modstamp else None, value.get("last_id"), dict(value.get("seen", {})))

    def to_value(self) -> dict[str, Any]:
        return {"modstamp": format_modstamp(self.modstamp) if self.modstamp else None, "last_id": self.last_id,
                "seen": dict(self.seen)}


def window_start(cursor: PollCursor, overlap: dt.timedelta) -> dt.datetime | None:
    """The earliest SystemModstamp the next poll reads (None: read everything)."""
    return None if cursor.modstamp is None else cursor.modstamp - overlap


def fresh(cursor: PollCursor, rows: Iterable[Row]) -> list[Row]:
    """The rows not yet handed on in this state: new rows, and seen rows that changed since."""
    out: list[Row] = []
    taken: set[tuple[str, dt.datetime]] = set()
    for row in rows:
        key = (row.id, row.modstamp)
        if cursor.seen.get(row.id) == format_modstamp(row.modstamp) or key in taken:
            continue
        taken.add(key)
        out.append(row)
    return out


def advance(cursor: PollCursor, handed: Sequence[Row], overlap: dt.timedelta) -> PollCursor:
    """The cursor after `handed` was safely enqueued: newest position, `seen` updated and pruned to the window."""
    if not handed:
        return cursor
    newest = max(handed, key=lambda r: (r.modstamp, r.id))
    position = (cursor.modstamp, cursor.last_id or "")
    modstamp, last_id = cursor.modstamp, cursor.last_id
    if cursor.modstamp is None or (newest.modstamp, newest.id) > position:  # type: ignore[operator]
        modstamp, last_id = newest.modstamp, newest.id
    seen = {**cursor.seen, **{row.id: format_modstamp(row.modstamp) for row in handed}}
    assert modstamp is not None
    boundary = format_modstamp(modstamp - overlap)
    return PollCursor(modstamp, last_id, {k: v for k, v in seen.items() if v >= boundary})


__all__ = ["PollCursor", "Row", "advance", "format_modstamp", "fresh", "parse_modstamp", "window_start"]
