"""The org's daily API budget: observed from every answer, enforced before every call, reported.

Why: the daily API limit is per org and shared with every other integration. Salesforce reports the usage
on each answer (`Sforce-Limit-Info: api-usage=used/limit`). Above `COSELL_SF_BUDGET_SHARE` of the limit,
non-urgent work (polling, backfill, reconcile) stops with `LimitExceeded`, leaving the rest to what a person
is waiting for (a single sync a seller asked for); at the limit itself everything stops. Each instance sees
the org-wide count on its own answers, so no coordination is needed to enforce; the numbers are written to
`store.status` ("salesforce-budget") for the status page, at most once a minute or when the state changes.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.errors import ConnectorError, LimitExceeded
from shared.models.records import StatusDoc, utcnow

if TYPE_CHECKING:
    from shared.store import RecordTable

log = logging.getLogger(__name__)

BUDGET_DOC = "salesforce-budget"
PERSIST_EVERY = dt.timedelta(seconds=60)
REFRESH_AFTER = dt.timedelta(minutes=5)
"""A refusal based on numbers this old lets one call through: its answer tells whether the window freed calls
(otherwise a paused poller, making no calls, would never learn that it may resume)."""

FRESH = dt.timedelta(seconds=5)
"""How recent a usage reading must be to explain the answer it came with."""

_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")


@dataclass(frozen=True)
class ApiUsage:
    """The org's usage as Salesforce last reported it."""

    used: int
    limit: int
    observed_at: dt.datetime

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit else 1.0


def parse_limit_info(header: str | None, *, now: dt.datetime | None = None) -> ApiUsage | None:
    """`api-usage=18/5000` (possibly with `per-app-api-usage=...` after it) -> ApiUsage; None if absent."""
    match = _USAGE.search(header or "")
    if match is None:
        return None
    return ApiUsage(int(match.group(1)), int(match.group(2)), now or utcnow())


class ApiBudget:
    """Tracks usage, enforces the share, reports to the status store.

    Args:
        share: the `cosell_sf_budget_share` setting (0..1].
        status: `store.status`, to report into (None: not reported, e.g. the CLI without storage).
        clock: the time source.
    """

    def __init__(self, share: float, status: RecordTable[StatusDoc] | None = None,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.share = share
        self._status = status
        self._clock = clock
        self._lock = threading.Lock()
        self._usage: ApiUsage | None = None
        self._persisted_at: dt.datetime | None = None
        self._persisted_state: str | None = None

    @property
    def usage(self) -> ApiUsage | None:
        return self._usage

    def fresh_usage(self, within: dt.timedelta = FRESH) -> ApiUsage | None:
        """The usage if observed just now (on the answer being handled), else None: an old count says
        nothing about why this call was refused."""
        usage = self._usage
        return usage if usage is not None and self._clock() - usage.observed_at <= within else None

    def state(self, usage: ApiUsage | None = None) -> str:
        """`ok`, `reserved` (only urgent work allowed) or `exhausted`."""
        usage = usage or self._usage
        if usage is None or usage.used < usage.limit * self.share:
            return "ok"
        return "reserved" if usage.used < usage.limit else "exhausted"

    def check(self, *, urgent: bool) -> None:
        """Raise `LimitExceeded` if this call is not allowed now (checked before every call)."""
        usage = self._usage
        state = self.state(usage)
        if usage is None or state == "ok" or (state == "reserved" and urgent):
            return
        if self._clock() - usage.observed_at >= REFRESH_AFTER:
            return
        if state == "exhausted":
            raise LimitExceeded(f"the Salesforce daily API limit is used up ({usage.used}/{usage.limit}); "
                                "work resumes when Salesforce's 24-hour window frees calls")
        raise LimitExceeded(
            f"Salesforce API budget: {usage.used} of {usage.limit} daily calls used, above the "
            f"{self.share:.0%} kept for this connector's background work; polling and backfill pause, "
            "syncs a person asked for still run")

    def observe(self, header: str | None) -> None:
        """Take the usage from an answer's `Sforce-Limit-Info` header (called for every answer)."""
        usage = parse_limit_info(header, now=self._clock())
        if usage is None:
            return
        with self._lock:
            self._usage = usage
            state = self.state(usage)
            due = (self._persisted_at is None or usage.observed_at - self._persisted_at >= PERSIST_EVERY
                   or state != self._persisted_state)
            if due:
                self._persisted_at, self._persisted_state = usage.observed_at, state
        if due:
            self._report(usage, state)

    def _report(self, usage: ApiUsage, state: str) -> None:
        if self._status is None:
            return
        data = {"used": usage.used, "limit": usage.limit, "share_used": round(usage.share, 4),
                "budget_share": self.share, "state": state, "observed_at": usage.observed_at.isoformat()}
        try:
            doc = self._status.get(BUDGET_DOC) or StatusDoc(name=BUDGET_DOC)
            doc.data, doc.updated_at = data, usage.observed_at
            self._status.put(doc)
        except ConnectorError as exc:  # a report that did not land must not fail the sync that made the call
            log.warning("API budget not reported to the status store: %s", exc)


__all__ = ["BUDGET_DOC", "REFRESH_AFTER", "ApiBudget", "ApiUsage", "parse_limit_info"]
