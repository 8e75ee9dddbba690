"""A sync that keeps failing never repeats a write that already succeeded, on either side.

Whatever the failure, a retry re-reads and re-plans: the writes an earlier attempt made are found (the
opportunity by its Referral Identifier, the referral by its create intent, field values by the announced
pending writes), not sent again. Each test fails one write persistently after an earlier one succeeded, runs
the queue processor through every attempt to the dead letter, then removes the cause and replays.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from shared.errors import Unavailable
from shared.models.records import SyncOutcome
from tests.fixtures.connector import SyncWorld, seller_opportunity, world_services

ATTEMPTS = 5


class Recorder:
    """Wraps a client: counts the writes that succeeded, and fails the ones named in `failing` beforehand."""

    def __init__(self, inner: Any, writes: set[str]) -> None:
        self._inner, self._writes = inner, writes
        self.succeeded: Counter[tuple[str, str | None]] = Counter()
        self.failing: dict[tuple[str, str | None], str] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._writes:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            kind = (name, args[0] if args and isinstance(args[0], str) and name != "update_referral" else None)
            if kind in self.failing:
                raise Unavailable(self.failing[kind])
            result = attribute(*args, **kwargs)
            if not any(getattr(r, "error", lambda _: None)(name) for r in (result if isinstance(result, list) else [])):
                self.succeeded[kind] += 1
            return result

        return call


def _record_writes(world: SyncWorld) -> tuple[Recorder, Recorder]:
    world.engine.sf = Recorder(world.engine.sf, {"create", "upsert", "update", "delete"})
    world.engine.pc = Recorder(world.engine.pc, {"create_referral", "update_referral"})
    return world.engine.sf, world.engine.pc


def _run_every_attempt(process: Any, services: Any, message: dict[str, Any]) -> None:
    for attempt in range(ATTEMPTS):  # what the queue delivers: the same message, its attempt counted
        assert process(services, {**message, "attempt": attempt}) is None


def _referral_with_a_contact(world: SyncWorld) -> dict[str, Any]:
    """A new referral from Microsoft whose customer contact the create must write (the write made to fail)."""
    return world.pc.create_incoming({"customerProfile": {"team": [
        {"firstName": "Kim", "lastName": "Ode", "email": "kim.ode@customer.example"}]}})


def _replayed(world: SyncWorld, key: str) -> dict[str, Any]:
    letter = world.store.dead_letters.get(key)
    assert letter is not None
    return {k: v for k, v in letter.payload.items()} | {"source": "replay"}


def test_a_referral_whose_create_keeps_failing_after_the_upsert_writes_the_opportunity_once(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync.processor import process_referral

    services = world_services(sync_world, azurite, monkeypatch, max_attempts=ATTEMPTS)
    referral = _referral_with_a_contact(sync_world)
    sf, pc = _record_writes(sync_world)
    cause = "Salesforce is down for maintenance (injected)"
    sf.failing[("create", "Contact")] = cause

    _run_every_attempt(process_referral, services, {"referral_id": referral["id"], "event": "referral-created"})

    assert sf.succeeded == Counter({("create", "Account"): 1, ("upsert", "Opportunity"): 1})
    assert pc.succeeded == Counter()
    letter = sync_world.store.dead_letters.get(f"referral-{referral['id']}")
    assert letter is not None and (letter.reason, letter.attempts) == (cause, ATTEMPTS)
    assert sync_world.store.links.get_by_referral(referral["id"]) is None  # half made: not linked yet

    del sf.failing[("create", "Contact")]
    report = process_referral(services, _replayed(sync_world, f"referral-{referral['id']}"))

    assert report is not None and report.outcome is SyncOutcome.CREATED
    link = sync_world.store.links.get_by_referral(referral["id"])
    assert link is not None and link.opportunity_id == report.opportunity_id
    assert all(count == 1 for count in sf.succeeded.values()), sf.succeeded
    assert sf.succeeded[("create", "Contact")] == sf.succeeded[("create", "OpportunityContactRole")] == 1
    assert all(count == 1 for count in pc.succeeded.values()), pc.succeeded
    assert len(sync_world.sf.query("SELECT Id FROM Opportunity")) == 1


def test_an_opportunity_whose_share_keeps_failing_after_the_post_creates_and_patches_once(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync.processor import process_opportunity

    services = world_services(sync_world, azurite, monkeypatch, max_attempts=ATTEMPTS)
    opportunity_id = seller_opportunity(sync_world.sf)  # stage Qualification: the referral is to be accepted
    sf, pc = _record_writes(sync_world)
    cause = "Salesforce refused the update for now (injected)"
    sf.failing[("update", "Opportunity")] = cause

    _run_every_attempt(process_opportunity, services, {"opportunity_id": opportunity_id, "source": "poll"})

    assert len(sync_world.pc.referrals) == 1
    assert all(count == 1 for count in pc.succeeded.values()) and pc.succeeded[("create_referral", None)] == 1
    assert sf.succeeded == Counter()
    letter = sync_world.store.dead_letters.get(f"opportunity-{opportunity_id}")
    assert letter is not None and (letter.reason, letter.attempts) == (cause, ATTEMPTS)

    del sf.failing[("update", "Opportunity")]
    report = process_opportunity(services, _replayed(sync_world, f"opportunity-{opportunity_id}"))

    assert report is not None and report.outcome is not SyncOutcome.FAILED
    referral = sync_world.referral_for(opportunity_id)
    assert (referral["status"], referral["substatus"]) == ("Active", "Accepted")
    assert sync_world.opportunity(opportunity_id)["Referral_Identifier__c"] == referral["id"]
    assert all(count == 1 for count in pc.succeeded.values()), pc.succeeded
    assert all(count == 1 for count in sf.succeeded.values()), sf.succeeded
    assert sync_world.store.intents.list_open() == []
    assert len(sync_world.pc.referrals) == 1


class RecordingQueues:
    """Stands in for the poll's QueueSender: what each poll handed on."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, queue: str, payload: dict[str, Any], *, delay_seconds: int | None = None) -> None:
        self.sent.append(payload)

    def take(self) -> list[dict[str, Any]]:
        taken, self.sent = self.sent, []
        return taken


def _poller(world: SyncWorld, queues: RecordingQueues) -> Any:
    import datetime as dt

    from shared.salesforce.polling import ChangePoller

    sf = world.engine.sf._inner if isinstance(world.engine.sf, Recorder) else world.engine.sf
    return ChangePoller(sf, world.engine.mapping, world.store, queues, overlap=dt.timedelta(minutes=5))


def _poll_status(world: SyncWorld) -> str:
    from shared.status.report import collect

    return collect(world.store, webhook=lambda: None)["health"]["salesforce_poll"]["summary"]


def test_the_poll_hands_a_half_made_opportunity_on_once_while_its_sync_keeps_failing(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync.processor import process_opportunity, process_referral

    services = world_services(sync_world, azurite, monkeypatch, max_attempts=ATTEMPTS)
    referral = _referral_with_a_contact(sync_world)
    sf, _ = _record_writes(sync_world)
    sf.failing[("create", "Contact")] = "Salesforce is down for maintenance (injected)"
    queues, handed = RecordingQueues(), []

    for attempt in range(ATTEMPTS - 1):  # the referral's retries, with polls in between
        process_referral(services, {"referral_id": referral["id"], "event": "referral-created", "attempt": attempt})
        _poller(sync_world, queues).poll()
        messages = queues.take()
        handed.append([m["opportunity_id"] for m in messages])
        for message in messages:  # what the opportunity queue then runs: the same failing create
            assert process_opportunity(services, message) is None
        if attempt == 0:
            assert _poll_status(sync_world).endswith("1 opportunity queued"), _poll_status(sync_world)

    made = sync_world.sf.query("SELECT Id FROM Opportunity")
    assert len(made) == 1
    assert handed == [[made[0]["Id"]], [], [], []]  # its sync writes nothing, so nothing new to hand on
    assert sf.succeeded[("upsert", "Opportunity")] == 1


def test_the_poll_hands_an_opportunity_on_once_per_poll_and_counts_it_once(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync.processor import process_opportunity

    services = world_services(sync_world, azurite, monkeypatch, max_attempts=ATTEMPTS)
    _, pc = _record_writes(sync_world)
    pc.failing[("create_referral", None)] = "Partner Center answered 503 (injected)"
    opportunity_id = seller_opportunity(sync_world.sf)  # the opportunity and its solutions row change together
    queues = RecordingQueues()

    _poller(sync_world, queues).poll()
    messages = queues.take()
    assert [m["opportunity_id"] for m in messages] == [opportunity_id]
    assert _poll_status(sync_world).endswith("1 opportunity queued"), _poll_status(sync_world)
    assert process_opportunity(services, messages[0]) is None  # fails, re-queued with back-off

    _poller(sync_world, queues).poll()
    assert queues.take() == []  # a failing sync wrote nothing: not handed on again
