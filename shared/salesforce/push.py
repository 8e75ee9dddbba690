"""Push from Salesforce: what `POST /api/salesforce/outbound` does with an outbound message, and push health.

Salesforce keeps an outbound message and retries it (with growing intervals, for up to 24 hours) until the
endpoint answers `Ack` true, so the Ack is sent only once every opportunity is on the queue: anything that
fails before that is a 5xx and Salesforce tries again. A solutions row's notification names the row, not
its opportunity; the parent is read fresh from Salesforce (deleted rows too), never taken from the message.

Push health lives in one status document (`PUSH_DOC`): the last batch received, refusals and why, and the
changes the poll found that push should have delivered (`note_missed`), shown on the status page.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import Conflict, ConnectorError, InvalidInput
from shared.models.records import StatusDoc, SyncOutcome, utcnow
from shared.salesforce.outbound import (
    PUSH_DOC,
    BodyTooLarge,
    Refused,
    accept,
    ack,
    fault,
    parse_outbound,
    record_push,
)
from shared.salesforce.polling import OPPORTUNITY_CURSOR, SOLUTION_CURSOR, message
from shared.store.queues import OPPORTUNITY_QUEUE

if TYPE_CHECKING:
    from shared.mapping import Mapping as FieldMapping
    from shared.runtime import Services
    from shared.salesforce.client import SalesforceClient
    from shared.store import Store

log = logging.getLogger(__name__)

RECEIVED_REFRESH = dt.timedelta(seconds=30)
"""How stale `last_received_at` may get before a received batch writes it again (one Table write per busy
half-minute, not one per batch)."""
MISSED_AFTER = dt.timedelta(seconds=60)
"""A change the poll finds this long after it was saved, with push configured, is one push missed: push
delivers in seconds, so only a broken or misconfigured push leaves it for the poll."""


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to Salesforce: status and SOAP body."""

    status: int
    body: bytes


def solution_parents(client: SalesforceClient, mapping: FieldMapping, solution_ids: list[str]) -> list[str]:
    """The synced opportunities (opted in or linked) that these solutions rows belong to, read fresh."""
    if not solution_ids:
        return []
    parent = mapping.solution_rules.parent_field
    relation = parent[:-3] + "__r" if parent.endswith("__c") else parent.removesuffix("Id")
    own = mapping.own_fields
    quoted = ",".join(f"'{i}'" for i in solution_ids)  # ids are checked alphanumeric by the parser
    soql = (f"SELECT Id, {parent} FROM {mapping.solutions.item.sobject} WHERE Id IN ({quoted}) AND "
            f"({relation}.{own.opt_in} = true OR {relation}.{own.referral_id} != null)")
    return list(dict.fromkeys(str(r[parent]) for r in client.query(soql, include_deleted=True) if r.get(parent)))


def receive(services: Services, body: bytes, *, clock: Callable[[], dt.datetime] = utcnow) -> Answer:
    """Handle one outbound message: Ack (200) only after every opportunity it names is enqueued.

    Answers: 413 too large, 400 malformed or hostile XML or an object not synced, 403 another org (or
    SALESFORCE_ORG_ID unset), 503 when Salesforce (reading a solutions row's parent) or the queue fails.
    Nothing is enqueued for any of the refusals.
    """
    try:
        parsed = parse_outbound(body)
        mapping = services.mapping
        accepted = accept(parsed, org_id=services.settings.salesforce_org_id,
                          opportunity_object=mapping.opportunity.sobject,
                          solution_object=mapping.solutions.item.sobject)
    except BodyTooLarge as exc:
        return _refuse(services, 413, str(exc), clock)
    except InvalidInput as exc:
        return _refuse(services, 400, str(exc), clock)
    except Refused as exc:
        return _refuse(services, 403, str(exc), clock)
    except ConnectorError as exc:  # the mapping or a setting cannot load: not the message's fault, retry later
        log.error("outbound message not acknowledged (Salesforce retries it): %s", exc)
        return Answer(503, fault(f"not queued, retry later: {exc}", client=False))
    try:
        with services.salesforce.urgent():
            parents = solution_parents(services.salesforce, mapping, accepted.solution_ids)
        ids = list(dict.fromkeys([*accepted.opportunity_ids, *parents]))
        for opportunity_id in ids:
            services.queues.send(OPPORTUNITY_QUEUE, message(opportunity_id, source="outbound", urgent=True))
    except ConnectorError as exc:
        log.error("outbound message not acknowledged (Salesforce retries it): %s", exc)
        return Answer(503, fault(f"not queued, retry later: {exc}", client=False))
    log.info("outbound message: %d notification(s), %d opportunity(ies) queued",
             len(parsed.notifications), len(ids))
    _record(services, clock(), received=len(parsed.notifications))
    return Answer(200, ack())


def _refuse(services: Services, status: int, reason: str, clock: Callable[[], dt.datetime]) -> Answer:
    log.warning("outbound message refused (%d): %s", status, reason)
    _record(services, clock(), refused=reason)
    return Answer(status, fault(reason))


def push_missed(payload: dict[str, Any], outcome: SyncOutcome, *, push_configured: bool, now: dt.datetime) -> bool:
    """Whether a finished sync shows a change push should have delivered: push is configured, the poll
    found it, the sync had something to do, and the row was saved more than MISSED_AFTER before now (push
    delivers in seconds, so with push working the poll's sync of it finds nothing left to do)."""
    if not push_configured or not is_poll_message(payload) or outcome is SyncOutcome.NO_CHANGE:
        return False
    if outcome not in (SyncOutcome.CREATED, SyncOutcome.UPDATED, SyncOutcome.CONFLICT):
        return False
    try:
        saved = dt.datetime.fromisoformat(str(payload.get("modstamp")).replace("Z", "+00:00"))
    except ValueError:
        return False
    return now - saved >= MISSED_AFTER


def note_missed(store: Store, opportunity_id: str, *, now: dt.datetime) -> None:
    """Record a change the poll delivered that push should have (shown on the status page), best effort."""
    try:
        _update(store, lambda data: record_push(data, at=now, missed=opportunity_id))
    except Exception as exc:  # noqa: BLE001 - the sync is done; this is the status page's bookkeeping
        log.info("push status not recorded: %s", type(exc).__name__)
    log.warning("the poll delivered a change of opportunity %s that push should have delivered", opportunity_id)


def is_poll_message(payload: dict[str, Any]) -> bool:
    """Whether an opportunity queue message came from the poll (not push, a nudge or a replay)."""
    return payload.get("source") in (OPPORTUNITY_CURSOR, SOLUTION_CURSOR)


def _record(services: Services, at: dt.datetime, *, received: int = 0, refused: str | None = None) -> None:
    """Push health, best effort: the Ack never waits on (or fails for) the status page's bookkeeping."""
    try:
        store = services.store

        def change(data: dict[str, Any]) -> dict[str, Any] | None:
            last = data.get("last_received_at")
            if received and refused is None and last and at - dt.datetime.fromisoformat(last) < RECEIVED_REFRESH:
                return None  # a busy stream: the recorded time is at most RECEIVED_REFRESH old
            return record_push(data, at=at, received=received, refused=refused)

        _update(store, change)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must not turn an Ack into a retry
        log.info("push status not recorded: %s", type(exc).__name__)


def _update(store: Store, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
    """Apply `change` to the push status document (If-Match: when another writer won, its count stands)."""
    doc = store.status.get(PUSH_DOC) or StatusDoc(name=PUSH_DOC)
    data = change(dict(doc.data))
    if data is None:
        return
    doc.data, doc.updated_at = data, utcnow()
    try:
        store.status.put(doc)
    except Conflict:
        log.info("push status not recorded: another instance recorded its own at the same time")


__all__ = ["MISSED_AFTER", "Answer", "is_poll_message", "note_missed", "push_missed", "receive",
           "solution_parents"]
