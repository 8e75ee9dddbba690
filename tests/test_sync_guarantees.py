"""The sync's guarantees under failure: no duplicates, re-merge after 412, dead letters and replay.

Crashes are simulated where they hurt most: between a remote write and the connector's record of it. The
engine's clients are wrapped so one call raises *after* the remote side did its work (an answer lost on the
way back), exactly as a killed worker or a dropped connection would leave things.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from shared.errors import Conflict, Unavailable
from shared.models.records import SyncOutcome
from shared.store.queues import OPPORTUNITY_QUEUE, QueueSender
from tests.fixtures.connector import SyncWorld, seller_opportunity, world_services


class LoseAnswerOnce:
    """Wraps a client: the first call of `method` does its work remotely, then raises as if the answer was lost."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner, self._method, self.lost = inner, method, 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name != self._method or self.lost:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            attribute(*args, **kwargs)
            self.lost += 1
            raise Unavailable(f"connection reset after {name}")

        return call


def test_a_lost_create_answer_never_makes_a_second_referral(sync_world: SyncWorld) -> None:
    engine = sync_world.engine
    opportunity_id = seller_opportunity(sync_world.sf)
    engine.pc = LoseAnswerOnce(engine.pc, "create_referral")

    with pytest.raises(Unavailable):
        engine.sync_opportunity(opportunity_id)
    assert len(sync_world.pc.referrals) == 1  # created, but the connector never heard back
    assert [i.opportunity_id for i in sync_world.store.intents.list_open()] == [opportunity_id]

    report = engine.sync_opportunity(opportunity_id)  # the retry resolves the intent by listing, not by a POST

    assert report.outcome is SyncOutcome.CREATED
    assert len(sync_world.pc.referrals) == 1
    referral = sync_world.referral_for(opportunity_id)
    assert sync_world.opportunity(opportunity_id)["Referral_Identifier__c"] == referral["id"]
    assert sync_world.store.intents.list_open() == []


def test_a_create_that_never_arrived_waits_for_in_flight_attempts_then_posts_once(sync_world: SyncWorld) -> None:
    engine = sync_world.engine
    opportunity_id = seller_opportunity(sync_world.sf)
    inner, posts = engine.pc, []

    class RequestLostOnce:
        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def create_referral(self, referral: Any) -> Any:
            posts.append(referral)
            if len(posts) == 1:
                raise Unavailable("connection refused")  # never reached Partner Center
            return inner.create_referral(referral)

    engine.pc = RequestLostOnce()
    now = [dt.datetime.now(dt.timezone.utc)]
    engine.clock = lambda: now[0]

    with pytest.raises(Unavailable):
        engine.sync_opportunity(opportunity_id)
    with pytest.raises(Conflict):  # right away: another worker's POST might still be in flight
        engine.sync_opportunity(opportunity_id)
    now[0] += dt.timedelta(minutes=2)
    report = engine.sync_opportunity(opportunity_id)

    assert report.outcome is SyncOutcome.CREATED
    assert len(posts) == 2 and len(sync_world.pc.referrals) == 1


def test_a_crash_after_the_opportunity_upsert_never_makes_a_second_opportunity(sync_world: SyncWorld) -> None:
    engine = sync_world.engine
    referral = sync_world.pc.create_incoming()
    engine.sf = LoseAnswerOnce(engine.sf, "upsert")

    with pytest.raises(Unavailable):
        engine.sync_referral(referral["id"])
    report = engine.sync_referral(referral["id"])  # the webhook's retry

    assert report.outcome is SyncOutcome.CREATED
    assert len(sync_world.sf.query("SELECT Id FROM Opportunity")) == 1
    assert sync_world.store.links.get_by_referral(referral["id"]).opportunity_id == report.opportunity_id


def test_concurrent_processors_create_one_referral(sync_world: SyncWorld) -> None:
    opportunity_id = seller_opportunity(sync_world.sf)
    outcomes: list[str] = []
    barrier = threading.Barrier(3)

    def processor() -> None:
        barrier.wait()
        try:
            outcomes.append(sync_world.engine.sync_opportunity(opportunity_id).outcome.value)
        except Conflict:
            outcomes.append("conflict")  # the queue would retry it later

    threads = [threading.Thread(target=processor) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = sync_world.engine.sync_opportunity(opportunity_id)  # what the retries see afterwards

    assert len(sync_world.pc.referrals) == 1
    assert outcomes.count("created") == 1, outcomes
    assert final.outcome is SyncOutcome.NO_CHANGE


def test_a_stale_etag_re_reads_and_re_merges(sync_world: SyncWorld) -> None:
    opportunity_id = seller_opportunity(sync_world.sf)
    sync_world.engine.sync_opportunity(opportunity_id)
    referral_id = sync_world.referral_for(opportunity_id)["id"]
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 777})
    inner = sync_world.engine.pc
    sneaked = []

    class MicrosoftWritesFirst:
        """Between the connector's read and its PATCH, Microsoft edits another field."""

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def update_referral(self, *args: Any, **kwargs: Any) -> Any:
            if not sneaked:
                sneaked.append(sync_world.pc.update_as_microsoft(referral_id, {"details": {"notes": "Microsoft"}}))
            return inner.update_referral(*args, **kwargs)

    sync_world.engine.pc = MicrosoftWritesFirst()
    report = sync_world.engine.sync_opportunity(opportunity_id)

    referral = sync_world.referral(referral_id)
    assert sneaked and report.outcome is SyncOutcome.UPDATED
    assert referral["details"]["dealValue"] == 777 and referral["details"]["notes"] == "Microsoft"
    assert sync_world.opportunity(opportunity_id)["Description"] == "Microsoft"


def _services(world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch, max_attempts: int = 3) -> Any:
    from shared.runtime import Services

    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    monkeypatch.setenv("COSELL_MAX_ATTEMPTS", str(max_attempts))
    services = Services()
    services.__dict__.update(store=world.store, sync_engine=world.engine, salesforce=world.engine.sf,
                             queues=QueueSender.from_connection_string(azurite))
    return services


def test_a_failing_record_is_retried_with_backoff_then_dead_lettered_and_replayable(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync.processor import process_opportunity
    from shared.sync.replay import replay

    services = _services(sync_world, azurite, monkeypatch)
    opportunity_id = seller_opportunity(sync_world.sf)
    sync_world.pc.server.faults.add({"kind": "status", "status": 503, "count": 100, "method": "POST",
                                     "path": "/v1.0"})
    queue = QueueClient.from_connection_string(azurite, OPPORTUNITY_QUEUE)
    waiting = queue.get_queue_properties().approximate_message_count if _exists(queue) else 0

    assert process_opportunity(services, {"opportunity_id": opportunity_id, "source": "poll"}) is None
    # Re-queued with a delay (invisible for now), not thrown back at the host; the third try gives up.
    assert queue.get_queue_properties().approximate_message_count == waiting + 1
    retry_time = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)
    sync_world.engine.clock = lambda: retry_time  # the back-off has passed: the intent is proven unused
    process_opportunity(services, {"opportunity_id": opportunity_id, "source": "poll", "attempt": 2})

    letters = list(sync_world.store.dead_letters.list())
    assert [(d.key, d.attempts) for d in letters] == [(f"opportunity-{opportunity_id}", 3)]
    assert letters[0].reason == "Partner Center referrals POST /v1.0/engagements/referrals answered 503: injected"
    assert "Sync failed and was set aside" in sync_world.opportunity(opportunity_id)["Audit__c"]
    assert sync_world.store.synclog.recent(1)[0].outcome is SyncOutcome.FAILED

    sync_world.pc.server.faults.clear()
    assert [d.key for d in replay(sync_world.store, services.queues)] == [f"opportunity-{opportunity_id}"]
    replayed = _wait_message(queue, opportunity_id=opportunity_id, source="replay")
    assert list(sync_world.store.dead_letters.list()) == []
    later = retry_time + dt.timedelta(minutes=1)
    sync_world.engine.clock = lambda: later
    report = process_opportunity(services, replayed)
    assert report is not None and report.outcome is SyncOutcome.CREATED


def _exists(queue: QueueClient) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        queue.get_queue_properties()
        return True
    except ResourceNotFoundError:
        return False


def _wait_message(client: QueueClient, **expected: Any) -> dict[str, Any]:
    """The next visible message matching `expected` (deleted once read; others are left alone).

    Others reappear after 1 s: with the queue's default 30 s, a message read while waiting for another (two
    referrals queued by one reconcile) stayed hidden past this wait's own deadline."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in client.receive_messages(max_messages=32, visibility_timeout=1):
            body = json.loads(base64.b64decode(message.content))
            if all(body.get(k) == v for k, v in expected.items()):
                client.delete_message(message)
                return body
        time.sleep(0.2)
    raise AssertionError(f"no message on {client.queue_name} matching {expected}")


def test_the_reconcile_catches_a_lost_webhook_and_skips_what_is_in_sync(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync.processor import process_referral
    from shared.sync.reconcile import reconcile

    services = _services(sync_world, azurite, monkeypatch)
    services.__dict__.update(partner_center=sync_world.engine.pc, mapping=sync_world.engine.mapping)
    in_sync = sync_world.pc.create_incoming({"name": "In sync"})
    missed = sync_world.pc.create_incoming({"name": "Missed update"})
    for referral in (in_sync, missed):
        sync_world.engine.sync_referral(referral["id"])
        sync_world.engine.sync_referral(referral["id"])  # settle: the first sync may patch a default back
    sync_world.pc.update_as_microsoft(missed["id"], {"details": {"dealValue": 4242}})  # its webhook is lost
    queue = QueueClient.from_connection_string(azurite, "referral-changes")

    result = reconcile(services)

    assert (result.referrals_listed, result.referrals_queued) == (2, 1)
    message = _wait_message(queue, referral_id=missed["id"], source="reconcile")
    process_referral(services, message)
    opportunity_id = sync_world.store.links.get_by_referral(missed["id"]).opportunity_id
    assert sync_world.opportunity(opportunity_id)["Amount"] == 4242
    assert reconcile(services).referrals_queued == 0  # the cursor moved on and nothing differs


def test_an_unreadable_referral_is_a_dead_letter_and_the_reconcile_goes_on(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One referral the model cannot read must not stop the page: it is set aside with its reason."""
    from shared.sync.processor import process_referral
    from shared.sync.reconcile import reconcile

    services = _services(sync_world, azurite, monkeypatch)
    services.__dict__.update(partner_center=sync_world.engine.pc, mapping=sync_world.engine.mapping)
    before = sync_world.pc.create_incoming({"name": "Readable before"})
    odd = sync_world.pc.create_incoming({"name": "Odd Customer Deal", "details": {"requirements": {"industries": [42]}}})
    after = sync_world.pc.create_incoming({"name": "Readable after"})
    queue = QueueClient.from_connection_string(azurite, "referral-changes")
    client, tops = services.partner_center, []

    def iter_pages(**options: Any) -> Any:
        tops.append(options.get("top"))
        return type(client).iter_pages(client, **options)

    monkeypatch.setattr(client, "iter_pages", iter_pages)

    result = reconcile(services)

    assert tops == [100]  # the reference's page size: never more, never left to the service's default
    assert (result.referrals_listed, result.referrals_queued, result.referrals_unreadable) == (3, 2, 1)
    for referral in (before, after):
        _wait_message(queue, referral_id=referral["id"], source="reconcile")
    letter = sync_world.store.dead_letters.get(f"referral-{odd['id']}")
    assert letter is not None and letter.payload == {"referral_id": odd["id"], "source": "reconcile"}
    assert "details.requirements.industries.0" in letter.reason and "cannot read" in letter.reason
    assert "Odd Customer" not in letter.reason  # fields named, values never
    assert sync_world.store.synclog.recent(1)[0].outcome is SyncOutcome.FAILED

    # Replayed, it fails at once with the same reason instead of being retried in vain.
    assert process_referral(services, {"referral_id": odd["id"], "source": "replay"}) is None
    again = sync_world.store.dead_letters.get(f"referral-{odd['id']}")
    assert again is not None and again.attempts == 1 and "cannot read" in again.reason


def test_a_create_claim_left_by_a_run_that_died_is_taken_over_only_after_the_patience_window(
        sync_world: SyncWorld) -> None:
    from shared.models.records import CreateClaim
    from shared.sync.engine import INTENT_PATIENCE

    engine = sync_world.engine
    referral = sync_world.pc.create_incoming()
    claimed_at = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)
    sync_world.store.create_claims.put(CreateClaim(referral_id=referral["id"], claimed_at=claimed_at))

    engine.clock = lambda: claimed_at + INTENT_PATIENCE - dt.timedelta(milliseconds=1)
    with pytest.raises(Conflict):  # the run that claimed it may still be creating: not a second opportunity
        engine.sync_referral(referral["id"])
    assert sync_world.sf.query("SELECT Id FROM Opportunity") == []

    engine.clock = lambda: claimed_at + INTENT_PATIENCE
    report = engine.sync_referral(referral["id"])  # that run died: this one takes the claim over

    assert report.outcome is SyncOutcome.CREATED
    assert len(sync_world.sf.query("SELECT Id FROM Opportunity")) == 1
    assert sync_world.store.create_claims.get(referral["id"]) is None


def test_a_sync_that_keeps_losing_races_after_its_patch_logs_the_patch_once_before_its_retry(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync that patched the referral and then lost every re-merge's race is retried later; the retry finds
    the patch done and says "no change". The sync log gets the patch when the first attempt gives up,
    once, or no line would ever name a change Partner Center accepted."""
    from shared.sync.processor import process_opportunity

    services = world_services(sync_world, azurite, monkeypatch)
    opportunity_id = seller_opportunity(sync_world.sf)
    sync_world.engine.sync_opportunity(opportunity_id)
    referral_id = sync_world.referral_for(opportunity_id)["id"]
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 130000})
    engine, store = sync_world.engine, sync_world.store
    update, save, saves = engine.pc.update_referral, engine._save_state, []

    def another_run_saves() -> None:
        state = store.state.get(referral_id)
        assert state is not None
        store.state.put(state)  # a new ETag: what another run's save leaves

    def another_run_announces_right_after(*args: Any, **kwargs: Any) -> Any:
        answer = update(*args, **kwargs)
        another_run_saves()
        return answer

    def another_run_saves_first(*args: Any, **kwargs: Any) -> Any:
        saves.append(kwargs.get("pending"))
        if len(saves) > 1:  # every re-merge's save (the first save announced the patch)
            another_run_saves()
        return save(*args, **kwargs)

    engine.pc.update_referral = another_run_announces_right_after  # type: ignore[method-assign]
    engine._save_state = another_run_saves_first  # type: ignore[method-assign]
    assert process_opportunity(services, {"opportunity_id": opportunity_id}) is None  # retried later
    engine.pc.update_referral, engine._save_state = update, save  # type: ignore[method-assign]
    retry = process_opportunity(services, {"opportunity_id": opportunity_id, "attempt": 1})

    assert sync_world.referral(referral_id)["details"]["dealValue"] == 130000
    assert retry is not None and retry.outcome is SyncOutcome.NO_CHANGE, retry
    rows = [entry for entry in store.synclog.recent() if "dealValue" in entry.changes]
    assert [(row.outcome, row.changes["dealValue"][1]) for row in rows] == [(SyncOutcome.UPDATED, 130000)], rows
