"""Change polling against the simulator, cursor in Azurite: late commits, restarts, solutions rows, budget."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest

from sandbox.salesforce import SalesforceSim
from shared.errors import LimitExceeded
from shared.mapping import Mapping
from shared.salesforce import ApiBudget, RetryPolicy, SalesforceClient
from shared.salesforce.budget import REFRESH_AFTER
from shared.salesforce.polling import (
    OPPORTUNITY_CURSOR,
    POLL_DOC,
    SOLUTION_CURSOR,
    ChangePoller,
)
from shared.settings import APP_ROOT, get_settings
from shared.store import OPPORTUNITY_QUEUE, Store

OVERLAP = dt.timedelta(minutes=5)


class RecordingQueues:
    """Stands in for QueueSender: the shared Azurite's real queue is read by other tests' function hosts."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, queue: str, payload: dict[str, Any], *, delay_seconds: int | None = None) -> None:
        self.sent.append((queue, payload))

    def take(self) -> list[str]:
        ids = [payload["opportunity_id"] for queue, payload in self.sent if queue == OPPORTUNITY_QUEUE]
        self.sent.clear()
        return ids


@pytest.fixture
def env(sf_sim: SalesforceSim, monkeypatch: pytest.MonkeyPatch) -> SalesforceSim:
    for name, value in sf_sim.credentials.settings_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return sf_sim


@pytest.fixture
def store(azurite: str, table_prefix: str) -> Store:
    return Store.from_connection_string(azurite, prefix=table_prefix)


@pytest.fixture
def queues() -> RecordingQueues:
    return RecordingQueues()


@pytest.fixture
def poller(env: SalesforceSim, azurite: str, table_prefix: str, queues: RecordingQueues) -> Callable[..., ChangePoller]:
    """A new poller each call, as after a restart: new client, new Store object; only Azurite keeps state."""

    def make(**options: Any) -> ChangePoller:
        store = Store.from_connection_string(azurite, prefix=table_prefix)
        client = SalesforceClient.from_settings(get_settings(), store=store, retry=RetryPolicy(backoff=0.01))
        mapping = Mapping.load(APP_ROOT / "mappings" / "salesforce.json", describe=client.org_schema)
        return ChangePoller(client, mapping, store, queues, overlap=options.pop("overlap", OVERLAP), **options)

    return make


def opportunity(sim: SalesforceSim, name: str, **fields: Any) -> str:
    return sim.create("Opportunity", {"Name": name, "StageName": "Prospecting", "CloseDate": "2027-03-15", **fields})


def test_opted_in_and_linked_opportunities_are_handed_on_others_not(env: SalesforceSim, poller: Callable[..., ChangePoller],
                                                                     queues: RecordingQueues, store: Store) -> None:
    opted = opportunity(env, "Opted in", Sync_with_Partner_Center__c=True)
    linked = opportunity(env, "Linked", Referral_Identifier__c="ref-1")
    opportunity(env, "Private deal")
    result = poller().poll()
    assert sorted(queues.take()) == sorted([opted, linked])
    assert result.handed_on == {OPPORTUNITY_CURSOR: 2, SOLUTION_CURSOR: 0}
    cursor = store.cursors.get(OPPORTUNITY_CURSOR)
    assert cursor is not None and cursor.value["last_id"] in (opted, linked) and set(cursor.value["seen"]) == {opted, linked}
    status = store.status.get(POLL_DOC)
    assert status is not None and status.data["last_success"] and status.data["last_error"] is None


def test_queue_messages_carry_the_modstamp(env: SalesforceSim, poller: Callable[..., ChangePoller],
                                          queues: RecordingQueues) -> None:
    opted = opportunity(env, "Opted in", Sync_with_Partner_Center__c=True)
    poller().poll()
    [(queue, payload)] = queues.sent
    stamp = env.record("Opportunity", opted)["SystemModstamp"]
    assert queue == OPPORTUNITY_QUEUE and payload["opportunity_id"] == opted
    assert payload["modstamp"] == stamp.replace("+0000", "Z") and payload["urgent"] is False


def test_nothing_is_handed_on_twice_after_a_restart(env: SalesforceSim, poller: Callable[..., ChangePoller],
                                                   queues: RecordingQueues) -> None:
    first = [opportunity(env, f"Deal {i}", Sync_with_Partner_Center__c=True) for i in range(3)]
    poller().poll()
    assert sorted(queues.take()) == sorted(first)
    poller().poll()  # a restarted process: only the cursor in Azurite remembers
    assert queues.take() == []
    env.update("Opportunity", first[1], {"Amount": 5000})
    poller().poll()
    assert queues.take() == [first[1]]
    poller().poll()
    assert queues.take() == []


def test_a_late_committed_row_is_found_by_the_next_poll_and_only_once(
        env: SalesforceSim, poller: Callable[..., ChangePoller], queues: RecordingQueues) -> None:
    late, early = (opportunity(env, name, Sync_with_Partner_Center__c=True) for name in ("Late", "Early"))
    poller().poll()
    queues.take()
    env.org.late_commits.append(1.0)  # the next write is stamped now but visible 1 s later
    env.update("Opportunity", late, {"Amount": 1})
    time.sleep(0.01)  # a later millisecond: the late row's stamp is older than the early row's
    env.update("Opportunity", early, {"Amount": 2})
    late_stamp = env.org.find(late)["SystemModstamp"]
    assert late_stamp < env.org.find(early)["SystemModstamp"]
    poller().poll()
    assert queues.take() == [early]  # the late row is not visible yet
    time.sleep(1.1)
    poller().poll()
    assert queues.take() == [late]  # older than the cursor, inside the look-back
    poller().poll()
    assert queues.take() == []


def test_without_a_look_back_the_late_row_would_be_missed(
        env: SalesforceSim, poller: Callable[..., ChangePoller], queues: RecordingQueues) -> None:
    """The control experiment for the test above: the overlap is what finds the late row."""
    late, early = (opportunity(env, name, Sync_with_Partner_Center__c=True) for name in ("Late", "Early"))
    poller(overlap=dt.timedelta(0)).poll()
    queues.take()
    env.org.late_commits.append(1.0)
    env.update("Opportunity", late, {"Amount": 1})
    time.sleep(0.01)  # a later millisecond: the late row's stamp is older than the early row's
    env.update("Opportunity", early, {"Amount": 2})
    poller(overlap=dt.timedelta(0)).poll()
    time.sleep(1.1)
    poller(overlap=dt.timedelta(0)).poll()
    assert queues.take() == [early]


def test_solutions_rows_hand_on_their_opportunity_deleted_ones_too(
        env: SalesforceSim, poller: Callable[..., ChangePoller], queues: RecordingQueues) -> None:
    opted = opportunity(env, "Opted in", Sync_with_Partner_Center__c=True)
    private = opportunity(env, "Private deal")
    poller().poll()
    queues.take()
    row = env.create("Microsoft_Solution__c", {"Name": "Migrate", "Opportunity__c": opted, "Solution_Id__c": "s-1"})
    env.create("Microsoft_Solution__c", {"Name": "Other", "Opportunity__c": private, "Solution_Id__c": "s-2"})
    result = poller().poll()
    assert queues.take() == [opted] and result.handed_on[SOLUTION_CURSOR] == 1
    env.delete("Microsoft_Solution__c", row)
    poller().poll()
    assert queues.take() == [opted]


def test_large_polls_page_and_save_the_cursor_per_batch(sf_sim_factory: Callable[..., SalesforceSim],
                                                        monkeypatch: pytest.MonkeyPatch, azurite: str,
                                                        table_prefix: str, queues: RecordingQueues) -> None:
    sim = sf_sim_factory(batch_size=3)
    for name, value in sim.credentials.settings_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    ids = [opportunity(sim, f"Deal {i}", Sync_with_Partner_Center__c=True) for i in range(7)]
    store = Store.from_connection_string(azurite, prefix=table_prefix)
    client = SalesforceClient.from_settings(get_settings(), store=store)
    mapping = Mapping.load(APP_ROOT / "mappings" / "salesforce.json", describe=client.org_schema)
    saves: list[str] = []
    put = store.cursors.put
    monkeypatch.setattr(store.cursors, "put", lambda record: saves.append(record.name) or put(record))
    ChangePoller(client, mapping, store, queues, overlap=OVERLAP, batch=2).poll()
    assert queues.take() == ids  # in SystemModstamp order, each once
    assert saves.count(OPPORTUNITY_CURSOR) == 4  # 2 + 2 + 2 + 1


def test_the_budget_pauses_the_poll_and_it_resumes_when_calls_free_up(
        env: SalesforceSim, poller: Callable[..., ChangePoller], queues: RecordingQueues, store: Store) -> None:
    opted = opportunity(env, "Opted in", Sync_with_Partner_Center__c=True)
    active = poller()
    now = [dt.datetime.now(dt.timezone.utc)]
    active.client.budget = ApiBudget(0.8, store.status, clock=lambda: now[0])
    active.poll()
    assert queues.take() == [opted]
    env.org.api.limit, env.org.api.used = 100, 90
    env.update("Opportunity", opted, {"Amount": 3})
    with pytest.raises(LimitExceeded, match="budget"):
        active.poll()  # the opportunities query answers 91/100; the solutions query is then refused
    assert queues.take() == [opted] and env.org.api.used == 91
    with pytest.raises(LimitExceeded):
        active.poll()
    assert env.org.api.used == 91  # refused without a call
    status = store.status.get(POLL_DOC)
    assert status is not None and "budget" in status.data["last_error"] and status.data["last_success"]
    assert store.cursors.get(OPPORTUNITY_CURSOR).value["seen"][opted]  # what was handed on stays handed on
    env.org.api.used = 0  # Salesforce's window freed the calls
    now[0] += REFRESH_AFTER
    active.poll()
    assert queues.take() == [] and store.status.get(POLL_DOC).data["last_error"] is None


def test_quiet_polls_write_nothing_until_the_recorded_time_gets_old(
        env: SalesforceSim, poller: Callable[..., ChangePoller], queues: RecordingQueues, store: Store) -> None:
    import datetime as dt

    from shared.salesforce.polling import STATUS_REFRESH

    opportunity(env, "Opted in", Sync_with_Partner_Center__c=True)
    poller().poll()  # hands one on: recorded
    poller().poll()  # quiet, but the record still says one was handed on: recorded once more
    settled = store.status.get(POLL_DOC)
    cursors = {name: store.cursors.get(name).etag for name in (OPPORTUNITY_CURSOR, SOLUTION_CURSOR)
               if store.cursors.get(name)}

    for _ in range(3):
        poller().poll()

    assert store.status.get(POLL_DOC).etag == settled.etag
    assert {name: store.cursors.get(name).etag for name in cursors} == cursors
    later = dt.datetime.fromisoformat(settled.data["last_success"]) + STATUS_REFRESH + dt.timedelta(seconds=1)
    poller(clock=lambda: later).poll()
    assert store.status.get(POLL_DOC).data["last_success"] == later.isoformat()


def test_the_apps_poll_reads_back_by_the_configured_look_back(
        env: SalesforceSim, store: Store, queues: RecordingQueues, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.models.records import Cursor
    from shared.runtime import Services
    from shared.salesforce.polling import poll_changes

    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    monkeypatch.setenv("COSELL_SF_POLL_OVERLAP_SECONDS", "120")
    get_settings.cache_clear()
    services = Services()
    services.__dict__.update(store=store, queues=queues)  # the timer's own wiring for everything else
    store.cursors.put(Cursor(name=OPPORTUNITY_CURSOR, value={"modstamp": "2026-11-26T05:50:00.000Z",
                                                             "last_id": "006000000000001AAA", "seen": {}}))
    sent: list[str] = []
    query = services.salesforce.query
    monkeypatch.setattr(services.salesforce, "query", lambda soql, **options: (sent.append(soql), query(soql, **options))[1])

    assert poll_changes(services) is not None

    opportunities = next(soql for soql in sent if "FROM Opportunity" in soql)
    assert "SystemModstamp >= 2026-11-26T05:48:00.000Z" in opportunities  # 05:50 minus the 120 s set
