"""The default mapping as the sync engine uses it: canonical values, stage table, updates, creates, patches."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from shared.mapping import (
    Direction,
    IllegalTransition,
    Mapping,
    MissingPrerequisites,
    Policy,
    Transition,
    UnmappedValue,
    patch_ops,
)
from shared.salesforce.describe import OrgSchema
from shared.settings import APP_ROOT

MAPPING_FILE = APP_ROOT / "mappings" / "salesforce.json"
OPP_ID = "0065g00000XyZabAAB"


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return Mapping.load(MAPPING_FILE)


@pytest.fixture
def incoming(samples_dir: Path) -> dict[str, Any]:
    return json.loads((samples_dir / "referral-incoming-new.json").read_text())


@pytest.fixture
def outgoing(samples_dir: Path) -> dict[str, Any]:
    return json.loads((samples_dir / "referral-outgoing-shared.json").read_text())


def opportunity_of(mapping: Mapping, referral: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """An opportunity as Salesforce would return it after the connector created it from `referral`."""
    record = {"Id": OPP_ID, **mapping.opportunity_for_create(referral, today=dt.date(2026, 11, 1))}
    rows = [{"Id": f"a0{i}", **row} for i, row in enumerate(mapping.solution_rows(referral, OPP_ID))]
    record["Microsoft_Solutions__r"] = {"totalSize": len(rows), "done": True, "records": rows} if rows else None
    record.update(changes)
    return record


def test_fields_expose_key_direction_policy_and_conversions(mapping: Mapping) -> None:
    deal = mapping.field("dealValue")
    assert (deal.key, deal.sf_field, deal.pc_path) == ("dealValue", "Amount", "details.dealValue")
    assert deal.direction is Direction.BOTH and deal.policy is Policy.NEWEST
    assert deal.to_sf(48000) == 48000 and deal.to_pc(48000) == 48000
    name = mapping.field("name")
    assert name.to_partner_center and not name.to_salesforce
    assert [f.key for f in mapping.fields][-2:] == ["stage", "solutions"]
    with pytest.raises(KeyError):
        mapping.field("nope")


def test_canonical_values_of_the_sample_referrals(mapping: Mapping, incoming: dict, outgoing: dict) -> None:
    values = mapping.pc_values(outgoing)
    assert values["dealValue"] == 125000 and values["currency"] == "USD"
    assert values["closingDate"] == "2027-01-31"
    assert values["assistance"] == "CustomerTechnicalArchitecture"
    assert values["stage"] == "accepted"
    assert values["solutions"] == ["a1b2c3d4-0000-4000-8000-000000000001"]
    assert mapping.pc_values(incoming)["stage"] == "open"
    json.dumps(values)  # the base is stored as JSON


def test_a_created_opportunity_reads_back_as_the_referral_it_came_from(mapping: Mapping, incoming: dict,
                                                                         outgoing: dict) -> None:
    """The loop guard: after the connector writes, both sides have the same canonical values."""
    for referral in (incoming, outgoing):
        pc, sf = mapping.pc_values(referral), mapping.sf_values(opportunity_of(mapping, referral))
        copied = [f.key for f in mapping.opportunity.fields if f.copied_on_create(True)] + ["stage", "solutions"]
        assert {k: sf[k] for k in copied} == {k: pc[k] for k in copied}


def test_opportunity_for_create_lands_incoming_referrals_in_the_not_yet_accepted_stage(mapping: Mapping,
                                                                                        incoming: dict) -> None:
    record = mapping.opportunity_for_create(incoming, today=dt.date(2026, 11, 1))
    assert record["StageName"] == "Prospecting" == mapping.stages.not_yet_accepted
    assert record["Name"] == "Fabrikam - Dynamics upgrade"
    assert record["CloseDate"] == "2027-03-15" and record["Amount"] == 48000 and record["CurrencyIsoCode"] == "EUR"
    assert record["Referral_Identifier__c"] == incoming["id"]
    assert record["Referral_Link__c"].endswith(incoming["id"])
    assert record["Sync_with_Partner_Center__c"] is True
    assert "How_can_Microsoft_help__c" not in record  # no code in the referral: nothing written
    del incoming["details"]["closingDateTime"]
    assert mapping.opportunity_for_create(incoming, today=dt.date(2026, 11, 1))["CloseDate"] == "2027-01-30"


def test_related_records_for_create(mapping: Mapping, incoming: dict, outgoing: dict) -> None:
    assert mapping.account_for_create(incoming) == {
        "Name": "Fabrikam Inc", "BillingCity": "Berlin", "BillingPostalCode": "10115", "BillingCountry": "Germany"}
    assert mapping.contacts_for_create(incoming) == [
        {"FirstName": "Jonas", "LastName": "Weber", "Email": "jonas.weber@fabrikam.example"}]
    [row] = mapping.solution_rows(outgoing, OPP_ID)
    assert row == {"Solution_Id__c": "a1b2c3d4-0000-4000-8000-000000000001", "Name": "Contoso Migrate Accelerator",
                   "Solution_Type__c": "Service", "Opportunity__c": OPP_ID,
                   "Solution_Key__c": f"{outgoing['id']}:a1b2c3d4-0000-4000-8000-000000000001"}
    assert mapping.contact_rules.role == "Decision Maker" and mapping.contact_rules.match_by == "Email"


def test_solution_changes_create_the_missing_rows_and_delete_the_removed(mapping: Mapping, outgoing: dict) -> None:
    opportunity = opportunity_of(mapping, outgoing)
    assert mapping.solution_changes(outgoing, opportunity) == ([], [])
    outgoing["details"]["requirements"]["solutions"] = [{"id": "sol-new", "name": "New one", "type": "Service"}]
    create, delete = mapping.solution_changes(outgoing, opportunity)
    assert delete == ["a00"] and [row["Solution_Id__c"] for row in create] == ["sol-new"]
    assert create[0]["Opportunity__c"] == OPP_ID and create[0]["Solution_Key__c"] == f"{outgoing['id']}:sol-new"


def test_referral_to_salesforce_update_follows_directions(mapping: Mapping, outgoing: dict) -> None:
    update = mapping.referral_to_salesforce(outgoing)
    # Name and How can Microsoft help flow only Salesforce -> Partner Center on update.
    assert "Name" not in update and "How_can_Microsoft_help__c" not in update
    assert update["Amount"] == 125000 and update["StageName"] == "Qualification"
    assert update["Decline_Reason__c"] is None  # an empty value clears the field on update
    create = mapping.referral_to_salesforce(outgoing, create=True)
    assert create["Name"] == "Contoso - Azure migration"
    assert create["How_can_Microsoft_help__c"] == "CustomerTechnicalArchitecture"
    assert "Decline_Reason__c" not in create


def test_salesforce_to_referral_update_and_create(mapping: Mapping, outgoing: dict) -> None:
    opportunity = opportunity_of(mapping, outgoing, Amount=99.5, Name="Renamed", CloseDate="2027-02-01")
    values = mapping.salesforce_to_referral(opportunity)
    assert values["details.dealValue"] == 99.5 and values["name"] == "Renamed"
    assert values["details.closingDateTime"] == "2027-02-01T00:00:00Z"
    assert "id" not in values and "statusReason" not in values  # PC -> Salesforce only
    assert mapping.salesforce_to_referral(opportunity, create=True)["inviteContext.assistanceRequestCode"] == \
        "CustomerTechnicalArchitecture"


def test_sf_changes_contains_only_what_differs(mapping: Mapping, outgoing: dict) -> None:
    opportunity = opportunity_of(mapping, outgoing)
    assert mapping.sf_changes(opportunity, mapping.pc_values(outgoing), referral=outgoing) == {}
    merged = {**mapping.pc_values(outgoing), "dealValue": 130000, "closingDate": "2027-02-28", "name": "Not sent"}
    assert mapping.sf_changes(opportunity, merged) == {"Amount": 130000, "CloseDate": "2027-02-28"}
    # Stage: the phase's stage, or the referral's exact stage when the referral is in that phase.
    seller_stage = opportunity_of(mapping, outgoing, StageName="Negotiation/Review")
    assert mapping.sf_changes(seller_stage, {"stage": "accepted"}) == {}
    lost = {**outgoing, "status": "Closed", "substatus": "Declined"}
    assert mapping.sf_changes(seller_stage, {"stage": "lost"}, referral=lost) == {"StageName": "Closed Lost"}
    assert mapping.sf_changes(seller_stage, {"stage": None}) == {}


def test_stage_table_both_ways(mapping: Mapping) -> None:
    assert mapping.stage_for("New", "Received") == "Prospecting"
    assert mapping.stage_for("Active", "Accepted") == "Qualification"
    assert mapping.stage_for("Closed", "Expired") == "Closed Lost"
    with pytest.raises(UnmappedValue):
        mapping.stage_for("Active", "Pending")
    assert mapping.transition_for("Qualification", "New", "Received") == (Transition("Active", "Accepted"),)
    assert mapping.transition_for("Needs Analysis", "Active", "Accepted") == ()
    assert mapping.transition_for("Prospecting", "New", "Pending") == ()
    assert mapping.transition_for("Closed Won", "Active", "Accepted") == (Transition("Closed", "Won"),)
    # Won before acceptance: accept first, the state machine has no shortcut.
    assert mapping.transition_for("Closed Won", "New", "Received") == (
        Transition("Active", "Accepted"), Transition("Closed", "Won"))
    # Lost before acceptance declines; after acceptance it loses; both need a reason.
    assert mapping.transition_for("Closed Lost", "New", "Received") == (Transition("Closed", "Declined", True),)
    assert mapping.transition_for("Closed Lost", "Active", "Accepted") == (Transition("Closed", "Lost", True),)
    assert mapping.transition_for("Closed Lost", "Closed", "Expired") == ()
    with pytest.raises(IllegalTransition, match="already accepted"):
        mapping.transition_for("Prospecting", "Active", "Accepted")
    with pytest.raises(IllegalTransition, match="closed"):
        mapping.transition_for("Qualification", "Closed", "Won")
    with pytest.raises(UnmappedValue, match="stage table"):
        mapping.transition_for("Invented Stage", "New", "Received")


def test_on_hold_stages_are_not_synced(mapping: Mapping) -> None:
    document = json.loads(MAPPING_FILE.read_text())
    document["stages"]["onHold"] = ["Perception Analysis"]
    del document["stages"]["toPartnerCenter"]["Perception Analysis"]
    held = Mapping.from_document(document)
    assert held.is_on_hold("Perception Analysis") and not held.is_on_hold("Qualification")
    assert held.transition_for("Perception Analysis", "New", "Received") == ()
    assert held.stage.sf_value({"StageName": "Perception Analysis"}) is None
    assert not mapping.is_on_hold("Perception Analysis")


def test_declined_and_expired_referrals_read_back_as_the_same_phase(mapping: Mapping) -> None:
    for substatus in ("Lost", "Declined", "Expired"):
        referral = {"status": "Closed", "substatus": substatus}
        stage = mapping.stage_for("Closed", substatus)
        assert mapping.stage.pc_value(referral) == mapping.stage.sf_value({"StageName": stage}) == "lost"


def test_pc_update_sends_changed_fields_with_replace_and_add(mapping: Mapping, outgoing: dict) -> None:
    del outgoing["details"]["requirements"]
    opportunity = opportunity_of(mapping, outgoing, Amount=5000, Description="New notes")
    opportunity["Microsoft_Solutions__r"] = {"records": [
        {"Id": "a01", "Solution_Id__c": "sol-1", "Name": "One", "Solution_Type__c": "Service"}]}
    update = mapping.pc_update(outgoing, mapping.sf_values(opportunity), opportunity=opportunity)
    assert update.refused is None
    assert update.patches == [[
        {"op": "replace", "path": "/details/dealValue", "value": 5000},
        {"op": "replace", "path": "/details/notes", "value": "New notes"},
        {"op": "add", "path": "/details/requirements",
         "value": {"solutions": [{"id": "sol-1", "name": "One", "type": "Service"}]}},
    ]]


def test_pc_update_sends_nothing_when_nothing_differs(mapping: Mapping, outgoing: dict) -> None:
    opportunity = opportunity_of(mapping, outgoing)
    assert mapping.pc_update(outgoing, mapping.sf_values(opportunity), opportunity=opportunity).patches == []


def test_pc_update_wins_in_two_steps_and_declines_with_the_reason(mapping: Mapping, incoming: dict) -> None:
    won = opportunity_of(mapping, incoming, StageName="Closed Won", Amount=50000)
    update = mapping.pc_update(incoming, {"stage": "won", "dealValue": 50000}, opportunity=won)
    assert update.patches == [
        [{"op": "replace", "path": "/details/dealValue", "value": 50000},
         {"op": "replace", "path": "/status", "value": "Active"},
         {"op": "replace", "path": "/substatus", "value": "Accepted"}],
        [{"op": "replace", "path": "/status", "value": "Closed"},
         {"op": "replace", "path": "/substatus", "value": "Won"}],
    ]
    declined = opportunity_of(mapping, incoming, StageName="Closed Lost", Decline_Reason__c="No budget")
    [patch] = mapping.pc_update(incoming, {"stage": "lost"}, opportunity=declined).patches
    assert {"op": "replace", "path": "/substatus", "value": "Declined"} in patch
    assert {"op": "replace", "path": "/statusReason", "value": "No budget"} in patch
    no_reason = opportunity_of(mapping, incoming, StageName="Closed Lost")
    [patch] = mapping.pc_update(incoming, {"stage": "lost"}, opportunity=no_reason).patches
    assert {"op": "replace", "path": "/statusReason", "value": mapping.stages.default_reason} in patch


def test_pc_update_refuses_illegal_stages_but_sends_the_other_fields(mapping: Mapping, outgoing: dict) -> None:
    back = opportunity_of(mapping, outgoing, StageName="Prospecting", Amount=1)
    update = mapping.pc_update(outgoing, {"stage": "open", "dealValue": 1}, opportunity=back)
    assert update.patches == [[{"op": "replace", "path": "/details/dealValue", "value": 1}]]
    assert "already accepted" in (update.refused or "")


def test_pc_update_plans_nothing_for_a_closed_referral(mapping: Mapping, outgoing: dict) -> None:
    closed = {**outgoing, "status": "Closed", "substatus": "Won"}
    update = mapping.pc_update(closed, {"dealValue": 1}, opportunity=opportunity_of(mapping, closed))
    assert update.patches == [] and "closed" in (update.refused or "")
    assert mapping.pc_update(closed, {"dealValue": 125000}).patches == []


def test_patch_ops_add_versus_replace() -> None:
    referral = {"name": "x", "details": {"dealValue": 1, "notes": None}, "inviteContext": None}
    assert patch_ops(referral, {
        "name": "y",
        "details.notes": "n",
        "details.currency": "EUR",
        "details.requirements.solutions": [{"id": "s"}],
        "details.requirements.industries": [{"id": "Retail"}],
        "inviteContext.assistanceRequestCode": "GeneralOrOther",
    }) == [
        {"op": "replace", "path": "/name", "value": "y"},
        {"op": "replace", "path": "/details/notes", "value": "n"},
        {"op": "add", "path": "/details/currency", "value": "EUR"},
        {"op": "add", "path": "/details/requirements", "value": {"solutions": [{"id": "s"}]}},
        {"op": "add", "path": "/details/requirements/industries", "value": [{"id": "Retail"}]},
        {"op": "add", "path": "/inviteContext", "value": {"assistanceRequestCode": "GeneralOrOther"}},
    ]
    assert referral["inviteContext"] is None  # the input is not modified
    assert patch_ops({}, {}) == []


def test_referral_for_create_builds_the_post_body_with_defaults(mapping: Mapping, outgoing: dict) -> None:
    opportunity = opportunity_of(mapping, outgoing)
    account = {"Name": "Contoso Ltd", "BillingCountry": "United States", "BillingCity": "Seattle"}
    contacts = [{"FirstName": "Ada", "LastName": "Lopez", "Email": "ada@contoso.example", "Phone": None}]
    body = mapping.referral_for_create(opportunity, account=account, contacts=contacts)
    assert body["name"] == "Contoso - Azure migration" and body["externalReferenceId"] == OPP_ID
    assert body["type"] == "Shared" and body["qualification"] == "SalesQualified"
    assert body["consent"] == {"consentToShareReferralWithMicrosoftSellers": True, "consentToContact": True,
                               "consentToToShareInfoWithOthers": False}
    assert body["customerProfile"] == {"name": "Contoso Ltd", "address": {"city": "Seattle", "country": "US"},
                                       "team": [{"firstName": "Ada", "lastName": "Lopez",
                                                 "email": "ada@contoso.example"}]}
    assert body["details"]["dealValue"] == 125000 and body["details"]["closingDateTime"] == "2027-01-31T00:00:00Z"
    assert body["details"]["requirements"]["solutions"] == [
        {"id": "a1b2c3d4-0000-4000-8000-000000000001", "name": "Contoso Migrate Accelerator", "type": "Service"}]
    assert body["inviteContext"] == {"assistanceRequestCode": "CustomerTechnicalArchitecture"}
    assert "status" not in body and "id" not in body


def test_referral_for_create_lists_every_missing_prerequisite(mapping: Mapping, outgoing: dict) -> None:
    opportunity = opportunity_of(mapping, outgoing, Microsoft_Solutions__r=None)
    with pytest.raises(MissingPrerequisites) as caught:
        mapping.referral_for_create(opportunity, account={"Name": "Contoso Ltd"}, contacts=[])
    assert caught.value.missing == [
        "Set the account's billing country.",
        "Add the customer contact as a contact role on the opportunity.",
        "Add at least one Microsoft solution (Products) to the opportunity.",
    ]
    assert "billing country" in str(caught.value)


def test_independent_referrals_need_no_solution_or_contact(outgoing: dict) -> None:
    document = json.loads(MAPPING_FILE.read_text())
    document["create"]["partnerCenter"]["defaults"]["type"] = "Independent"
    independent = Mapping.from_document(document)
    opportunity = opportunity_of(independent, outgoing, Microsoft_Solutions__r=None)
    body = independent.referral_for_create(opportunity, account={"Name": "C", "BillingCountry": "DE"})
    assert body["type"] == "Independent" and body["customerProfile"]["address"]["country"] == "DE"


def test_currency_is_mapped_only_where_the_org_has_the_field(mapping: Mapping, outgoing: dict) -> None:
    def describe(names: list[str]) -> OrgSchema:
        assert "Opportunity" in names
        fields = {"Opportunity": ["Name", "Amount", "CloseDate", "Description", "How_can_Microsoft_help__c",
                                  "Decline_Reason__c", "Referral_Identifier__c", "Referral_Link__c", "StageName",
                                  "Sync_with_Partner_Center__c", "Audit__c", "Partner_Center_Sync_Status__c"]}
        return OrgSchema.from_describes(
            [{"name": name, "fields": [{"name": f} for f in fields.get(name, [])]} for name in names])

    single_currency = Mapping.load(MAPPING_FILE, describe=lambda names: _lenient(describe(names)))
    assert "currency" not in [f.key for f in single_currency.fields]
    assert "CurrencyIsoCode" not in single_currency.opportunity_query([OPP_ID])
    assert "CurrencyIsoCode" in mapping.opportunity_query([OPP_ID])


def _lenient(schema: OrgSchema) -> OrgSchema:
    """Every object the mapping names exists with every field it maps, except what `schema` says of Opportunity."""
    document = json.loads(MAPPING_FILE.read_text())
    describes = []
    for section in ("account", "contacts", "solutions"):
        spec = document[section]
        extra = [spec.get(k) for k in ("parentField", "keyField", "matchBy") if spec.get(k)]
        describes.append({"name": spec["sobject"],
                          "fields": [{"name": f["salesforce"]} for f in spec["fields"]] + [{"name": n} for n in extra]})
    opportunity = schema.sobject("Opportunity").model_dump(by_alias=True)
    opportunity["childRelationships"] = [{"childSObject": "Microsoft_Solution__c", "field": "Opportunity__c",
                                          "relationshipName": "Microsoft_Solutions__r"}]
    return OrgSchema.from_describes([opportunity, *describes])


def test_opportunity_query_reads_the_solutions_and_refuses_bad_ids(mapping: Mapping) -> None:
    soql = mapping.opportunity_query([OPP_ID, "006000000000001"])
    assert soql.startswith("SELECT Id, Name, AccountId, SystemModstamp")
    assert "(SELECT Id, Solution_Id__c, Name, Solution_Type__c FROM Microsoft_Solutions__r)" in soql
    assert soql.endswith(f"WHERE Id IN ('{OPP_ID}', '006000000000001')")
    with pytest.raises(Exception, match="not a Salesforce id"):
        mapping.opportunity_query(["x' OR Name != '"])


def test_solutions_need_the_subquery(mapping: Mapping, outgoing: dict) -> None:
    opportunity = opportunity_of(mapping, outgoing)
    del opportunity["Microsoft_Solutions__r"]
    with pytest.raises(UnmappedValue, match="subquery"):
        mapping.sf_values(opportunity)
    assert mapping.solutions.sf_value({"Microsoft_Solutions__r": None}) == []


def test_the_mapping_is_not_changed_by_use(mapping: Mapping, outgoing: dict) -> None:
    before = copy.deepcopy(mapping.document)
    mapping.referral_for_create(opportunity_of(mapping, outgoing), account={"Name": "A", "BillingCountry": "US"},
                                contacts=[{"LastName": "L"}])
    assert mapping.document == before and mapping.referral_defaults["consent"]["consentToContact"] is True
