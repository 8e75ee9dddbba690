"""The simulator's REST API over HTTPS, driven with simple-salesforce as the connector drives it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from sandbox.salesforce import SalesforceSim
from sandbox.sf_values import normalize_id
from tests.fixtures.salesforce import sf_login

OPPORTUNITY = {"Name": "Contoso cloud", "StageName": "Prospecting", "CloseDate": "2026-06-30", "Amount": 5000}


def _error(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    return exc.value.content[0]


def _sandbox(sim: SalesforceSim, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{sim.url}/_sandbox/{path}", json=body, timeout=10)


# -- records ------------------------------------------------------------------------------------------------


def test_create_read_update_delete(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    account = sf_client.Account.create({"Name": "Contoso", "BillingCountry": "US"})
    created = sf_client.Opportunity.create({**OPPORTUNITY, "AccountId": account["id"]})
    opp_id = created["id"]
    assert created["success"] and opp_id.startswith("006") and len(opp_id) == 18
    assert normalize_id(opp_id[:15]) == opp_id  # the checksum suffix is Salesforce's

    record = sf_client.Opportunity.get(opp_id)
    assert record["Name"] == "Contoso cloud" and record["CloseDate"] == "2026-06-30" and record["Amount"] == 5000.0
    assert record["CreatedById"] == record["LastModifiedById"] == sf_sim.integration.id
    assert record["OwnerId"] == sf_sim.integration.id
    assert record["Probability"] == 10.0 and record["IsClosed"] is False  # derived from the stage
    assert record["Sync_with_Partner_Center__c"] is False  # the checkbox default from the metadata
    assert "CurrencyIsoCode" not in record  # a single-currency org

    sf_client.Opportunity.update(opp_id, {"StageName": "Closed Won"})
    closed = sf_client.Opportunity.get(opp_id)
    assert closed["IsClosed"] is True and closed["IsWon"] is True and closed["Probability"] == 100.0

    only = sf_client.Opportunity.get(opp_id, headers=None)
    assert only["Id"] == opp_id
    assert sf_client.Opportunity.delete(opp_id) == 204
    with pytest.raises(SalesforceResourceNotFound) as gone:
        sf_client.Opportunity.get(opp_id)
    assert _error(gone)["errorCode"] == "ENTITY_IS_DELETED"


def test_get_with_fields_and_by_external_id(sf_client: Salesforce) -> None:
    opp_id = sf_client.Opportunity.create({**OPPORTUNITY, "Referral_Identifier__c": "REF-9"})["id"]
    record = sf_client.Opportunity.get_by_custom_id("Referral_Identifier__c", "ref-9")
    assert record["Id"] == opp_id
    narrow = sf_client.restful(f"sobjects/Opportunity/{opp_id}", params={"fields": "Name,Amount"})
    assert set(narrow) == {"attributes", "Name", "Amount"}
    with pytest.raises(SalesforceResourceNotFound):
        sf_client.Opportunity.get_by_custom_id("Name", "Contoso cloud")  # not an external id


def test_every_update_moves_the_stamps_even_without_a_change(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    opp_id = sf_client.Opportunity.create(OPPORTUNITY)["id"]
    before = sf_client.Opportunity.get(opp_id)
    sf_client.Opportunity.update(opp_id, {"Amount": 5000})
    after = sf_client.Opportunity.get(opp_id)
    assert after["Amount"] == before["Amount"]
    assert after["SystemModstamp"] > before["SystemModstamp"]
    assert after["LastModifiedDate"] > before["LastModifiedDate"]
    assert after["CreatedDate"] == before["CreatedDate"]


def test_last_modified_by_tells_the_seller_from_the_integration(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    opp_id = sf_client.Opportunity.create(OPPORTUNITY)["id"]
    response = _sandbox(sf_sim, "PATCH", f"seller/sobjects/Opportunity/{opp_id}", {"Sync_with_Partner_Center__c": True})
    assert response.status_code == 204
    record = sf_client.Opportunity.get(opp_id)
    assert record["LastModifiedById"] == sf_sim.seller.id and record["CreatedById"] == sf_sim.integration.id
    created = _sandbox(sf_sim, "POST", "seller/sobjects/Opportunity", {**OPPORTUNITY, "Name": "Seller's own"})
    assert created.status_code == 201
    assert sf_client.Opportunity.get(created.json()["id"])["OwnerId"] == sf_sim.seller.id
    refused = _sandbox(sf_sim, "POST", "seller/sobjects/Opportunity", {"Name": "no stage"})
    assert refused.status_code == 400 and refused.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"


def test_delete_cascades_to_solutions_and_contact_roles(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    opp_id = sf_client.Opportunity.create(OPPORTUNITY)["id"]
    contact_id = sf_client.Contact.create({"LastName": "Doe", "Email": "jo@contoso.example"})["id"]
    sf_client.OpportunityContactRole.create({"OpportunityId": opp_id, "ContactId": contact_id, "Role": "Decision Maker"})
    sf_client.Microsoft_Solution__c.create({"Name": "Fabric", "Solution_Id__c": "sol-1", "Opportunity__c": opp_id})
    sf_client.Opportunity.delete(opp_id)
    assert sf_client.query("SELECT Id FROM Microsoft_Solution__c")["totalSize"] == 0
    assert sf_client.query("SELECT Id FROM OpportunityContactRole")["totalSize"] == 0
    deleted = sf_client.query_all("SELECT Id, IsDeleted FROM Microsoft_Solution__c", include_deleted=True)
    assert [r["IsDeleted"] for r in deleted["records"]] == [True]
    assert sf_client.query("SELECT Id FROM Contact")["totalSize"] == 1


def test_describe_comes_from_the_metadata(sf_client: Salesforce) -> None:
    describe = sf_client.Opportunity.describe()
    fields = {f["name"]: f for f in describe["fields"]}
    helper = fields["How_can_Microsoft_help__c"]
    assert helper["type"] == "picklist" and helper["restrictedPicklist"] is True and helper["custom"] is True
    assert "ProofOfConceptOrDemo" in [v["value"] for v in helper["picklistValues"]]
    referral = fields["Referral_Identifier__c"]
    assert referral["externalId"] and referral["unique"] and referral["length"] == 100 and referral["idLookup"]
    marker = fields["Partner_Center_Synced__c"]
    assert marker["calculated"] and not marker["updateable"] and "✔" in marker["calculatedFormula"]
    assert fields["CloseDate"]["type"] == "date" and not fields["CloseDate"]["nillable"]
    assert {"relationshipName": "Microsoft_Solutions__r", "childSObject": "Microsoft_Solution__c"}.items() <= \
        next(c for c in describe["childRelationships"] if c["childSObject"] == "Microsoft_Solution__c").items()
    names = [o["name"] for o in sf_client.describe()["sobjects"]]
    assert {"Opportunity", "Account", "Contact", "OpportunityContactRole", "User", "Microsoft_Solution__c"} <= set(names)
    assert sf_client.Microsoft_Solution__c.metadata()["objectDescribe"]["keyPrefix"].startswith("a0")


# -- strict types -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, code, field", [
    ({"CloseDate": "2026-06-30T00:00:00Z"}, "JSON_PARSER_ERROR", "CloseDate"),
    ({"CloseDate": "30/06/2026"}, "JSON_PARSER_ERROR", "CloseDate"),
    ({"Amount": "a lot"}, "JSON_PARSER_ERROR", "Amount"),
    ({"Sync_with_Partner_Center__c": "yes"}, "JSON_PARSER_ERROR", "Sync_with_Partner_Center__c"),
    ({"Unknown__c": 1}, "INVALID_FIELD", "Unknown__c"),
    ({"StageName": "Maybe later"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "StageName"),
    ({"How_can_Microsoft_help__c": "Coffee"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "How_can_Microsoft_help__c"),
    ({"Name": "x" * 121}, "STRING_TOO_LONG", "Name"),
    ({"Referral_Identifier__c": "r" * 101}, "STRING_TOO_LONG", "Referral_Identifier__c"),
    ({"Amount": 1e17}, "NUMBER_OUTSIDE_VALID_RANGE", "Amount"),
    ({"IsClosed": True}, "INVALID_FIELD_FOR_INSERT_UPDATE", "IsClosed"),
    ({"Partner_Center_Synced__c": "✔"}, "INVALID_FIELD_FOR_INSERT_UPDATE", "Partner_Center_Synced__c"),
    ({"AccountId": "not-an-id"}, "MALFORMED_ID", "AccountId"),
    ({"AccountId": "001Hs0000000zzzAAA"}, "MALFORMED_ID", "AccountId"),
    ({"AccountId": "003Hs0000000001"}, "FIELD_INTEGRITY_EXCEPTION", "AccountId"),
    ({"AccountId": "001Hs0000000999"}, "INVALID_CROSS_REFERENCE_KEY", "AccountId"),
    ({"CurrencyIsoCode": "EUR"}, "INVALID_FIELD", "CurrencyIsoCode"),
])
def test_strict_types_refuse_what_salesforce_refuses(sf_client: Salesforce, fields: dict, code: str, field: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf_client.Opportunity.create({**OPPORTUNITY, **fields})
    assert _error(refused)["errorCode"] == code
    assert field in _error(refused).get("fields", [field]) or field in _error(refused)["message"]
    assert sf_client.query("SELECT COUNT() FROM Opportunity")["totalSize"] == 0


def test_required_fields_on_create_and_update(sf_client: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as missing:
        sf_client.Opportunity.create({"Name": "No stage"})
    assert _error(missing)["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert set(_error(missing)["fields"]) == {"StageName", "CloseDate"}
    opp_id = sf_client.Opportunity.create(OPPORTUNITY)["id"]
    with pytest.raises(SalesforceMalformedRequest) as cleared:
        sf_client.Opportunity.update(opp_id, {"Name": None})
    assert _error(cleared)["errorCode"] == "REQUIRED_FIELD_MISSING"


def test_unique_external_id(sf_client: Salesforce) -> None:
    first = sf_client.Opportunity.create({**OPPORTUNITY, "Referral_Identifier__c": "REF-1"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as duplicate:
        sf_client.Opportunity.create({**OPPORTUNITY, "Referral_Identifier__c": "ref-1"})
    assert _error(duplicate)["errorCode"] == "DUPLICATE_VALUE" and first in _error(duplicate)["message"]


def test_multi_currency_org(sf_sim_factory: Any) -> None:
    sim = sf_sim_factory(multi_currency=True, currencies=["EUR", "USD"])
    client = sf_login(sim)
    default = client.Opportunity.create(OPPORTUNITY)["id"]
    assert client.Opportunity.get(default)["CurrencyIsoCode"] == "EUR"
    usd = client.Opportunity.create({**OPPORTUNITY, "CurrencyIsoCode": "USD"})["id"]
    assert client.query(f"SELECT CurrencyIsoCode FROM Opportunity WHERE Id = '{usd}'")["records"][0][
        "CurrencyIsoCode"] == "USD"
    with pytest.raises(SalesforceMalformedRequest) as refused:
        client.Opportunity.create({**OPPORTUNITY, "CurrencyIsoCode": "XYZ"})
    assert _error(refused)["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    fields = {f["name"] for f in client.Opportunity.describe()["fields"]}
    assert "CurrencyIsoCode" in fields


# -- queries ------------------------------------------------------------------------------------------------


def test_query_paging_with_next_records_url(sf_sim_factory: Any) -> None:
    sim = sf_sim_factory(batch_size=10)
    client = sf_login(sim)
    for index in range(25):
        sim.create("Account", {"Name": f"Account {index:02d}"})
    first = client.query("SELECT Name FROM Account ORDER BY Name")
    assert first["totalSize"] == 25 and not first["done"] and len(first["records"]) == 10
    assert first["nextRecordsUrl"].startswith("/services/data/v64.0/query/01g")
    second = client.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert len(second["records"]) == 10 and not second["done"]
    names = [r["Name"] for r in client.query_all_iter("SELECT Name FROM Account ORDER BY Name")]
    assert names == [f"Account {i:02d}" for i in range(25)]
    done = client.query("SELECT Name FROM Account WHERE Name LIKE 'Account 0%'")
    assert done["done"] and "nextRecordsUrl" not in done
    with pytest.raises(SalesforceMalformedRequest) as stale:
        client.query_more("01gHs0000000999AAA-10")
    assert _error(stale)["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_query_batch_size_header_is_clamped_like_salesforce(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    for index in range(250):
        sf_sim.create("Account", {"Name": f"A{index:03d}"})
    page = sf_client.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=5"})
    assert len(page["records"]) == 200 and page["totalSize"] == 250


def test_query_errors_are_400_with_the_error_code(sf_client: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as malformed:
        sf_client.query("SELECT Id FROM Opportunity WHERE Name = 'a' GROUP BY Name")
    assert _error(malformed)["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as invalid:
        sf_client.query("SELECT Nope__c FROM Opportunity")
    assert _error(invalid)["errorCode"] == "INVALID_FIELD"


# -- Collections --------------------------------------------------------------------------------------------


def _collection(client: Salesforce, method: str, path: str, records: list[dict], all_or_none: bool = False) -> list:
    return client.restful(path, method=method, data=json.dumps({"allOrNone": all_or_none, "records": records}))


def test_collection_create_gives_per_record_results(sf_client: Salesforce) -> None:
    records = [{"attributes": {"type": "Account"}, "Name": "Good"},
               {"attributes": {"type": "Account"}, "Website": "no name"},
               {"attributes": {"type": "Opportunity"}, **OPPORTUNITY, "StageName": "Bogus"}]
    results = _collection(sf_client, "POST", "composite/sobjects", records)
    assert results[0]["success"] and results[0]["id"].startswith("001")
    assert results[1] == {"id": None, "success": False, "errors": [
        {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Name]", "fields": ["Name"]}]}
    assert results[2]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert sf_client.query("SELECT COUNT() FROM Account")["totalSize"] == 1


def test_collection_all_or_none_rolls_everything_back(sf_client: Salesforce) -> None:
    records = [{"attributes": {"type": "Account"}, "Name": "Good"}, {"attributes": {"type": "Account"}}]
    results = _collection(sf_client, "POST", "composite/sobjects", records, all_or_none=True)
    assert [r["success"] for r in results] == [False, False]
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert sf_client.query("SELECT COUNT() FROM Account")["totalSize"] == 0


def test_collection_update_and_its_limits(sf_client: Salesforce) -> None:
    ids = [r["id"] for r in _collection(sf_client, "POST", "composite/sobjects",
                                        [{"attributes": {"type": "Account"}, "Name": f"A{i}"} for i in range(3)])]
    updates = [{"attributes": {"type": "Account"}, "Id": ids[0], "Website": "https://contoso.example"},
               {"attributes": {"type": "Account"}, "Id": ids[1], "Name": None},
               {"attributes": {"type": "Account"}, "Id": "001Hs0000000999", "Name": "ghost"},
               {"attributes": {"type": "Account"}, "Name": "no id"}]
    results = _collection(sf_client, "PATCH", "composite/sobjects", updates)
    assert [r["success"] for r in results] == [True, False, False, False]
    assert [r["errors"][0]["statusCode"] for r in results[1:]] == [
        "REQUIRED_FIELD_MISSING", "INVALID_CROSS_REFERENCE_KEY", "MISSING_ARGUMENT"]
    assert sf_client.Account.get(ids[0])["Website"] == "https://contoso.example"
    too_many = [{"attributes": {"type": "Account"}, "Name": f"B{i}"} for i in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as refused:
        _collection(sf_client, "POST", "composite/sobjects", too_many)
    assert _error(refused)["errorCode"] == "EXCEEDED_ID_LIMIT"
    with pytest.raises(SalesforceMalformedRequest) as typed:
        _collection(sf_client, "POST", "composite/sobjects",
                    [{"attributes": {"type": "Opportunity"}, **OPPORTUNITY, "CloseDate": "2026-06-30T10:00:00Z"}])
    assert _error(typed)["errorCode"] == "JSON_PARSER_ERROR"  # the whole request fails, not one record
    opp_id = sf_client.Opportunity.create(OPPORTUNITY)["id"]
    deleted = sf_client.restful("composite/sobjects", method="DELETE",
                                params={"ids": f"{opp_id},{ids[2]},006Hs0000000999"})
    assert [r["success"] for r in deleted] == [True, False, False]
    # The integration user's permission set grants no delete on Account.
    assert [r["errors"][0]["statusCode"] for r in deleted[1:]] == [
        "INSUFFICIENT_ACCESS_OR_READONLY", "INVALID_CROSS_REFERENCE_KEY"]


def test_upsert_by_external_id_is_idempotent_and_batched(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    records = [{"attributes": {"type": "Opportunity"}, "Referral_Identifier__c": f"REF-{i:03d}",
                "Name": f"Deal {i}", "StageName": "Prospecting", "CloseDate": "2026-06-30"} for i in range(450)]
    used_before = sf_sim.org.api.used
    first = [r for start in range(0, 450, 200) for r in _collection(
        sf_client, "PATCH", "composite/sobjects/Opportunity/Referral_Identifier__c", records[start:start + 200])]
    assert sf_sim.org.api.used - used_before == 3
    assert all(r["success"] and r["created"] for r in first)
    again = [r for start in range(0, 450, 200) for r in _collection(
        sf_client, "PATCH", "composite/sobjects/Opportunity/Referral_Identifier__c", records[start:start + 200])]
    assert all(r["success"] and not r["created"] for r in again)
    assert [r["id"] for r in again] == [r["id"] for r in first]
    assert sf_client.query("SELECT COUNT() FROM Opportunity")["totalSize"] == 450

    single = sf_client.Opportunity.upsert("Referral_Identifier__c/REF-000", {"Amount": 10})
    assert single == 200
    created = sf_client.Opportunity.upsert("Referral_Identifier__c/REF-NEW", {
        "Name": "New", "StageName": "Prospecting", "CloseDate": "2026-01-01"})
    assert created == 201
    duplicated = _collection(sf_client, "PATCH", "composite/sobjects/Opportunity/Referral_Identifier__c",
                             [records[0], {**records[0], "Name": "twin"}])
    assert [r["errors"][0]["statusCode"] for r in duplicated] == ["DUPLICATE_EXTERNAL_ID"] * 2


# -- composite ----------------------------------------------------------------------------------------------


def test_composite_references_and_a_single_api_call(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    used_before = sf_sim.org.api.used
    body = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v64.0/sobjects/Account", "referenceId": "account",
         "body": {"Name": "Contoso"}},
        {"method": "POST", "url": "/services/data/v64.0/sobjects/Opportunity", "referenceId": "opportunity",
         "body": {**OPPORTUNITY, "AccountId": "@{account.id}"}},
        {"method": "POST", "url": "/services/data/v64.0/sobjects/Microsoft_Solution__c", "referenceId": "solution",
         "body": {"Name": "Fabric", "Solution_Id__c": "sol-1", "Opportunity__c": "@{opportunity.id}"}},
        {"method": "GET", "url": "/services/data/v64.0/query?q=SELECT+Id,Account.Name+FROM+Opportunity",
         "referenceId": "lookup"},
        {"method": "PATCH", "url": "/services/data/v64.0/sobjects/Opportunity/@{lookup.records[0].Id}",
         "referenceId": "touch", "body": {"Description": "from composite"}},
    ]}
    answer = sf_client.restful("composite", method="POST", data=json.dumps(body))["compositeResponse"]
    assert [a["httpStatusCode"] for a in answer] == [201, 201, 201, 200, 204]
    assert answer[3]["body"]["records"][0]["Account"]["Name"] == "Contoso"
    assert sf_sim.org.api.used - used_before == 1
    opp = sf_client.Opportunity.get(answer[1]["body"]["id"])
    assert opp["AccountId"] == answer[0]["body"]["id"] and opp["Description"] == "from composite"


def test_composite_all_or_none_rolls_back(sf_client: Salesforce) -> None:
    body = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v64.0/sobjects/Account", "referenceId": "good",
         "body": {"Name": "Contoso"}},
        {"method": "POST", "url": "/services/data/v64.0/sobjects/Opportunity", "referenceId": "bad",
         "body": {"Name": "no stage", "AccountId": "@{good.id}"}},
        {"method": "POST", "url": "/services/data/v64.0/sobjects/Account", "referenceId": "after",
         "body": {"Name": "Fabrikam"}},
    ]}
    answer = sf_client.restful("composite", method="POST", data=json.dumps(body))["compositeResponse"]
    assert [a["httpStatusCode"] for a in answer] == [400, 400, 400]
    assert answer[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert answer[0]["body"][0]["errorCode"] == answer[2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert sf_client.query("SELECT COUNT() FROM Account")["totalSize"] == 0
    body["allOrNone"] = False
    answer = sf_client.restful("composite", method="POST", data=json.dumps(body))["compositeResponse"]
    assert [a["httpStatusCode"] for a in answer] == [201, 400, 201]
    assert sf_client.query("SELECT COUNT() FROM Account")["totalSize"] == 2


def test_composite_limits_and_bad_references(sf_client: Salesforce) -> None:
    many = {"compositeRequest": [{"method": "GET", "url": "/services/data/v64.0/limits", "referenceId": f"r{i}"}
                                 for i in range(26)]}
    with pytest.raises(SalesforceMalformedRequest):
        sf_client.restful("composite", method="POST", data=json.dumps(many))
    dangling = {"compositeRequest": [{"method": "GET", "url": "/services/data/v64.0/sobjects/Account/@{nothing.id}",
                                      "referenceId": "first"}]}
    answer = sf_client.restful("composite", method="POST", data=json.dumps(dangling))["compositeResponse"]
    assert answer[0]["httpStatusCode"] == 400 and answer[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"


# -- limits, sessions and faults ----------------------------------------------------------------------------


def test_every_response_carries_the_limit_header_and_the_limit_is_enforced(sf_sim: SalesforceSim,
                                                                          sf_client: Salesforce) -> None:
    sf_client.query("SELECT Id FROM Account")
    first = sf_client.api_usage["api-usage"]
    sf_client.query("SELECT Id FROM Account")
    second = sf_client.api_usage["api-usage"]
    assert second.used == first.used + 1 and second.total == 100_000
    assert _sandbox(sf_sim, "POST", "limits", {"limit": 50, "used": 49}).json() == {"used": 49, "limit": 50,
                                                                           "concurrent_refusals": 0}
    sf_client.query("SELECT Id FROM Account")
    assert sf_client.api_usage["api-usage"].used == 50
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf_client.query("SELECT Id FROM Account")
    assert _error(refused)["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    raw = requests.get(f"{sf_sim.url}/services/data/v64.0/limits",
                       headers={"Authorization": f"Bearer {sf_client.session_id}"}, timeout=10)
    assert raw.status_code == 403 and raw.headers["Sforce-Limit-Info"] == "api-usage=50/50"
    assert sf_sim.org.api.used == 50  # refused calls do not count


def test_expired_session_is_invalid_session_id(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    sf_client.query("SELECT Id FROM Account")
    assert _sandbox(sf_sim, "POST", "sessions/expire", {}).json() == {"expired": 1}
    with pytest.raises(SalesforceExpiredSession) as expired:
        sf_client.query("SELECT Id FROM Account")
    assert _error(expired)["errorCode"] == "INVALID_SESSION_ID"
    assert sf_login(sf_sim).query("SELECT Id FROM Account")["totalSize"] == 0


def test_unable_to_lock_row_for_the_next_writes(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    opp_id = sf_client.Opportunity.create(OPPORTUNITY)["id"]
    _sandbox(sf_sim, "POST", "lock-rows", {"count": 2})
    with pytest.raises(SalesforceMalformedRequest) as locked:
        sf_client.Opportunity.update(opp_id, {"Amount": 1})
    assert _error(locked)["errorCode"] == "UNABLE_TO_LOCK_ROW"
    results = _collection(sf_client, "PATCH", "composite/sobjects", [
        {"attributes": {"type": "Opportunity"}, "Id": opp_id, "Amount": 2},
        {"attributes": {"type": "Opportunity"}, "Id": opp_id, "Amount": 3}])
    assert [r["success"] for r in results] == [False, True]
    assert sf_client.Opportunity.get(opp_id)["Amount"] == 3.0


def test_generic_faults_answer_5xx(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    _sandbox(sf_sim, "POST", "faults", {"kind": "status", "status": 503, "count": 1, "path": "/services/data"})
    raw = requests.get(f"{sf_sim.url}/services/data/v64.0/limits",
                       headers={"Authorization": f"Bearer {sf_client.session_id}"}, timeout=10)
    assert raw.status_code == 503
    assert sf_login(sf_sim, user="seller").restful("limits")["DailyApiRequests"]["Max"] == 100_000


def test_unknown_api_version_and_objects(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    headers = {"Authorization": f"Bearer {sf_client.session_id}"}
    assert requests.get(f"{sf_sim.url}/services/data/v12.0/limits", headers=headers, timeout=10).status_code == 404
    assert requests.get(f"{sf_sim.url}/services/data/v64.0/sobjects/Nothing__c/describe", headers=headers,
                        timeout=10).status_code == 404
    versions = requests.get(f"{sf_sim.url}/services/data", timeout=10).json()
    assert versions[-1]["version"] == "66.0"


def test_sandbox_state_and_records(sf_sim: SalesforceSim, sf_client: Salesforce) -> None:
    opp_id = sf_client.Opportunity.create(OPPORTUNITY)["id"]
    sf_client.Opportunity.delete(opp_id)
    state = _sandbox(sf_sim, "GET", "state").json()
    assert state["records"]["Opportunity"] == 0 and state["records"]["User"] == 2
    assert state["users"]["seller@cosell.sandbox"] == sf_sim.seller.id
    rows = _sandbox(sf_sim, "GET", "records/Opportunity").json()
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(opp_id, True)]


def test_field_names_in_bodies_are_case_insensitive_as_in_a_real_org(sf_client: Salesforce) -> None:
    # Salesforce's own sObject Collections update example writes "id" (Update Records Using sObject Collections).
    created = _collection(sf_client, "POST", "composite/sobjects",
                          [{"attributes": {"type": "Opportunity"}, "name": "Lower case", "stagename": "Prospecting",
                            "closedate": "2026-06-30"}])
    assert created[0]["success"], created
    opp_id = created[0]["id"]
    updated = _collection(sf_client, "PATCH", "composite/sobjects",
                          [{"attributes": {"type": "Opportunity"}, "id": opp_id, "amount": 4200}])
    assert updated == [{"id": opp_id, "success": True, "errors": []}]
    upserted = _collection(sf_client, "PATCH", "composite/sobjects/Opportunity/Referral_Identifier__c",
                           [{"attributes": {"type": "Opportunity"}, "referral_identifier__c": "REF-lower",
                             "NAME": "Upserted", "StageName": "Prospecting", "CloseDate": "2026-06-30"}])
    assert upserted[0]["success"] and upserted[0]["created"], upserted
    sf_client.Opportunity.update(opp_id, {"DESCRIPTION": "single record too"})
    record = sf_client.Opportunity.get(opp_id)
    assert (record["Name"], record["Amount"], record["Description"]) == ("Lower case", 4200.0, "single record too")
    assert sf_client.Opportunity.get(upserted[0]["id"])["Referral_Identifier__c"] == "REF-lower"
