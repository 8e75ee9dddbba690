"""Regressions the chaos test (tests/test_chaos.py) found, each replayed deterministically with the real engine
in this process (`sync_world`), the failure placed exactly where the chaos run met it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from shared.models.records import SyncOutcome, utcnow
from shared.sync.engine import SyncEngine
from tests.fixtures.chaos import Killed
from tests.fixtures.connector import SyncWorld
from tests.fixtures.host import ROOT


def test_an_opportunity_half_created_from_a_referral_does_not_wipe_the_referrals_solutions(
        sync_world: SyncWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaos seed 8: the referral's sync died (or failed on a 5xx) after upserting the opportunity and before
    its solutions rows and link; the poll saw the opportunity (it carries the Referral Identifier) and the
    opportunity's sync merged the unlinked pair with no base, so Salesforce's empty solutions list, a
    one-way field towards Partner Center, overwrote the referral's solutions with []."""
    referral = sync_world.pc.create_incoming({"details": {"requirements": {"solutions": [
        {"id": "sol-1", "name": "Fabrikam ERP", "type": "Service"}]}}})
    upsert = sync_world.engine.sf.upsert

    def upsert_then_die(sobject: str, records: Any, **options: Any) -> Any:
        results = upsert(sobject, records, **options)
        if sobject == "Opportunity":
            raise Killed("after the opportunity upsert")
        return results

    monkeypatch.setattr(sync_world.engine.sf, "upsert", upsert_then_die)
    with pytest.raises(Killed):
        sync_world.engine.sync_referral(referral["id"])
    monkeypatch.undo()
    opportunity_id = sync_world.sf.query(
        f"SELECT Id FROM Opportunity WHERE Referral_Identifier__c = '{referral['id']}'")[0]["Id"]

    sync_world.engine.sync_opportunity(opportunity_id)  # what the poll's message does next

    assert [s["id"] for s in sync_world.referral(referral["id"])["details"]["requirements"]["solutions"]] == ["sol-1"]
    rows = sync_world.sf.query(f"SELECT Solution_Id__c FROM Microsoft_Solution__c WHERE Opportunity__c = '{opportunity_id}'")
    assert [r["Solution_Id__c"] for r in rows] == ["sol-1"]
    assert sync_world.store.links.get_by_referral(referral["id"]).opportunity_id == opportunity_id
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.NO_CHANGE


_REFUSAL_SCRIPT = """
import datetime as dt, json, sys
from shared.mapping import Mapping
from shared.sync.plan import plan_pair

mapping = Mapping.load("mappings/salesforce.json")
referral = json.load(open("tests/samples/referral-incoming-new.json"))
referral.update(status="Closed", substatus="Won")
opportunity = {"Id": "006000000000001AAA", "Name": referral["name"], "StageName": "Closed Won",
               "Amount": 48000, "CurrencyIsoCode": "EUR", "CloseDate": "2027-03-15",
               "Description": referral["details"]["notes"], "Microsoft_Solutions__r": None}
base = mapping.sf_values(opportunity)
opportunity.update(Name="Renamed by the seller", How_can_Microsoft_help__c="ProofOfConceptOrDemo",
                   Description="Edited after closing")
plan = plan_pair(mapping, base, referral, opportunity, now=dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))
sys.stdout.write(plan.sf_update["Audit__c"])
"""


def test_the_refusal_of_a_closed_referral_reads_the_same_in_every_process() -> None:
    """Chaos seed 8: the host and the second instance, each with its own hash seed, wrote the Audit line
    of a refused edit with the refused fields in a different order (plan_pair passed a set to
    pc_update), so each took the other's line for news: an Audit write, a poll hit, a sync in the other
    process, another write, for as long as the two kept alternating."""
    lines = {subprocess.run([sys.executable, "-c", _REFUSAL_SCRIPT], cwd=ROOT, check=True, capture_output=True,
                            text=True, env={**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": str(ROOT)},
                            timeout=60).stdout
             for seed in range(1, 7)}

    assert len(lines) == 1, lines
    assert "Not sent to Partner Center" in lines.pop()


def test_a_create_retried_after_its_solutions_rows_were_written_finishes(
        sync_world: SyncWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaos seed 9: a referral's sync died after writing the opportunity's solutions rows and before the
    link. Every retry upserted the rows again, which updates the existing rows, and the rows' parent field
    (master-detail) is create-only: INVALID_FIELD_FOR_INSERT_UPDATE, a dead letter that a replay repeats."""
    referral = sync_world.pc.create_incoming({"details": {"requirements": {"solutions": [
        {"id": "sol-1", "name": "Fabrikam ERP", "type": "Service"}]}}})
    upsert = sync_world.engine.sf.upsert

    def upsert_then_die(sobject: str, records: Any, **options: Any) -> Any:
        results = upsert(sobject, records, **options)
        if sobject == "Microsoft_Solution__c":
            raise Killed("after the solutions rows upsert")
        return results

    monkeypatch.setattr(sync_world.engine.sf, "upsert", upsert_then_die)
    with pytest.raises(Killed):
        sync_world.engine.sync_referral(referral["id"])
    monkeypatch.undo()
    sync_world.engine.clock = lambda: utcnow() + dt.timedelta(minutes=1)  # past any claim the dead run held

    report = sync_world.engine.sync_referral(referral["id"])  # the message, delivered again

    rows = sync_world.sf.query(f"SELECT Solution_Id__c FROM Microsoft_Solution__c "
                               f"WHERE Opportunity__c = '{report.opportunity_id}'")
    assert [r["Solution_Id__c"] for r in rows] == ["sol-1"]
    assert sync_world.store.links.get_by_referral(referral["id"]).opportunity_id == report.opportunity_id
    assert [s["id"] for s in sync_world.referral(referral["id"])["details"]["requirements"]["solutions"]] == ["sol-1"]


def test_a_sync_that_stalls_between_its_reads_and_its_writes_does_not_undo_a_newer_change(
        sync_world: SyncWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaos seed 13: one processor read both sides and stalled before writing (a 429's Retry-After, a row
    lock's back-off); meanwhile another processor synced that change and Microsoft's next one. The stalled
    sync then wrote its old value to Salesforce (no condition on that write), its state save met the newer
    state (Conflict), and the re-merge took its own stale write for a seller's edit and sent it to Partner
    Center: Microsoft's newest closing date was lost on both sides."""
    referral = sync_world.pc.create_incoming({"details": {"closingDateTime": "2027-03-01T00:00:00Z"}})
    engine = sync_world.engine
    engine.sync_referral(referral["id"])
    opportunity_id = sync_world.store.links.get_by_referral(referral["id"]).opportunity_id
    sync_world.pc.update_as_microsoft(referral["id"], {"details": {"closingDateTime": "2027-04-01T00:00:00Z"}})
    stalled = SyncEngine(store=engine.store, partner_center=engine.pc, salesforce=engine.sf, mapping=engine.mapping)
    reached, go, outcome = threading.Event(), threading.Event(), []
    write = stalled._write_opportunity

    def stall_then_write(opportunity: str, plan: Any, state: Any) -> None:
        reached.set()
        go.wait(30)
        write(opportunity, plan, state)

    monkeypatch.setattr(stalled, "_write_opportunity", stall_then_write)
    worker = threading.Thread(target=lambda: outcome.append(stalled.sync_referral(referral["id"])))
    worker.start()
    assert reached.wait(30)
    engine.sync_referral(referral["id"])  # another processor syncs the same change meanwhile
    sync_world.pc.update_as_microsoft(referral["id"], {"details": {"closingDateTime": "2027-05-01T00:00:00Z"}})
    engine.sync_referral(referral["id"])  # and Microsoft's next change
    go.set()
    worker.join(30)
    engine.sync_opportunity(opportunity_id)  # the echoes of whatever was written
    engine.sync_referral(referral["id"])

    assert outcome, "the stalled sync failed"
    assert sync_world.referral(referral["id"])["details"]["closingDateTime"].startswith("2027-05-01")
    assert sync_world.opportunity(opportunity_id)["CloseDate"] == "2027-05-01"


def test_a_sync_whose_reads_are_older_than_the_stored_base_does_not_save_an_older_base(
        sync_world: SyncWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaos seed 14: one processor read the referral and the opportunity, then (descheduled, or slowed by a
    retry) read the stored base only after another processor had synced Microsoft's newer deal value. Its
    reads said "both sides went back to the old value", so it saved the old value as the base, with an
    If-Match that passed (it read the state after that save). Both sides held the new value, the base the
    old one: the seller's next edit of that field read as a conflict, and the newest-wins policy threw it
    away."""
    referral = sync_world.pc.create_incoming({"details": {"dealValue": 100}})
    engine = sync_world.engine
    engine.sync_referral(referral["id"])
    reached, go, outcome = threading.Event(), threading.Event(), []
    state = engine.store.state

    class PausedState:
        """The state table of the slow processor: its read of the base waits for `go`."""

        def __getattr__(self, name: str) -> Any:
            return getattr(state, name)

        def get(self, key: str) -> Any:
            reached.set()
            go.wait(30)
            return state.get(key)

    store = SimpleNamespace(**{**vars(engine.store), "state": PausedState()})
    slow = SyncEngine(store=store, partner_center=engine.pc, salesforce=engine.sf, mapping=engine.mapping)
    worker = threading.Thread(target=lambda: outcome.append(slow.sync_referral(referral["id"])))
    worker.start()
    assert reached.wait(30)
    sync_world.pc.update_as_microsoft(referral["id"], {"details": {"dealValue": 200}})
    engine.sync_referral(referral["id"])  # another processor syncs Microsoft's change
    go.set()
    worker.join(30)

    assert outcome, "the slow sync failed"
    opportunity_id = sync_world.store.links.get_by_referral(referral["id"]).opportunity_id
    assert sync_world.opportunity(opportunity_id)["Amount"] == 200
    assert sync_world.store.state.get(referral["id"]).base["dealValue"] == 200


def test_a_sync_that_dies_after_its_patch_does_not_cost_the_sellers_next_move(
        sync_world: SyncWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaos seed 16: the seller accepted; the sync that sent the accept died after the PATCH, before saving
    the base, so the base still said "open". Before the message came back, the seller won the deal and then
    Microsoft updated the deal value. The next sync saw the stage changed on both sides (accepted in Partner
    Center, its own write; won in Salesforce), called it a conflict, and the newest record, Microsoft's,
    won: the seller's Closed Won was put back to Qualification, though only the seller had moved the stage."""
    referral = sync_world.pc.create_incoming()
    engine = sync_world.engine
    engine.sync_referral(referral["id"])
    opportunity_id = sync_world.store.links.get_by_referral(referral["id"]).opportunity_id
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Qualification"})
    update_referral = engine.pc.update_referral

    def patch_then_die(*args: Any, **kwargs: Any) -> Any:
        update_referral(*args, **kwargs)
        raise Killed("after the PATCH")

    monkeypatch.setattr(engine.pc, "update_referral", patch_then_die)
    with pytest.raises(Killed):
        engine.sync_opportunity(opportunity_id)
    monkeypatch.undo()
    assert sync_world.referral(referral["id"])["status"] == "Active"
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won"})
    time.sleep(1.1)  # Microsoft's save comes after the seller's, by the clocks the newest-wins policy reads
    sync_world.pc.update_as_microsoft(referral["id"], {"details": {"dealValue": 20000}})

    engine.sync_opportunity(opportunity_id)  # the seller's move (or the dead sync's message, back)
    engine.sync_referral(referral["id"])

    assert sync_world.opportunity(opportunity_id)["StageName"] == "Closed Won"
    assert (sync_world.referral(referral["id"])["status"], sync_world.referral(referral["id"])["substatus"]) == (
        "Closed", "Won")


def test_a_salesforce_update_that_stalls_inside_the_call_does_not_undo_a_newer_change(
        sync_world: SyncWorld) -> None:
    """Chaos seed 21, after the announce-then-check fix: the stalled sync passed the state check, then its
    update sat in the Salesforce client's row-lock back-off while another sync wrote Microsoft's newer note
    and saved its state; the old note then landed, the stalled sync's save met the newer state, and its
    re-merge (no pending writes of its own left in the state) took the old note for the seller's edit and
    sent it to Partner Center."""
    referral = sync_world.pc.create_incoming({"details": {"notes": "first"}})
    engine = sync_world.engine
    engine.sync_referral(referral["id"])
    opportunity_id = sync_world.store.links.get_by_referral(referral["id"]).opportunity_id
    sync_world.pc.update_as_microsoft(referral["id"], {"details": {"notes": "second"}})
    reached, go, outcome = threading.Event(), threading.Event(), []
    salesforce = engine.sf

    class StallingSalesforce:
        """The stalled processor's client: its first opportunity update waits for `go` inside the call."""

        def __getattr__(self, name: str) -> Any:
            return getattr(salesforce, name)

        def update(self, sobject: str, records: Any) -> Any:
            if sobject == "Opportunity" and not reached.is_set():
                reached.set()
                go.wait(30)
            return salesforce.update(sobject, records)

    stalled = SyncEngine(store=engine.store, partner_center=engine.pc, salesforce=StallingSalesforce(),
                         mapping=engine.mapping)
    worker = threading.Thread(target=lambda: outcome.append(stalled.sync_referral(referral["id"])))
    worker.start()
    assert reached.wait(30)
    sync_world.pc.update_as_microsoft(referral["id"], {"details": {"notes": "third"}})
    engine.sync_referral(referral["id"])  # another processor syncs Microsoft's newest note meanwhile
    go.set()
    worker.join(30)
    engine.sync_opportunity(opportunity_id)  # the echoes of whatever was written
    engine.sync_referral(referral["id"])

    assert outcome, "the stalled sync failed"
    assert sync_world.referral(referral["id"])["details"]["notes"] == "third"
    assert sync_world.opportunity(opportunity_id)["Description"] == "third"
