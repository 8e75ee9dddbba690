"""The Table Storage store against the real Azurite: round-trips, atomic links, If-Match races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from shared.errors import AlreadyExists, Conflict, Unavailable
from shared.models.records import (
    CreateIntent,
    Cursor,
    DeadLetter,
    IntentStatus,
    Link,
    StatusDoc,
    SyncLogEntry,
    SyncOutcome,
    SyncState,
)
from shared.store import QueueSender, Store


@pytest.fixture
def store(azurite: str, table_prefix: str) -> Store:
    return Store.from_connection_string(azurite, prefix=table_prefix)


def test_link_is_found_from_both_sides(store: Store) -> None:
    store.links.create(Link(referral_id="r-1", opportunity_id="006A", engagement_id="e-1"))

    by_referral = store.links.get_by_referral("r-1")
    by_opportunity = store.links.get_by_opportunity("006A")

    assert by_referral is not None and by_referral.opportunity_id == "006A"
    assert by_opportunity is not None and by_opportunity.referral_id == "r-1"
    assert [link.referral_id for link in store.links.list_by_engagement("e-1")] == ["r-1"]
    assert [link.referral_id for link in store.links.list()] == ["r-1"]


def test_second_link_for_either_side_is_refused_and_leaves_nothing_half_written(store: Store) -> None:
    store.links.create(Link(referral_id="r-1", opportunity_id="006A"))

    with pytest.raises(AlreadyExists):
        store.links.create(Link(referral_id="r-2", opportunity_id="006A"))

    # The transaction failed whole: r-2's row was not written either.
    assert store.links.get_by_referral("r-2") is None


def _find_reading(store: Store, monkeypatch: pytest.MonkeyPatch, **ids: list[str]) -> tuple[list[tuple[str, str]], int]:
    """`find`'s answer (referral, opportunity) and how many rows its queries read."""
    query, read = store.links.table.query, []

    def counted(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        for entity in query(*args, **kwargs):
            read.append(entity)
            yield entity

    monkeypatch.setattr(store.links.table, "query", counted)
    found = store.links.find(**ids)
    return sorted((link.referral_id, link.opportunity_id) for link in found), len(read)


def test_find_reads_a_small_partition_in_one_range_and_a_large_one_by_key(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Table Storage runs an "or" of row keys as a scan of the whole partition ("Design for querying"), and
    every link shares one: `find` reads at most SCAN_FACTOR rows an id asked for, then reads by key."""
    from shared.store import links

    store.links.create_many([Link(referral_id=f"r-{i}", opportunity_id=f"006{i:03d}") for i in range(30)])

    # 17 ids, at most 68 rows: both ranges (30 referral rows, 30 opportunity rows) are read, nothing else.
    small = _find_reading(store, monkeypatch, referral_ids=[f"r-{i}" for i in range(14)] + ["r-x", "r-1"],
                          opportunity_ids=["006029", "006ZZZ"])
    assert small == (sorted([(f"r-{i}", f"006{i:03d}") for i in range(14)] + [("r-29", "006029")]), 60)

    monkeypatch.undo()
    # 3 ids, at most 12 rows: the partition is too large for a range read to pay.
    large = _find_reading(store, monkeypatch, referral_ids=["r-7", "r-x"], opportunity_ids=["006012"])
    assert large[0] == [("r-12", "006012"), ("r-7", "006007")]
    assert large[1] == links.SCAN_FACTOR * 3 + 1  # the range read stopped there: the rest by key


def test_the_sandbox_storage_keeps_rows_of_one_row_key_in_other_partitions_apart(store: Store) -> None:
    """The sandbox's Azurite looks a row up by its RowKey first (sandbox/azurite_keys.js): an entity is still
    its (PartitionKey, RowKey) pair, for reads, conflicts and transactions."""
    table = store.links.table
    for partition in ("p1", "p2"):
        table.insert({"PartitionKey": partition, "RowKey": "same", "side": partition})
    table.transaction([("create", {"PartitionKey": "p3", "RowKey": f"row-{i}"}) for i in range(50)], what="rows")

    assert [table.get(p, "same")["side"] for p in ("p1", "p2")] == ["p1", "p2"]
    assert table.get("p3", "same") is None
    with pytest.raises(AlreadyExists):
        table.insert({"PartitionKey": "p2", "RowKey": "same"})
    with pytest.raises(AlreadyExists):
        table.transaction([("create", {"PartitionKey": "p3", "RowKey": "row-50"}),
                           ("create", {"PartitionKey": "p3", "RowKey": "row-7"})], what="rows")
    assert table.get("p3", "row-50") is None  # the refused transaction left nothing
    table.insert({"PartitionKey": "p4", "RowKey": "same"})
    assert table.get("p4", "same") is not None


def test_link_delete_removes_both_rows(store: Store) -> None:
    link = store.links.create(Link(referral_id="r-1", opportunity_id="006A"))
    store.links.delete(link)
    assert store.links.get_by_referral("r-1") is None
    assert store.links.get_by_opportunity("006A") is None


def test_sync_state_round_trips_large_unicode_base(store: Store) -> None:
    notes = ("Grüße 🚀 <b>html</b> " * 2000)[:32_000]
    state = store.state.put(SyncState(referral_id="r-1", opportunity_id="006A",
                                      base={"details.notes": notes, "details.dealValue": 48000.5, "tags": ["a"]}))

    loaded = store.state.get("r-1")

    assert loaded is not None
    assert loaded.base == {"details.notes": notes, "details.dealValue": 48000.5, "tags": ["a"]}
    assert loaded.etag == state.etag


def test_update_with_stale_etag_is_a_conflict(store: Store) -> None:
    first = store.state.put(SyncState(referral_id="r-1", opportunity_id="006A"))
    first_copy = first.model_copy()
    first_copy.etag = first.etag
    store.state.put(first.model_copy(update={"attempts": 1}))

    with pytest.raises(Conflict):
        store.state.put(first_copy.model_copy(update={"attempts": 2}))
    loaded = store.state.get("r-1")
    assert loaded is not None and loaded.attempts == 1


def test_two_writers_racing_on_one_entity_exactly_one_wins(store: Store) -> None:
    start = store.cursors.put(Cursor(name="sf-poll", value={"ts": "0"}))
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def writer(name: str) -> None:
        record = start.model_copy(update={"value": {"ts": name}})
        record.etag = start.etag
        barrier.wait()
        try:
            store.cursors.put(record)
            outcomes[name] = "won"
        except Conflict:
            outcomes[name] = "conflict"

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes.values()) == ["conflict", "won"]
    winner = next(name for name, outcome in outcomes.items() if outcome == "won")
    loaded = store.cursors.get("sf-poll")
    assert loaded is not None and loaded.value == {"ts": winner}


def test_concurrent_creates_of_one_record_conflict(store: Store) -> None:
    store.intents.put(CreateIntent(opportunity_id="006A"))
    with pytest.raises(Conflict):
        store.intents.put(CreateIntent(opportunity_id="006A"))


def test_open_intents_are_listed_until_resolved(store: Store) -> None:
    pending = store.intents.put(CreateIntent(opportunity_id="006A"))
    store.intents.put(CreateIntent(opportunity_id="006B"))
    store.intents.put(pending.model_copy(update={"status": IntentStatus.CREATED, "referral_id": "r-1"}))

    assert [intent.opportunity_id for intent in store.intents.list_open()] == ["006B"]


def test_sync_log_lists_newest_first(store: Store) -> None:
    for index in range(3):
        store.synclog.append(SyncLogEntry(direction="pc_to_sf", outcome=SyncOutcome.UPDATED,
                                          referral_id=f"r-{index}", changes={"Amount": [1, 2]}))

    recent = store.synclog.recent(2)

    assert [entry.referral_id for entry in recent] == ["r-2", "r-1"]
    assert recent[0].changes == {"Amount": [1, 2]}


def test_dead_letters_status_and_secrets(store: Store) -> None:
    store.dead_letters.put(DeadLetter(kind="referral", key="referral-r-1", reason="400 from Partner Center",
                                      payload={"referralId": "r-1"}, attempts=5))
    store.status.put(StatusDoc(name="salesforce-budget", data={"used": 10, "limit": 100}))
    store.secrets.put("pc-refresh-token", "first")
    store.secrets.put("pc-refresh-token", "second")

    assert [dl.reason for dl in store.dead_letters.list()] == ["400 from Partner Center"]
    budget = store.status.get("salesforce-budget")
    assert budget is not None and budget.data == {"used": 10, "limit": 100}
    assert store.secrets.get("pc-refresh-token") == "second"
    assert store.secrets.get("missing") is None


def test_unreachable_storage_is_one_clear_error() -> None:
    store = Store.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    with pytest.raises(Unavailable, match="not reachable.*Azurite"):
        store.links.get_by_referral("r-1")


def test_queue_sender_creates_queue_and_sends_base64_json(azurite: str, table_prefix: str) -> None:
    from azure.storage.queue import QueueClient

    QueueSender.from_connection_string(azurite).send(f"{table_prefix}-q", {"referralId": "r-1"})

    client = QueueClient.from_connection_string(azurite, f"{table_prefix}-q")
    message = next(iter(client.receive_messages()))
    import base64
    import json

    assert json.loads(base64.b64decode(message.content)) == {"referralId": "r-1"}
