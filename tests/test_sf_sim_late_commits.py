"""Rows committed late with an earlier SystemModstamp: the case a SystemModstamp poller must not miss."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests

from sandbox.salesforce import SalesforceSim
from sandbox.sf_org import RecordError
from tests.fixtures.salesforce import sf_login

DEAL = {"StageName": "Prospecting", "CloseDate": "2026-06-30", "Sync_with_Partner_Center__c": True}
POLL = "SELECT Id, Name, SystemModstamp FROM Opportunity WHERE SystemModstamp > {cursor} ORDER BY SystemModstamp, Id"


class ManualClock:
    """The org's time, moved only by the test (it starts at the real time so tokens stay valid)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _literal(stamp: str) -> str:
    return stamp.replace("+0000", "Z")


def test_a_late_row_appears_after_the_cursor_passed_its_timestamp(sf_sim_factory: Any) -> None:
    clock = ManualClock()
    sim: SalesforceSim = sf_sim_factory(clock=clock)
    client = sf_login(sim)
    cursor = _literal(client.query("SELECT SystemModstamp FROM User ORDER BY SystemModstamp DESC LIMIT 1")[
        "records"][0]["SystemModstamp"])

    response = requests.post(f"{sim.url}/_sandbox/late-commits", json={"count": 1, "delay": 30}, timeout=10)
    assert response.json() == {"late_commits": 1}
    clock.advance(1)
    late_id = sim.create("Opportunity", {**DEAL, "Name": "late"})  # stamped now, committed 30 s later
    clock.advance(1)
    on_time_id = sim.create("Opportunity", {**DEAL, "Name": "on time"})

    first_poll = client.query(POLL.format(cursor=cursor))["records"]
    assert [r["Id"] for r in first_poll] == [on_time_id]
    assert client.query(f"SELECT Id FROM Opportunity WHERE Id = '{late_id}'")["totalSize"] == 0
    assert requests.get(f"{sim.url}/_sandbox/state", timeout=10).json()["pending_late_commits"] == 1
    advanced_cursor = _literal(first_poll[-1]["SystemModstamp"])

    clock.advance(30)
    committed = client.Opportunity.get(late_id)
    assert committed["SystemModstamp"] < first_poll[-1]["SystemModstamp"]  # the earlier timestamp
    assert client.query(POLL.format(cursor=advanced_cursor))["totalSize"] == 0  # a cursor without overlap misses it
    overlap = (dt.datetime.strptime(advanced_cursor, "%Y-%m-%dT%H:%M:%S.%fZ") - dt.timedelta(seconds=5))
    rows = client.query(POLL.format(cursor=overlap.strftime("%Y-%m-%dT%H:%M:%SZ")))["records"]
    assert [r["Id"] for r in rows] == [late_id, on_time_id]


def test_a_row_waiting_to_commit_is_locked(sf_sim_factory: Any) -> None:
    clock = ManualClock()
    sim: SalesforceSim = sf_sim_factory(clock=clock)
    opp_id = sim.create("Opportunity", {**DEAL, "Name": "busy"})
    sim.org.late_commits.append(10)
    sim.update("Opportunity", opp_id, {"Amount": 1})
    with pytest.raises(RecordError) as locked:
        sim.update("Opportunity", opp_id, {"Amount": 2}, as_user="integration")
    assert locked.value.code == "UNABLE_TO_LOCK_ROW"
    assert sim.record("Opportunity", opp_id)["Amount"] is None  # readers still see the committed version
    clock.advance(10)
    assert sim.record("Opportunity", opp_id)["Amount"] == 1.0
    sim.update("Opportunity", opp_id, {"Amount": 2}, as_user="integration")
    assert sim.record("Opportunity", opp_id)["LastModifiedById"] == sim.integration.id
