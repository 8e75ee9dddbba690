"""The reconcile: the safety net that catches whatever the webhooks and the poll missed.

Partner Center may drop a webhook, and an opted-in opportunity may wait for a prerequisite the poll cannot
see (a contact role added, the account's country set). Every run lists the referrals updated since the last
run (minus an overlap, as clocks and commits are not perfectly ordered) and queues the ones whose stored
state does not already match, queues every opted-in opportunity not yet linked, and every create intent left
unfinished by a crash. The sync itself decides; queuing a record that turns out unchanged costs no write.
A listed referral the model cannot read becomes a dead letter with its reason; the others go on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.models.records import Cursor, StatusDoc, utcnow
from shared.store.queues import OPPORTUNITY_QUEUE, REFERRAL_QUEUE
from shared.sync.processor import set_aside_unreadable

if TYPE_CHECKING:
    from shared.runtime import Services

CURSOR = "partner-center-reconcile"
STATUS_DOC = "partner-center-reconcile"
OVERLAP = dt.timedelta(minutes=10)
FIRST_WINDOW = dt.timedelta(days=1)
"""How far back the very first run looks (older referrals are the backfill's job)."""


@dataclass
class ReconcileResult:
    referrals_listed: int = 0
    referrals_queued: int = 0
    referrals_unreadable: int = 0
    opportunities_queued: int = 0
    intents_queued: int = 0


def reconcile(services: Services, *, now: dt.datetime | None = None) -> ReconcileResult:
    """Queue everything that may be out of sync; advance the cursor only after all was queued."""
    from shared.partner_center.referrals import PAGE_SIZE, odata_filter

    store, queues, mapping = services.store, services.queues, services.mapping
    started = now or utcnow()
    cursor = store.cursors.get(CURSOR)
    since = (dt.datetime.fromisoformat(cursor.value["since"]) if cursor else started - FIRST_WINDOW) - OVERLAP
    result = ReconcileResult()
    for page in services.partner_center.iter_pages(filter=odata_filter(updated_since=since),
                                                   orderby="updatedDateTime asc", top=PAGE_SIZE):
        for unreadable in page.unreadable:
            result.referrals_listed += 1
            result.referrals_unreadable += 1
            set_aside_unreadable(store, unreadable, source="reconcile")
        for referral in page.value:
            result.referrals_listed += 1
            state = store.state.get(referral.id)
            if state is not None and state.referral_etag and state.referral_etag == referral.e_tag:
                continue  # already synced at exactly this version
            queues.send(REFERRAL_QUEUE, {"referral_id": referral.id, "source": "reconcile"})
            result.referrals_queued += 1
    own = mapping.own_fields
    waiting = services.salesforce.query(
        f"SELECT Id FROM {mapping.opportunity.sobject} WHERE {own.opt_in} = true AND {own.referral_id} = null")
    for row in waiting:
        queues.send(OPPORTUNITY_QUEUE, {"opportunity_id": row["Id"], "source": "reconcile"})
        result.opportunities_queued += 1
    for intent in store.intents.list_open():
        queues.send(OPPORTUNITY_QUEUE, {"opportunity_id": intent.opportunity_id, "source": "intent"})
        result.intents_queued += 1
    value = {"since": started.isoformat()}
    if cursor is None:
        store.cursors.put(Cursor(name=CURSOR, value=value))
    else:
        store.cursors.put(cursor.model_copy(update={"value": value, "updated_at": started}))
    _report(services, started, result)
    return result


def _report(services: Services, at: dt.datetime, result: ReconcileResult) -> None:
    doc = services.store.status.get(STATUS_DOC)
    data = {"last_success": at.isoformat(), **vars(result)}
    if doc is None:
        services.store.status.put(StatusDoc(name=STATUS_DOC, data=data, updated_at=at))
    else:
        services.store.status.put(doc.model_copy(update={"data": data, "updated_at": at}))


__all__ = ["CURSOR", "STATUS_DOC", "ReconcileResult", "reconcile"]
