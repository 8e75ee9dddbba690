"""Regressions the chaos test (tests/test_chaos.py) found, each replayed deterministically with the real engine
in this process (`sync_world`), the failure placed exactly where the chaos run met it."""

from __future__ import annotations

from typing import Any

import pytest

from shared.models.records import SyncOutcome
from tests.fixtures.chaos import Killed
from tests.fixtures.connector import SyncWorld


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
