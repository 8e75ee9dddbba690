"""Regressions the chaos test (tests/test_chaos.py) found, each replayed deterministically with the real engine
in this process (`sync_world`), the failure placed exactly where the chaos run met it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from typing import Any

import pytest

from shared.models.records import SyncOutcome, utcnow
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
