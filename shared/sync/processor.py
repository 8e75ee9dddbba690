"""Queue work: run one sync, and decide what a failure becomes (a delayed retry or a dead letter).

The queue triggers call `process_referral` / `process_opportunity`. Failures the connector understands
never reach the Functions host: they are re-queued with back-off (`attempt` in the message) or, past
`COSELL_MAX_ATTEMPTS`, kept as a dead letter with the reason, in the sync log, and in the opportunity's
Audit. Only a failure to record that (storage down) escapes, so the host retries the message and, in the
end, keeps it in the poison queue: nothing is dropped silently.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.errors import ConnectorError
from shared.models.records import DeadLetter, SyncLogEntry, SyncOutcome, utcnow
from shared.salesforce.push import note_missed, push_missed
from shared.store.queues import OPPORTUNITY_QUEUE, REFERRAL_QUEUE
from shared.sync.engine import PC_TO_SF, SF_TO_PC, SyncReport, timed
from shared.sync.failures import GiveUp, decide
from shared.telemetry import log_dead_letter

if TYPE_CHECKING:
    from shared.models.referral import UnreadableReferral
    from shared.runtime import Services
    from shared.store import Store

log = logging.getLogger("shared.sync")

KINDS = {"referral": (REFERRAL_QUEUE, "referral_id", PC_TO_SF),
         "opportunity": (OPPORTUNITY_QUEUE, "opportunity_id", SF_TO_PC)}
"""Work kind -> (its queue, the message field naming the record, the sync direction it starts)."""


def process_referral(services: Services, message: dict[str, Any]) -> SyncReport | None:
    if str(message.get("event", "")).startswith("related-referral"):
        return _process_related(services, message)
    return _process(services, "referral", message)


def _process_related(services: Services, message: dict[str, Any]) -> SyncReport | None:
    """An event about a related referral of a co-sell engagement: sync each of the partner's referrals in
    that engagement as work of its own (its own retries, its own dead letter), so one that keeps failing
    never holds the others back nor makes them sync again."""
    record_id = str(message["referral_id"])
    attempt = int(message.get("attempt", 0)) + 1
    try:
        partner = services.sync_engine.partner_referrals(record_id)
    except Exception as exc:  # noqa: BLE001 - a retry or a dead letter, by decide()
        _fail(services, "referral", record_id, message, attempt, exc)
        return None
    if not partner:
        log.info("sync referral %s: a related referral of an engagement that is not synced", record_id)
        return SyncReport(SyncOutcome.SKIPPED, PC_TO_SF, referral_id=record_id,
                          message="a related referral of an engagement that is not synced")
    reports = [_process(services, "referral", {"referral_id": partner_id, "event": "referral-updated",
                                               "source": message.get("source") or "related",
                                               "related_referral_id": record_id})
               for partner_id in partner]
    return next((report for report in reports if report is not None), None)


def process_opportunity(services: Services, message: dict[str, Any]) -> SyncReport | None:
    return _process(services, "opportunity", message)


def _process(services: Services, kind: str, message: dict[str, Any]) -> SyncReport | None:
    """Sync one record; returns the report, or None when the failure was handled (retry or dead letter)."""
    record_id = str(message[KINDS[kind][1]])
    attempt = int(message.get("attempt", 0)) + 1
    try:
        engine = services.sync_engine  # may raise ConfigError: that too becomes a dead letter with its reason
        if kind == "referral":
            report, millis = timed(lambda: engine.sync_referral(record_id))
        elif message.get("urgent"):
            with services.salesforce.urgent():
                report, millis = timed(lambda: engine.sync_opportunity(record_id))
        else:
            report, millis = timed(lambda: engine.sync_opportunity(record_id))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a retry or a dead letter, by decide()
        wrote = getattr(exc, "report", None)
        if isinstance(wrote, SyncReport):  # it wrote, then kept losing races: the retry finds the writes done
            _log_sync(services, wrote, millis=None)
        _fail(services, kind, record_id, message, attempt, exc)
        return None
    if report.outcome is not SyncOutcome.NO_CHANGE:
        _log_sync(services, report, millis=millis)
    if kind == "opportunity":
        now = utcnow()
        if push_missed(message, report.outcome, push_configured=bool(services.settings.salesforce_org_id), now=now):
            note_missed(services.store, record_id, now=now)
    log.info("sync %s %s: %s %s (%.0f ms)", kind, record_id, report.outcome.value,
             ",".join(k for k in report.changes if k != "conflicts"), millis)
    return report


def _log_sync(services: Services, report: SyncReport, *, millis: float | None) -> None:
    """One sync log row: a finished sync's report, or the writes of one that gave up on losing races."""
    services.store.synclog.append(SyncLogEntry(
        direction=report.direction, outcome=report.outcome, referral_id=report.referral_id,
        opportunity_id=report.opportunity_id, changes=report.changes, message=report.message,
        duration_ms=millis, request_ids=report.request_ids))


def _fail(services: Services, kind: str, record_id: str, message: dict[str, Any], attempt: int,
          exc: Exception) -> None:
    """Re-queue the message with back-off, or keep it as a dead letter, as `decide` says."""
    queue, _, direction = KINDS[kind]
    decision = decide(exc, attempt, services.settings.cosell_max_attempts)
    if not isinstance(decision, GiveUp):
        log.warning("sync %s %s failed (attempt %d), retrying in %.0f s: %s", kind, record_id, attempt,
                    decision.delay_seconds, decision.reason)
        services.queues.send(queue, {**message, "attempt": attempt}, delay_seconds=int(decision.delay_seconds))
        return
    log.error("sync %s %s gave up after %d attempt(s): %s", kind, record_id, attempt, decision.reason,
              exc_info=not isinstance(exc, ConnectorError))  # a bug's stack trace, for the logs only
    _give_up(services, kind, record_id, message, attempt, decision.reason, direction)


def _give_up(services: Services, kind: str, record_id: str, message: dict[str, Any], attempts: int,
             reason: str, direction: str) -> None:
    keep_dead_letter(services.store, kind, record_id, message, reason, attempts=attempts)
    if kind == "opportunity":
        try:
            services.sync_engine.record_failure(record_id, reason)
        except Exception as exc:  # noqa: BLE001 - the dead letter is kept; the Audit line is a courtesy
            log.warning("could not write the failure into opportunity %s's Audit: %s", record_id,
                        type(exc).__name__)


def keep_dead_letter(store: Store, kind: str, record_id: str, message: dict[str, Any], reason: str, *,
                     attempts: int = 1) -> None:
    """Keep work that cannot go on as a dead letter (replayable onto its queue) and say so in the sync log."""
    key = f"{kind}-{record_id}"
    existing = store.dead_letters.get(key)
    letter = DeadLetter(kind=kind, key=key, reason=reason, attempts=attempts,
                        payload={k: v for k, v in message.items() if k != "attempt"},
                        first_failed_at=existing.first_failed_at if existing else utcnow())
    letter.etag = existing.etag if existing else None
    store.dead_letters.put(letter)
    log_dead_letter(kind, key, attempts=attempts, reason=reason)  # what the dead-letter alert counts
    store.synclog.append(SyncLogEntry(
        direction=KINDS[kind][2], outcome=SyncOutcome.FAILED, message=reason,
        referral_id=record_id if kind == "referral" else None,
        opportunity_id=record_id if kind == "opportunity" else None))


def set_aside_unreadable(store: Store, referral: UnreadableReferral, *, source: str) -> str:
    """A listed referral the model cannot read: a dead letter with its reason, so the page and the run go on.

    Returns:
        The reason kept (for the caller's report).
    """
    reason = (f"Partner Center sent referral {referral.id or '(without an id)'} in a shape the connector cannot "
              f"read ({referral.reason}); it is not synced until the connector can read it (replay after updating)")
    if referral.id is None:  # nothing to replay: the sync log keeps it in sight
        log.error("%s: %s", source, reason)
        store.synclog.append(SyncLogEntry(direction=PC_TO_SF, outcome=SyncOutcome.FAILED, message=reason))
    else:
        log.error("%s: referral %s set aside as a dead letter: %s", source, referral.id, referral.reason)
        keep_dead_letter(store, "referral", referral.id, {"referral_id": referral.id, "source": source}, reason)
    return reason


__all__ = ["KINDS", "keep_dead_letter", "process_opportunity", "process_referral", "set_aside_unreadable"]
