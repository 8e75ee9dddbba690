"""Salesforce change polling and the nudge route: find changed opportunities, hand their ids to the sync.

Without Apex, Salesforce tells nobody about a change; the connector asks. Every poll reads, per source,
the rows whose `SystemModstamp` moved since the cursor (see `cursor` for the look-back and de-duplication),
in batches: enqueue the batch on the opportunity queue, then save the cursor. Sources:

- opportunities that are opted in (`Sync_with_Partner_Center__c`) or already linked (`Referral_Identifier__c`);
- Microsoft solutions rows of such opportunities, deleted ones included (`queryAll`): a changed list of
  solutions is a change of its opportunity.

The poll only hands ids on. Whether anything really changed (the connector's own writes come back here
too) is the sync's decision, made on fresh reads against the last synced state; the message carries the
row's SystemModstamp so the sync can recognise its own echo without reading Salesforce.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import Conflict, ConnectorError, InvalidInput, LimitExceeded
from shared.models.records import Cursor, StatusDoc, utcnow
from shared.salesforce.cursor import PollCursor, Row, advance, format_modstamp, fresh, window_start
from shared.store.queues import OPPORTUNITY_QUEUE

if TYPE_CHECKING:
    from shared.mapping import Mapping as FieldMapping
    from shared.runtime import Services
    from shared.salesforce.client import SalesforceClient
    from shared.store import QueueSender, Store

log = logging.getLogger(__name__)

POLL_DOC = "salesforce-poll"
STATUS_REFRESH = dt.timedelta(minutes=5)
"""How stale the recorded time of the last quiet poll may get before a quiet poll records it again."""
"""Status document of the last poll (read by /api/health as `last_salesforce_poll`)."""
OPPORTUNITY_CURSOR = "salesforce-opportunities"
SOLUTION_CURSOR = "salesforce-solutions"
BATCH = 200
"""Rows handed on between two cursor saves."""
MAX_NUDGE_IDS = 200


def is_opportunity_id(value: Any) -> bool:
    """A 15- or 18-character Opportunity Id: letters and digits, key prefix 006.

    The 18-character checksum is not enforced: ids copied by people or sample data often carry a wrong
    one, and Salesforce itself answers for the 15-character id inside.
    """
    return (isinstance(value, str) and len(value) in (15, 18) and value.isascii() and value.isalnum()
            and value.startswith("006"))


def parse_nudge(body: bytes) -> list[str]:
    """The opportunity ids of a `POST /api/salesforce/changes` body `{"ids": ["006..."]}`, without repeats.

    Raises:
        InvalidInput: not that shape, an id that is not an Opportunity Id, none, or more than 200.
    """
    try:
        document = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise InvalidInput('the body must be JSON: {"ids": ["006..."]}') from None
    ids = document.get("ids") if isinstance(document, dict) else None
    if not isinstance(ids, list) or not ids:
        raise InvalidInput('the body must be {"ids": ["006..."]} with at least one opportunity id')
    if len(ids) > MAX_NUDGE_IDS:
        raise InvalidInput(f"at most {MAX_NUDGE_IDS} ids per call; the poll catches the rest")
    bad = [str(i)[:20] for i in ids if not is_opportunity_id(i)]
    if bad:
        raise InvalidInput(f"not Opportunity ids (15 or 18 characters, starting 006): {', '.join(bad[:5])}")
    return list(dict.fromkeys(ids))


def message(opportunity_id: str, *, source: str, modstamp: dt.datetime | None = None,
            urgent: bool = False) -> dict[str, Any]:
    """The opportunity queue's message: which opportunity, why, and the SystemModstamp seen (if any)."""
    return {"opportunity_id": opportunity_id, "source": source,
            "modstamp": format_modstamp(modstamp) if modstamp else None, "urgent": urgent}


def nudge(queues: QueueSender, ids: list[str]) -> int:
    """Enqueue opportunities a Flow or a person asked to sync now (urgent: allowed above the budget share)."""
    for opportunity_id in ids:
        queues.send(OPPORTUNITY_QUEUE, message(opportunity_id, source="nudge", urgent=True))
    return len(ids)


@dataclass(frozen=True)
class Source:
    """One kind of row the poll watches.

    Attributes:
        cursor: the cursor's name in `store.cursors`.
        soql: the query for rows changed since a SystemModstamp (None: since ever), ordered.
        opportunity_of: the opportunity a row stands for.
        include_deleted: read deleted rows too (queryAll).
    """

    cursor: str
    soql: Callable[[dt.datetime | None], str]
    opportunity_of: Callable[[Mapping[str, Any]], str | None]
    include_deleted: bool = False


def sources(mapping: FieldMapping) -> list[Source]:
    """The opportunity and solutions sources, with object and field names from the mapping."""
    opp = mapping.opportunity.sobject
    opted_in = f"{mapping.own_fields.opt_in} = true OR {mapping.own_fields.referral_id} != null"
    parent = mapping.solution_rules.parent_field
    relation = parent[:-3] + "__r" if parent.endswith("__c") else parent.removesuffix("Id")
    parent_opted_in = (f"{relation}.{mapping.own_fields.opt_in} = true OR "
                       f"{relation}.{mapping.own_fields.referral_id} != null")

    def since(start: dt.datetime | None) -> str:
        return f" AND SystemModstamp >= {format_modstamp(start)}" if start else ""

    return [
        Source(OPPORTUNITY_CURSOR,
               lambda start: f"SELECT Id, SystemModstamp FROM {opp} WHERE ({opted_in}){since(start)} "
                             "ORDER BY SystemModstamp, Id",
               lambda record: record.get("Id")),
        Source(SOLUTION_CURSOR,
               lambda start: f"SELECT Id, SystemModstamp, {parent} FROM {mapping.solutions.item.sobject} "
                             f"WHERE ({parent_opted_in}){since(start)} ORDER BY SystemModstamp, Id",
               lambda record: record.get(parent), include_deleted=True),
    ]


@dataclass
class PollResult:
    """What one poll did, per source: rows read, opportunities handed on (each at most once a poll, counted
    under the source that handed it on first)."""

    read: dict[str, int] = field(default_factory=dict)
    handed_on: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.handed_on.values())


class ChangePoller:
    """Reads changed rows and hands their opportunities on.

    Args:
        client: the Salesforce client (its calls are not urgent: above the budget share the poll pauses).
        mapping: the loaded mapping (object and field names).
        store: cursors and the status document.
        queues: where opportunity ids go.
        overlap: the look-back.
        batch: rows enqueued between two cursor saves.
    """

    def __init__(self, client: SalesforceClient, mapping: FieldMapping, store: Store, queues: QueueSender, *,
                 overlap: dt.timedelta, batch: int = BATCH, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.client, self.mapping, self.store, self.queues = client, mapping, store, queues
        self.overlap, self.batch, self.clock = overlap, batch, clock

    @classmethod
    def from_services(cls, services: Services) -> ChangePoller:
        return cls(services.salesforce, services.mapping, services.store, services.queues,
                   overlap=dt.timedelta(seconds=services.settings.cosell_sf_poll_overlap_seconds))

    def poll(self) -> PollResult:
        """One poll of every source; records the outcome in the status document either way.

        Raises:
            LimitExceeded: the API budget's share is used up (the cursor keeps what was handed on so far).
        """
        started = self.clock()
        result = PollResult()
        queued: set[str] = set()
        try:
            for source in sources(self.mapping):
                self._poll(source, result, queued)
        except ConnectorError as exc:
            self._report(error=str(exc), at=started, result=result)
            raise
        self._report(error=None, at=started, result=result)
        return result

    def _poll(self, source: Source, result: PollResult, queued: set[str]) -> None:
        """Hand on what changed in one source; `queued` holds the opportunities this poll already handed on
        (an opportunity and its solutions row changed together need one sync, not two racing ones)."""
        stored = self.store.cursors.get(source.cursor) or Cursor(name=source.cursor)
        cursor = PollCursor.from_value(stored.value)
        soql = source.soql(window_start(cursor, self.overlap))
        result.read[source.cursor] = result.handed_on[source.cursor] = 0
        for batch in _batches(self.client.query(soql, include_deleted=source.include_deleted), self.batch):
            result.read[source.cursor] += len(batch)
            rows = fresh(cursor, [Row.of(record) for record in batch])
            by_id = {str(record["Id"]): record for record in batch}
            for row in rows:
                opportunity_id = source.opportunity_of(by_id[row.id])
                if opportunity_id and opportunity_id not in queued:
                    queued.add(opportunity_id)
                    self.queues.send(OPPORTUNITY_QUEUE, message(opportunity_id, source=source.cursor,
                                                                modstamp=row.modstamp))
                    result.handed_on[source.cursor] += 1  # opportunities, not rows: what the status page counts
            if rows:
                cursor = advance(cursor, rows, self.overlap)
                stored.value, stored.updated_at = cursor.to_value(), self.clock()
                stored = self.store.cursors.put(stored)

    def _report(self, *, error: str | None, at: dt.datetime, result: PollResult) -> None:
        """Record the poll's outcome for /api/health and the status page, but not on every quiet poll: a
        poll that found nothing after a recent quiet success writes nothing at all (the steady state of a
        busy org is thousands of polls a day). The recorded time is then at most STATUS_REFRESH old."""
        try:
            doc = self.store.status.get(POLL_DOC) or StatusDoc(name=POLL_DOC)
            data = dict(doc.data)
            if error is None and _quiet_repeat(data, at, result):
                return
            if error is None:
                data.update(last_success=at.isoformat(), last_error=None, read=result.read,
                            handed_on=result.handed_on)
            else:
                data.update(last_error=error, last_error_at=at.isoformat())
            doc.data, doc.updated_at = data, self.clock()
            self.store.status.put(doc)
        except Conflict:
            log.info("poll status not recorded: another poll recorded its own at the same time")


def _quiet_repeat(data: Mapping[str, Any], at: dt.datetime, result: PollResult) -> bool:
    """Whether this successful poll found nothing and tells nothing the stored status does not already say."""
    last = data.get("last_success")
    if result.total or data.get("last_error") or not last or any(data.get("handed_on", {}).values()):
        return False
    return at - dt.datetime.fromisoformat(last) < STATUS_REFRESH


def _batches(records: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def poll_changes(services: Services) -> PollResult | None:
    """The timer's work: one poll; None when the API budget paused it (not a failure, it resumes by itself)."""
    try:
        return ChangePoller.from_services(services).poll()
    except LimitExceeded as exc:
        log.warning("Salesforce poll paused: %s", exc)
        return None


__all__ = [
    "OPPORTUNITY_CURSOR",
    "POLL_DOC",
    "SOLUTION_CURSOR",
    "ChangePoller",
    "PollResult",
    "Source",
    "is_opportunity_id",
    "message",
    "nudge",
    "parse_nudge",
    "poll_changes",
    "sources",
]
