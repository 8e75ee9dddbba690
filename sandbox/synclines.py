"""One readable line per sync, read from the connector's own sync log table.

Why the table rather than the host's log: the sync log is what the connector records for people (the status
page shows the same rows), it has the direction, the fields with before and after, and the duration, and it
does not change shape when someone rewords a log message.

The log is read newest first; every poll reads back to a horizon a little before the newest row seen, so a
row appended late by a slower processor (its time stamp earlier than a row already printed) still shows.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from shared.errors import ConnectorError
from shared.models.records import SyncLogEntry, SyncOutcome
from shared.store.synclog import SyncLogStore
from shared.sync.engine import BOTH, PC_TO_SF, SF_TO_PC

ARROWS = {PC_TO_SF: "PC → SF", SF_TO_PC: "SF → PC", BOTH: "PC ⇄ SF"}
LATE_ROWS = dt.timedelta(seconds=30)
"""How much older than the newest row seen a row may be and still be printed (slower processors)."""
MAX_FIELDS = 4
_NOT_FIELDS = {"conflicts", "account_candidates"}


def _short(value: Any, width: int = 22) -> str:
    if value is None or value == "":
        return "∅"
    if isinstance(value, list):
        return f"[{len(value)}]"
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def describe_changes(changes: dict[str, Any]) -> str:
    """`dealValue 40000→75000, stage open→accepted` (at most MAX_FIELDS, then "+N more")."""
    parts = []
    for key, change in changes.items():
        if key in _NOT_FIELDS:
            continue
        if isinstance(change, list) and len(change) >= 2:
            parts.append(f"{key} {_short(change[0])}→{_short(change[1])}")
        else:
            parts.append(key)
    shown = ", ".join(parts[:MAX_FIELDS])
    if len(parts) > MAX_FIELDS:
        shown += f", +{len(parts) - MAX_FIELDS} more"
    if "conflicts" in changes:
        shown += f"; {len(changes['conflicts'])} conflict(s) resolved"
    return shown


def _duration(millis: float | None) -> str:
    if millis is None:
        return ""
    return f"{millis:.0f} ms" if millis < 1000 else f"{millis / 1000:.1f} s"


def format_line(entry: SyncLogEntry, name: str | None) -> str:
    """`14:02:11  SF → PC  updated    "Contoso - Azure migration"  opp 006… ref 1a2b3c4d  dealValue 1→2  412 ms`."""
    local = entry.at.astimezone().strftime("%H:%M:%S")
    arrow = ARROWS.get(entry.direction, entry.direction)
    ids = " ".join(filter(None, [f"opp {entry.opportunity_id}" if entry.opportunity_id else "",
                                 f"ref {entry.referral_id[:8]}" if entry.referral_id else ""]))
    what = describe_changes(entry.changes)
    if entry.outcome in (SyncOutcome.SKIPPED, SyncOutcome.FAILED) or (entry.message and not what):
        what = " | ".join(filter(None, [what, _short(entry.message, 110)]))
    title = f"\"{_short(name, 40)}\"  " if name else ""
    return f"{local}  {arrow}  {entry.outcome.value:<9}  {title}{ids}  {what or 'no field changed'}  " \
           f"{_duration(entry.duration_ms)}".rstrip()


def _key(entry: SyncLogEntry) -> tuple[Any, ...]:
    return (entry.at.isoformat(), entry.direction, entry.outcome, entry.referral_id, entry.opportunity_id,
            entry.message)


class SyncLogTail:
    """Prints each new sync log row once, oldest first.

    Args:
        synclog: the connector's sync log (`Store.synclog`).
        write: where a line goes (a print that flushes).
        name_of: a record's name for the line (the simulators know it), or None.
        interval: seconds between two reads of the table.
        since: rows older than this are history, never printed.
    """

    def __init__(self, synclog: SyncLogStore, write: Callable[[str], None],
                 name_of: Callable[[SyncLogEntry], str | None], *, interval: float = 0.5,
                 since: dt.datetime | None = None) -> None:
        self.synclog, self.write, self.name_of, self.interval = synclog, write, name_of, interval
        self._horizon = since or dt.datetime.now(dt.timezone.utc) - LATE_ROWS
        self._seen: set[tuple[Any, ...]] = set()
        self._last_skip: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-synclog", daemon=True)
        self.printed = 0

    def poll(self) -> int:
        """Read the rows since the horizon and print the new ones; returns how many were new."""
        fresh: list[SyncLogEntry] = []
        for entry in self.synclog.iter_recent():
            if entry.at < self._horizon:
                break
            key = _key(entry)
            if key not in self._seen:
                self._seen.add(key)
                fresh.append(entry)
        for entry in reversed(fresh):
            if not self._repeated_skip(entry):
                self.write(format_line(entry, self._name(entry)))
                self.printed += 1
        if fresh:
            newest = max(entry.at for entry in fresh)
            self._horizon = max(self._horizon, newest - LATE_ROWS)
            self._seen = {key for key in self._seen if dt.datetime.fromisoformat(key[0]) >= self._horizon}
        return len(fresh)

    def _repeated_skip(self, entry: SyncLogEntry) -> bool:
        """The reconcile re-queues a waiting opportunity every run: say "still waiting" once, not every minute."""
        record = entry.opportunity_id or entry.referral_id or ""
        if entry.outcome is not SyncOutcome.SKIPPED:
            self._last_skip.pop(record, None)
            return False
        repeated = self._last_skip.get(record) == entry.message
        self._last_skip[record] = entry.message
        return repeated

    def _name(self, entry: SyncLogEntry) -> str | None:
        try:
            return self.name_of(entry)
        except (ConnectorError, LookupError):
            return None

    def start(self) -> SyncLogTail:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                self.poll()
                failing = False
            except ConnectorError as exc:
                if not failing:  # say it once, not every second
                    self.write(f"(sync log unreadable for now: {exc})")
                failing = True


__all__ = ["SyncLogTail", "describe_changes", "format_line"]
