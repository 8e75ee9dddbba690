"""The sync engine, one sync at a time, against both simulators and Azurite (in this process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.errors import Conflict
from shared.models.records import SyncOutcome
from shared.sync.engine import BOTH, SF_TO_PC, SyncReport, with_earlier_writes
from shared.partner_center.transport import RetryPolicy
from tests.fixtures.connector import SyncWorld, seller_opportunity, world_services


def test_opted_in_opportunity_creates_a_shared_referral_and_is_marked(sync_world: SyncWorld) -> None:
    opportunity_id = seller_opportunity(sync_world.sf)

    report = sync_world.engine.sync_opportunity(opportunity_id)

    assert report.outcome is SyncOutcome.CREATED, report
    referral = sync_world.referral_for(opportunity_id)
    assert referral is not None
    assert referral["type"] == "Shared" and referral["direction"] == "Outgoing"
    assert referral["details"]["dealValue"] == 125000
    assert referral["details"]["requirements"]["solutions"][0]["id"] == "a1b2c3d4-0000-4000-8000-000000000001"
    assert referral["customerProfile"]["team"][0]["lastName"] == "Lopez"
    assert referral["inviteContext"]["assistanceRequestCode"] == "CustomerTechnicalArchitecture"
    opportunity = sync_world.opportunity(opportunity_id)
    assert opportunity["Referral_Identifier__c"] == referral["id"]
    assert opportunity["Referral_Link__c"].endswith(referral["id"])
    assert opportunity["Partner_Center_Synced__c"] == "✔"
    assert "Shared with Partner Center" in opportunity["Audit__c"]
    assert sync_world.store.links.get_by_opportunity(opportunity_id).referral_id == referral["id"]
    assert sync_world.store.intents.list_open() == []


def test_a_referral_created_already_accepted_keeps_the_sellers_stage_and_raises_no_alarm(
        sync_world: SyncWorld) -> None:
    """The reference's create example: posted New/Pending, returned Active/Accepted. The partner's own
    referral is accepted by nature; that is not the seller moving the deal on, nor a change to undo."""
    opportunity_id = seller_opportunity(sync_world.sf, StageName="Prospecting")
    sync_world.pc.create_status = 200  # Microsoft's connector definition documents 200

    report = sync_world.engine.sync_opportunity(opportunity_id)

    assert report.outcome is SyncOutcome.CREATED, report
    referral = sync_world.referral_for(opportunity_id)
    assert (referral["status"], referral["substatus"]) == ("Active", "Accepted")
    opportunity = sync_world.opportunity(opportunity_id)
    assert opportunity["StageName"] == "Prospecting"
    assert "cannot undo" not in opportunity["Audit__c"] and opportunity["Partner_Center_Synced__c"] == "✔"
    before = _stamps(sync_world, opportunity_id, referral["id"])
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.NO_CHANGE
    assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.NO_CHANGE
    assert _stamps(sync_world, opportunity_id, referral["id"]) == before

    # Later stage moves still mean what they say: an accepted stage asks nothing more, winning wins.
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Qualification"})
    assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.NO_CHANGE
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won"})
    sync_world.engine.sync_opportunity(opportunity_id)
    assert (sync_world.referral(referral["id"])["status"], sync_world.referral(referral["id"])["substatus"]) == (
        "Closed", "Won")


def _linked_pair(world: SyncWorld) -> tuple[str, str]:
    opportunity_id = seller_opportunity(world.sf)
    world.engine.sync_opportunity(opportunity_id)
    referral = world.referral_for(opportunity_id)
    assert referral is not None
    return opportunity_id, referral["id"]


def _stamps(world: SyncWorld, opportunity_id: str, referral_id: str) -> tuple[str, str]:
    return world.opportunity(opportunity_id)["SystemModstamp"], world.referral(referral_id)["eTag"]


def test_a_sync_with_nothing_changed_writes_nothing_anywhere(sync_world: SyncWorld) -> None:
    opportunity_id, referral_id = _linked_pair(sync_world)
    before = _stamps(sync_world, opportunity_id, referral_id)
    state_before = sync_world.store.state.get(referral_id)

    for _ in range(2):
        assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.NO_CHANGE
        assert sync_world.engine.sync_referral(referral_id).outcome is SyncOutcome.NO_CHANGE

    assert _stamps(sync_world, opportunity_id, referral_id) == before
    assert sync_world.store.state.get(referral_id).etag == state_before.etag


def test_seller_edits_reach_the_referral_and_the_echo_is_no_change(sync_world: SyncWorld) -> None:
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 150000, "Name": "Contoso - bigger",
                                                         "CloseDate": "2027-02-28", "Description": "Now 60 VMs"})

    report = sync_world.engine.sync_opportunity(opportunity_id)

    referral = sync_world.referral(referral_id)
    assert report.outcome is SyncOutcome.UPDATED
    assert referral["details"]["dealValue"] == 150000
    assert referral["name"] == "Contoso - bigger"
    assert referral["details"]["closingDateTime"].startswith("2027-02-28")
    assert referral["details"]["notes"] == "Now 60 VMs"
    assert set(report.changes) >= {"dealValue", "name", "closingDate", "notes"}
    # The webhook for our own PATCH comes back: it must not cause another write.
    before = _stamps(sync_world, opportunity_id, referral_id)
    assert sync_world.engine.sync_referral(referral_id).outcome is SyncOutcome.NO_CHANGE
    assert _stamps(sync_world, opportunity_id, referral_id) == before


def test_microsoft_updates_reach_the_opportunity_and_the_echo_is_no_change(sync_world: SyncWorld) -> None:
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.pc.update_as_microsoft(referral_id, {"details": {"dealValue": 99000, "currency": "EUR",
                                                                "notes": "Microsoft: budget approved"}})

    report = sync_world.engine.sync_referral(referral_id)

    opportunity = sync_world.opportunity(opportunity_id)
    assert report.outcome is SyncOutcome.UPDATED
    assert opportunity["Amount"] == 99000 and opportunity["CurrencyIsoCode"] == "EUR"
    assert opportunity["Description"] == "Microsoft: budget approved"
    assert "Updated from Partner Center: currency, deal value, notes" in opportunity["Audit__c"].splitlines()[0]
    before = _stamps(sync_world, opportunity_id, referral_id)
    assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.NO_CHANGE
    assert _stamps(sync_world, opportunity_id, referral_id) == before


def test_both_sides_changed_different_fields_both_survive(sync_world: SyncWorld) -> None:
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.pc.update_as_microsoft(referral_id, {"details": {"notes": "from Microsoft"}})
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 1})

    sync_world.engine.sync_opportunity(opportunity_id)

    assert sync_world.referral(referral_id)["details"]["dealValue"] == 1
    assert sync_world.referral(referral_id)["details"]["notes"] == "from Microsoft"
    assert sync_world.opportunity(opportunity_id)["Description"] == "from Microsoft"


def test_both_sides_changed_one_field_the_newest_wins_and_the_log_says_so(sync_world: SyncWorld) -> None:
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.pc.update_as_microsoft(referral_id, {"details": {"dealValue": 200}})
    sync_world.pc.advance_clock(0)  # the seller's edit below is the newer one
    import time

    time.sleep(1.1)
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 300})

    report = sync_world.engine.sync_referral(referral_id)

    assert report.outcome is SyncOutcome.CONFLICT
    assert report.changes["conflicts"][0]["key"] == "dealValue"
    assert report.changes["conflicts"][0]["winner"] == "salesforce"
    assert sync_world.referral(referral_id)["details"]["dealValue"] == 300
    assert sync_world.opportunity(opportunity_id)["Amount"] == 300


def test_stage_moves_accept_then_win(sync_world: SyncWorld) -> None:
    referral = sync_world.pc.create_incoming({"name": "Fabrikam - Dynamics upgrade"})
    sync_world.engine.sync_referral(referral["id"])
    opportunity_id = sync_world.store.links.get_by_referral(referral["id"]).opportunity_id
    assert sync_world.opportunity(opportunity_id)["StageName"] == "Prospecting"

    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Proposal/Price Quote"})
    sync_world.engine.sync_opportunity(opportunity_id)
    assert (sync_world.referral(referral["id"])["status"], sync_world.referral(referral["id"])["substatus"]) == (
        "Active", "Accepted")

    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won"})
    sync_world.engine.sync_opportunity(opportunity_id)
    assert sync_world.referral(referral["id"])["substatus"] == "Won"
    assert sync_world.opportunity(opportunity_id)["StageName"] == "Closed Won"


def test_closing_lost_before_accepting_declines_with_the_reason(sync_world: SyncWorld) -> None:
    referral = sync_world.pc.create_incoming()
    sync_world.engine.sync_referral(referral["id"])
    opportunity_id = sync_world.store.links.get_by_referral(referral["id"]).opportunity_id

    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Lost",
                                                         "Decline_Reason__c": "Not our market"})
    sync_world.engine.sync_opportunity(opportunity_id)

    declined = sync_world.referral(referral["id"])
    assert (declined["status"], declined["substatus"], declined["statusReason"]) == (
        "Closed", "Declined", "Not our market")


def test_editing_a_closed_referral_is_not_sent_and_the_audit_says_why(sync_world: SyncWorld) -> None:
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won"})
    sync_world.engine.sync_opportunity(opportunity_id)
    closed = sync_world.referral(referral_id)
    assert closed["substatus"] == "Won"

    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Qualification", "Amount": 5})
    report = sync_world.engine.sync_opportunity(opportunity_id)

    assert sync_world.referral(referral_id)["eTag"] == closed["eTag"]  # nothing sent
    opportunity = sync_world.opportunity(opportunity_id)
    assert "closed in Partner Center" in report.message
    assert opportunity["Audit__c"].splitlines()[0].split(" UTC ")[1].startswith("✖ Not sent to Partner Center")
    assert opportunity["StageName"] == "Closed Won" and opportunity["Amount"] == 125000  # put back
    assert opportunity["Partner_Center_Sync_Status__c"] == "Error"


def test_missing_prerequisites_make_no_call_and_ask_the_seller(sync_world: SyncWorld) -> None:
    opportunity_id = seller_opportunity(sync_world.sf, with_contact=False, with_solution=False)

    report = sync_world.engine.sync_opportunity(opportunity_id)

    assert report.outcome is SyncOutcome.SKIPPED
    assert sync_world.pc.referrals == {}
    audit = sync_world.opportunity(opportunity_id)["Audit__c"]
    assert "customer contact" in audit and "Microsoft solution" in audit
    # Asking again does not rewrite the same message (that would wake the poll forever).
    stamp = sync_world.opportunity(opportunity_id)["SystemModstamp"]
    sync_world.engine.sync_opportunity(opportunity_id)
    assert sync_world.opportunity(opportunity_id)["SystemModstamp"] == stamp


def test_incoming_referral_creates_opportunity_account_contact_and_role(sync_world: SyncWorld) -> None:
    referral = sync_world.pc.create_incoming({
        "name": "Fabrikam - Dynamics upgrade",
        "customerProfile": {"name": "Fabrikam Inc", "address": {"country": "DE", "city": "Berlin"},
                            "team": [{"firstName": "Jonas", "lastName": "Weber", "email": "jonas@fabrikam.example",
                                      "phoneNumber": None, "contactPreference": None}]},
        "details": {"dealValue": 48000, "currency": "EUR", "closingDateTime": "2027-03-15T00:00:00Z",
                    "requirements": {"solutions": [{"id": "sol-1", "name": "Fabrikam ERP", "type": "Service"}]}},
        "inviteContext": {"notes": "Please call Jonas this week."}})

    report = sync_world.engine.sync_referral(referral["id"])
    again = sync_world.engine.sync_referral(referral["id"])  # a duplicated webhook

    assert report.outcome is SyncOutcome.CREATED and again.outcome is SyncOutcome.NO_CHANGE
    opportunity = sync_world.opportunity(report.opportunity_id)
    assert opportunity["StageName"] == "Prospecting"
    assert opportunity["Amount"] == 48000 and opportunity["CurrencyIsoCode"] == "EUR"
    assert opportunity["CloseDate"] == "2027-03-15"
    assert "Please call Jonas this week." in opportunity["Audit__c"]
    account = sync_world.sf.record("Account", opportunity["AccountId"])
    assert account["Name"] == "Fabrikam Inc" and account["BillingCountry"] == "Germany"
    roles = sync_world.sf.query(f"SELECT ContactId, Contact.Email FROM OpportunityContactRole "
                                f"WHERE OpportunityId = '{report.opportunity_id}'")
    assert [r["Contact"]["Email"] for r in roles] == ["jonas@fabrikam.example"]
    rows = sync_world.sf.query(f"SELECT Solution_Id__c FROM Microsoft_Solution__c "
                               f"WHERE Opportunity__c = '{report.opportunity_id}'")
    assert [r["Solution_Id__c"] for r in rows] == ["sol-1"]
    assert len(sync_world.sf.query("SELECT Id FROM Opportunity")) == 1


def test_several_matching_accounts_are_not_guessed_between(sync_world: SyncWorld) -> None:
    for city in ("Seattle", "Redmond"):
        sync_world.sf.create("Account", {"Name": "Sandbox Customer Ltd", "BillingCountry": "United States",
                                         "BillingCity": city})
    referral = sync_world.pc.create_incoming()

    report = sync_world.engine.sync_referral(referral["id"])

    opportunity = sync_world.opportunity(report.opportunity_id)
    assert opportunity["AccountId"] is None
    assert "Several accounts match" in opportunity["Audit__c"]
    assert len(report.changes["account_candidates"]) == 2


def test_sharing_an_opportunity_keeps_the_sellers_stage_and_accepts_the_referral(sync_world: SyncWorld) -> None:
    opportunity_id = seller_opportunity(sync_world.sf, StageName="Proposal/Price Quote")

    sync_world.engine.sync_opportunity(opportunity_id)

    referral = sync_world.referral_for(opportunity_id)
    assert (referral["status"], referral["substatus"]) == ("Active", "Accepted")
    assert sync_world.opportunity(opportunity_id)["StageName"] == "Proposal/Price Quote"
    before = (sync_world.opportunity(opportunity_id)["SystemModstamp"], referral["eTag"])
    assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.NO_CHANGE
    assert (sync_world.opportunity(opportunity_id)["SystemModstamp"],
            sync_world.referral(referral["id"])["eTag"]) == before


def test_a_conflict_partner_centers_policy_wins_is_settled_its_way_even_when_salesforce_is_newer(
        sync_world: SyncWorld, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import time

    from shared.mapping import Mapping
    from shared.settings import APP_ROOT

    document = json.loads((APP_ROOT / "mappings" / "salesforce.json").read_text(encoding="utf-8"))
    deal = next(f for f in document["opportunity"]["fields"] if f["key"] == "dealValue")
    deal["policy"] = "partner_center"
    (tmp_path / "mapping.json").write_text(json.dumps(document), encoding="utf-8")
    sync_world.engine.mapping = Mapping.load(tmp_path / "mapping.json", describe=sync_world.engine.sf.org_schema)
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.pc.update_as_microsoft(referral_id, {"details": {"dealValue": 200}})
    time.sleep(1.1)  # the seller's edit is the newer one: only the policy can make Partner Center win
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 300})

    report = sync_world.engine.sync_opportunity(opportunity_id)

    assert report.outcome is SyncOutcome.CONFLICT
    assert [(c["key"], c["winner"]) for c in report.changes["conflicts"]] == [("dealValue", "partner_center")]
    assert sync_world.opportunity(opportunity_id)["Amount"] == 200
    assert sync_world.referral(referral_id)["details"]["dealValue"] == 200
    assert sync_world.engine.sync_referral(referral_id).outcome is SyncOutcome.NO_CHANGE


def test_an_accepted_referral_closed_lost_in_salesforce_is_lost_not_declined(sync_world: SyncWorld) -> None:
    opportunity_id, referral_id = _linked_pair(sync_world)
    assert (sync_world.referral(referral_id)["status"], sync_world.referral(referral_id)["substatus"]) == (
        "Active", "Accepted")
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Lost",
                                                         "Decline_Reason__c": "Customer chose another vendor"})

    report = sync_world.engine.sync_opportunity(opportunity_id)

    referral = sync_world.referral(referral_id)
    assert report.outcome is SyncOutcome.UPDATED
    assert (referral["status"], referral["substatus"]) == ("Closed", "Lost")
    assert referral["statusReason"] == "Customer chose another vendor"
    assert sync_world.opportunity(opportunity_id)["StageName"] == "Closed Lost"
    assert sync_world.engine.sync_referral(referral_id).outcome is SyncOutcome.NO_CHANGE


def test_the_connector_never_sends_a_change_to_a_closed_referral(sync_world: SyncWorld) -> None:
    sync_world.pc.refuse_closed_edits = True  # stricter than the reference: any PATCH of a closed referral fails
    won_id, won_referral = _linked_pair(sync_world)
    sync_world.sf.update("Opportunity", won_id, {"StageName": "Closed Won"})
    assert sync_world.engine.sync_opportunity(won_id).outcome is SyncOutcome.UPDATED
    assert sync_world.referral(won_referral)["substatus"] == "Won"
    expired = sync_world.pc.create_incoming({"name": "Expires"})
    expired_id = sync_world.engine.sync_referral(expired["id"]).opportunity_id
    sync_world.pc.expire(expired["id"])
    sync_world.engine.sync_referral(expired["id"])
    assert sync_world.opportunity(expired_id)["StageName"] == "Closed Lost"

    # Sellers keep editing closed deals: a field, and a move to the other closed stage (Closed -> Closed).
    sync_world.sf.update("Opportunity", won_id, {"Amount": 1, "Description": "after the win", "StageName": "Closed Lost"})
    sync_world.sf.update("Opportunity", expired_id, {"Amount": 2, "StageName": "Closed Won"})
    reports = [sync_world.engine.sync_opportunity(won_id), sync_world.engine.sync_opportunity(expired_id)]

    assert sync_world.pc.closed_edits_refused == 0
    assert all("not sent to Partner Center" in report.message for report in reports), reports
    assert sync_world.referral(won_referral)["details"]["dealValue"] == 125000
    assert (sync_world.opportunity(won_id)["StageName"], sync_world.opportunity(won_id)["Amount"]) == (
        "Closed Won", 125000)  # put back to Partner Center's values
    assert sync_world.opportunity(expired_id)["StageName"] == "Closed Lost"
    for opportunity_id in (won_id, expired_id):  # the next sync puts the ✔ back; after that, nothing to do
        sync_world.engine.sync_opportunity(opportunity_id)
        assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.NO_CHANGE
    assert sync_world.pc.closed_edits_refused == 0


def test_a_sync_overtaken_between_its_partner_center_write_and_its_salesforce_check_reports_the_write(
        sync_world: SyncWorld) -> None:
    """Another run saves the pair's state after this sync patched the referral and before it checks the state
    to write Salesforce: the check stops it (Conflict, re-merge), but the patch it sent is in the report, so
    the sync log shows the change (it went unlogged, and a busy sandbox printed no line for a won deal)."""
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 130000})
    update, patches = sync_world.engine.pc.update_referral, []

    def another_run_saves_right_after(*args: Any, **kwargs: Any) -> Any:
        answer = update(*args, **kwargs)
        patches.append(args)
        if len(patches) == 1:
            state = sync_world.engine.store.state.get(referral_id)
            assert state is not None
            sync_world.engine.store.state.put(state)  # a new ETag: what another run's save leaves
        return answer

    sync_world.engine.pc.update_referral = another_run_saves_right_after  # type: ignore[method-assign]
    report = sync_world.engine.sync_opportunity(opportunity_id)

    assert sync_world.referral(referral_id)["details"]["dealValue"] == 130000
    assert len(patches) == 1, "the re-merge sent the patch again"
    assert report.outcome is SyncOutcome.UPDATED and "dealValue" in report.changes, report


def test_a_sync_that_lost_the_race_after_writing_still_reports_its_writes(sync_world: SyncWorld) -> None:
    """Pushed changes make concurrent syncs of one opportunity common: the one whose state save loses the race
    after its writes re-merges and finds nothing left to do, but the sync log must still show what it wrote."""
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 130000})
    save, saves = sync_world.engine._save_state, []

    def another_run_saved_first(*args: Any, **kwargs: Any) -> Any:
        saves.append(kwargs.get("pending"))
        if len(saves) == 2:  # the save after the writes (the first one announces them)
            raise Conflict("another run saved the pair's state meanwhile")
        return save(*args, **kwargs)

    sync_world.engine._save_state = another_run_saved_first  # type: ignore[method-assign]
    report = sync_world.engine.sync_opportunity(opportunity_id)

    assert sync_world.referral(referral_id)["details"]["dealValue"] == 130000
    assert report.outcome is SyncOutcome.UPDATED and "dealValue" in report.changes


def test_a_sync_overtaken_after_its_partner_center_write_and_again_in_its_re_merge_still_reports_the_write(
        sync_world: SyncWorld) -> None:
    """Six syncs of one opportunity within a second (outbound messages and nudges): this one patches the
    referral, another announces its own writes (the check before Salesforce stops this one), and while this
    one re-merges (nothing left to write), a third saves the pair's state first. The re-merge's lost save
    carried no write, yet it replaced the patch's report: every sync said 'no change' and the sync log lost
    the sent PATCH (a busy sandbox printed no line for a won deal)."""
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 130000})
    engine, store = sync_world.engine, sync_world.engine.store
    update, save, patches, saves, others = engine.pc.update_referral, engine._save_state, [], [], []

    def another_run_announces_right_after(*args: Any, **kwargs: Any) -> Any:
        answer = update(*args, **kwargs)
        patches.append(args)
        if len(patches) == 1:
            state = store.state.get(referral_id)
            assert state is not None
            store.state.put(state)  # a new ETag: what another run's announcement leaves
        return answer

    def a_third_run_saves_first(*args: Any, **kwargs: Any) -> Any:
        saves.append(kwargs.get("pending"))
        if len(saves) == 2:  # the re-merge's save (the first one announced the patch)
            engine._save_state = save  # type: ignore[method-assign] - the third run is an ordinary sync
            others.append(engine.sync_opportunity(opportunity_id))
        return save(*args, **kwargs)

    engine.pc.update_referral = another_run_announces_right_after  # type: ignore[method-assign]
    engine._save_state = a_third_run_saves_first  # type: ignore[method-assign]
    report = engine.sync_opportunity(opportunity_id)

    assert sync_world.referral(referral_id)["details"]["dealValue"] == 130000
    assert len(patches) == 1, "a re-merge sent the patch again"
    assert [other.outcome for other in others] == [SyncOutcome.NO_CHANGE], "the third run claimed the write"
    assert report.outcome is SyncOutcome.UPDATED and "dealValue" in report.changes, report


def test_a_sync_overtaken_after_each_of_two_partner_center_writes_reports_both(sync_world: SyncWorld) -> None:
    """The seller saves twice while concurrent syncs race: this sync patches the deal value, is stopped
    before Salesforce by another run's announcement, re-merges, patches the closing date the second save
    made, and is stopped again. Both patches are this sync's and both belong in its report; the second
    lost race's report must not take the first one's place."""
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 130000})
    engine, store = sync_world.engine, sync_world.engine.store
    update, patches = engine.pc.update_referral, []

    def another_run_announces_after_each(*args: Any, **kwargs: Any) -> Any:
        answer = update(*args, **kwargs)
        patches.append(args)
        if len(patches) == 1:
            sync_world.sf.update("Opportunity", opportunity_id, {"CloseDate": "2027-03-31"})  # the second save
        state = store.state.get(referral_id)
        assert state is not None
        store.state.put(state)  # a new ETag: what another run's announcement leaves
        return answer

    engine.pc.update_referral = another_run_announces_after_each  # type: ignore[method-assign]
    report = engine.sync_opportunity(opportunity_id)

    details = sync_world.referral(referral_id)["details"]
    assert details["dealValue"] == 130000 and details["closingDateTime"].startswith("2027-03-31")
    assert len(patches) == 2, "a re-merge sent a patch again"
    assert report.outcome is SyncOutcome.UPDATED, report
    assert {"dealValue", "closingDate"} <= set(report.changes), report
    assert len(report.request_ids) == 2, report



def _incoming_pair(world: SyncWorld) -> tuple[str, str]:
    """A referral Microsoft shared (New/Received) and the opportunity made from it (Prospecting)."""
    referral_id = world.pc.create_incoming({"name": "Fabrikam - Dynamics upgrade"})["id"]
    world.engine.sync_referral(referral_id)
    return world.store.links.get_by_referral(referral_id).opportunity_id, referral_id


def _after_the_first_patch(world: SyncWorld, then: Callable[[], None]) -> list[str]:
    """Run `then` right after the engine's first PATCH lands (Microsoft edits, another sync runs, ...).

    Returns:
        Filled as the engine patches: each PATCH's request id, or "Conflict" for one that met a 412.
    """
    engine, update, answers = world.engine, world.engine.pc.update_referral, []

    def then_after_the_first(*args: Any, **kwargs: Any) -> Any:
        try:
            answer = update(*args, **kwargs)
        except Conflict:
            answers.append("Conflict")
            raise
        answers.append(engine.pc.last_request_id)
        if len(answers) == 1:
            then()
        return answer

    engine.pc.update_referral = then_after_the_first  # type: ignore[method-assign]
    return answers


def _microsoft_edits_after_the_first_patch(world: SyncWorld, referral_id: str, *,
                                           meanwhile: Callable[[], None] = lambda: None) -> list[str]:
    """Make Microsoft edit the referral right after the engine's first PATCH lands, so its next one meets a 412."""

    def microsoft_edits() -> None:
        world.pc.update_as_microsoft(referral_id, {"details": {"notes": "Microsoft: on it"}})
        meanwhile()

    return _after_the_first_patch(world, microsoft_edits)


def test_a_stage_move_whose_second_patch_meets_a_412_reports_the_first_patch_as_landed(
        sync_world: SyncWorld) -> None:
    """Moving a new referral to won takes two PATCHes (accept, then win). Microsoft edits the referral between
    them, so the win meets a 412, and the seller steps back to an open stage meanwhile: the accept (and the
    deal value riding with it) is all Partner Center took from this sync. The sync log must name it, with the
    stage that landed, and claim nothing of the win that never went through."""
    opportunity_id, referral_id = _incoming_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won", "Amount": 130000})
    answers = _microsoft_edits_after_the_first_patch(sync_world, referral_id, meanwhile=lambda: sync_world.sf.update(
        "Opportunity", opportunity_id, {"StageName": "Negotiation/Review"}))

    report = sync_world.engine.sync_opportunity(opportunity_id)

    referral, opportunity = sync_world.referral(referral_id), sync_world.opportunity(opportunity_id)
    assert (referral["status"], referral["substatus"], referral["details"]["dealValue"]) == (
        "Active", "Accepted", 130000)
    assert (opportunity["StageName"], opportunity["Description"]) == ("Negotiation/Review", "Microsoft: on it")
    assert answers[1:] == ["Conflict"], "the re-merge sent a patch of its own"
    assert report.outcome is SyncOutcome.UPDATED, report
    assert report.changes["stage"] == ["open", "accepted", "partner_center"], report
    assert report.changes["dealValue"][1:] == [130000, "partner_center"], report
    assert report.request_ids == [answers[0]], report


def test_a_stage_move_whose_win_meets_a_412_after_the_accept_landed_is_finished_not_undone(
        sync_world: SyncWorld) -> None:
    """As above, but the seller stays on Closed Won. The accept that landed is this sync's own write: its
    re-merge must count it so, and send the win again. Read as Microsoft's edit, it made the stage look
    changed on both sides, and Partner Center's newer 'accepted' put the seller's Closed Won back. The sync
    log line names the whole move this sync made, from open: 'accepted -> won' alone left the accept unnamed."""
    opportunity_id, referral_id = _incoming_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won", "Amount": 130000})
    answers = _microsoft_edits_after_the_first_patch(sync_world, referral_id)

    report = sync_world.engine.sync_opportunity(opportunity_id)

    referral, opportunity = sync_world.referral(referral_id), sync_world.opportunity(opportunity_id)
    assert (referral["status"], referral["substatus"], opportunity["StageName"]) == ("Closed", "Won", "Closed Won")
    assert answers[1] == "Conflict" and len(answers) == 3, answers
    assert report.outcome is SyncOutcome.UPDATED and "conflicts" not in report.changes, report
    assert report.changes["stage"] == ["open", "won", "partner_center"], report  # the accept too, not only the win
    assert report.request_ids == [answers[0], answers[2]], report



def test_a_field_a_sync_wrote_in_two_rounds_is_reported_once_from_where_it_found_it() -> None:
    wrote = SyncReport(SyncOutcome.UPDATED, SF_TO_PC, changes={"stage": ["open", "accepted", "partner_center"],
                                                                "dealValue": [100, 130, "partner_center"]},
                       request_ids=["accept"])
    again = SyncReport(SyncOutcome.UPDATED, BOTH, changes={"stage": ["accepted", "won", "partner_center"],
                                                           "notes": [None, "from Microsoft", "salesforce"]},
                       request_ids=["win"])

    report = with_earlier_writes(wrote, again)

    assert report.changes == {"stage": ["open", "won", "partner_center"], "dealValue": [100, 130, "partner_center"],
                              "notes": [None, "from Microsoft", "salesforce"]}
    assert report.request_ids == ["accept", "win"]


def _stage_steps(logged: list[dict[str, Any]]) -> list[list[Any]]:
    """The stage changes named in sync log lines' changes, each as [before, after, side], in the move's order
    (racing syncs log in no set order)."""
    return sorted((changes["stage"] for changes in logged if "stage" in changes),
                  key=lambda change: ["open", "accepted", "won"].index(change[0]))


def test_a_sync_racing_between_the_accept_and_the_win_finishes_the_move_not_undoes_it(
        sync_world: SyncWorld) -> None:
    """The accept of a seller's win fires a webhook; that referral's sync runs before the win is sent. It finds
    the win announced and Partner Center on 'accepted', a step of that very move: the writer's own, not
    Microsoft's edit. Read as an edit, the stage looked changed on both sides, and Partner Center's newer
    'accepted' put the seller's Closed Won back. Each step the two syncs made is named once between them."""
    opportunity_id, referral_id = _incoming_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won", "Amount": 130000})
    engine = sync_world.engine
    racing: list[SyncReport] = []
    answers = _after_the_first_patch(sync_world, lambda: racing.append(engine.sync_referral(referral_id)))
    report = engine.sync_opportunity(opportunity_id)

    referral, opportunity = sync_world.referral(referral_id), sync_world.opportunity(opportunity_id)
    assert (referral["status"], referral["substatus"], opportunity["StageName"]) == ("Closed", "Won", "Closed Won")
    assert referral["details"]["dealValue"] == 130000
    assert answers[2:] == ["Conflict"], "the win was sent twice, or the racing sync sent none"
    assert "both sides changed" not in opportunity["Audit__c"], opportunity["Audit__c"]
    reports = [report, *racing]
    _assert_each_step_named_once([each.changes for each in reports], reports)


def _assert_each_step_named_once(changes: list[dict[str, Any]], shown: object) -> None:
    """No conflict, and the accept and the win (with the deal value that rode with the accept) named once each."""
    assert all("conflicts" not in each for each in changes), shown
    assert _stage_steps(changes) == [
        ["open", "accepted", "partner_center"], ["accepted", "won", "partner_center"]], shown
    assert [each["dealValue"][1:] for each in changes if "dealValue" in each] == [[130000, "partner_center"]], shown


def _assert_the_retry_won_and_each_step_is_logged_once(world: SyncWorld, referral_id: str, opportunity_id: str,
                                                       retry: SyncReport | None) -> None:
    referral, opportunity = world.referral(referral_id), world.opportunity(opportunity_id)
    assert (referral["status"], referral["substatus"], opportunity["StageName"]) == ("Closed", "Won", "Closed Won")
    assert "both sides changed" not in opportunity["Audit__c"], opportunity["Audit__c"]
    assert retry is not None and retry.outcome is SyncOutcome.UPDATED, retry
    rows = world.store.synclog.recent()
    _assert_each_step_named_once([row.changes for row in rows], rows)


@pytest.mark.parametrize("status", [503, 400], ids=["unavailable after retries", "invalid input"])
def test_a_stage_move_whose_win_fails_after_the_accept_landed_logs_the_accept_and_its_retry_finishes_the_win(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    """The win of a seller's stage move fails for good after the accept landed (Partner Center down past the
    retries, or refusing the request). The failure carried nothing: the accept was in no sync log line, and
    the retry found Partner Center on 'accepted', short of the announced 'won', read it as Microsoft's edit
    and, as both sides had moved the stage, put the seller's Closed Won back. The retry finishes the win."""
    from shared.sync.processor import process_opportunity

    services = world_services(sync_world, azurite, monkeypatch)
    opportunity_id, referral_id = _incoming_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won", "Amount": 130000})
    engine, update = sync_world.engine, sync_world.engine.pc.update_referral
    engine.pc.transport.retry = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=0.02)

    def the_win_fails(*args: Any, **kwargs: Any) -> Any:
        answer = update(*args, **kwargs)
        sync_world.pc.server.faults.add({"kind": "status", "status": status, "count": 2, "method": "PATCH"})
        return answer

    engine.pc.update_referral = the_win_fails  # type: ignore[method-assign]
    assert process_opportunity(services, {"opportunity_id": opportunity_id}) is None  # failed: retried or set aside
    engine.pc.update_referral = update  # type: ignore[method-assign]
    sync_world.pc.server.faults.clear()
    referral = sync_world.referral(referral_id)
    assert (referral["status"], referral["substatus"]) == ("Active", "Accepted")
    assert sync_world.opportunity(opportunity_id)["StageName"] == "Closed Won"
    retry = process_opportunity(services, {"opportunity_id": opportunity_id, "attempt": 1})

    _assert_the_retry_won_and_each_step_is_logged_once(sync_world, referral_id, opportunity_id, retry)


def test_a_win_that_meets_a_412_and_then_fails_for_good_logs_the_accept_before_the_retry(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, but the win first meets a 412 (Microsoft edited the referral after the accept), and the
    re-merge's win then fails for good. The accept is the first round's write, carried by its lost race: the
    failure of a later round must not drop it, or no sync log line names it."""
    from shared.sync.processor import process_opportunity

    services = world_services(sync_world, azurite, monkeypatch)
    opportunity_id, referral_id = _incoming_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won", "Amount": 130000})
    engine, update = sync_world.engine, sync_world.engine.pc.update_referral
    engine.pc.transport.retry = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=0.02)
    answers = _microsoft_edits_after_the_first_patch(sync_world, referral_id)
    edits_then_412 = engine.pc.update_referral

    def the_win_after_the_412_fails(*args: Any, **kwargs: Any) -> Any:
        if answers[1:] == ["Conflict"]:
            sync_world.pc.server.faults.add({"kind": "status", "status": 503, "count": 2, "method": "PATCH"})
        return edits_then_412(*args, **kwargs)

    engine.pc.update_referral = the_win_after_the_412_fails  # type: ignore[method-assign]
    assert process_opportunity(services, {"opportunity_id": opportunity_id}) is None  # failed: retried later
    engine.pc.update_referral = update  # type: ignore[method-assign]
    sync_world.pc.server.faults.clear()
    retry = process_opportunity(services, {"opportunity_id": opportunity_id, "attempt": 1})

    _assert_the_retry_won_and_each_step_is_logged_once(sync_world, referral_id, opportunity_id, retry)


def test_a_sync_whose_salesforce_write_fails_for_good_after_its_patch_logs_the_patch_before_the_retry(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The referral took the seller's deal value, then Salesforce failed the opportunity's update past its
    retries. Only a lost race carried the patch; this failure carried nothing, and the retry found the deal
    value in Partner Center (the announced write, landed) and said "no change": no sync log line named it."""
    from shared.errors import Unavailable
    from shared.sync.processor import process_opportunity

    services = world_services(sync_world, azurite, monkeypatch)
    opportunity_id, referral_id = _linked_pair(sync_world)
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 130000})
    engine, update = sync_world.engine, sync_world.engine.sf.update

    def salesforce_is_down(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("Salesforce answered 503 after the retries")

    engine.sf.update = salesforce_is_down  # type: ignore[method-assign]
    assert process_opportunity(services, {"opportunity_id": opportunity_id}) is None  # failed: retried later
    engine.sf.update = update  # type: ignore[method-assign]
    assert sync_world.referral(referral_id)["details"]["dealValue"] == 130000
    process_opportunity(services, {"opportunity_id": opportunity_id, "attempt": 1})

    rows = [row for row in sync_world.store.synclog.recent() if "dealValue" in row.changes]
    assert [(row.outcome, row.changes["dealValue"][1:]) for row in rows] == [
        (SyncOutcome.UPDATED, [130000, "partner_center"])], rows
