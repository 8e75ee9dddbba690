"""The metadata in salesforce/force-app and the default mapping agree, so they cannot drift apart.

Every custom field and object the mapping names is deployed by the metadata, with the type the mapping
needs (external ids, picklist values); the integration user's permission set lets the connector write what
it writes; and an org built from that metadata (the simulator) checks the mapping without a problem when
read as the integration user.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.salesforce import SalesforceSim
from shared.mapping import Mapping, sobjects_of, validate
from shared.salesforce import SalesforceClient
from shared.salesforce.auth import Credentials, Grant
from shared.settings import APP_ROOT

DEFAULT = APP_ROOT / "salesforce" / "force-app" / "main" / "default"
NS = "{http://soap.sforce.com/2006/04/metadata}"
DOCUMENT: dict[str, Any] = json.loads((APP_ROOT / "mappings" / "salesforce.json").read_text())
NOT_GOVERNED = {"Name", "FirstName", "LastName", "StageName", "CloseDate", "CurrencyIsoCode"}
"""Standard fields without field-level security (name fields, required standard fields, currency)."""


def custom_fields() -> dict[str, ET.Element]:
    """`Object.Field__c` -> its CustomField element, for every field file in the metadata."""
    return {f"{path.parent.parent.name}.{path.name.removesuffix('.field-meta.xml')}": ET.parse(path).getroot()
            for path in DEFAULT.glob("objects/*/fields/*.field-meta.xml")}


def text(element: ET.Element, tag: str) -> str | None:
    found = element.find(NS + tag)
    return None if found is None else (found.text or "")


def named_fields() -> Iterator[tuple[str, str, str]]:
    """(object, field, where in the mapping) for every Salesforce field the default mapping names."""
    for section in ("opportunity", "account", "contacts", "solutions"):
        spec = DOCUMENT[section]
        for index, fld in enumerate(spec["fields"]):
            yield spec["sobject"], fld["salesforce"], f"{section}.fields[{index}]"
        for key in ("optInField", "referralIdField", "auditField", "syncStatusField", "parentField", "keyField",
                    "matchBy"):
            if key in spec:
                yield spec["sobject"], spec[key], f"{section}.{key}"
    stages = DOCUMENT["stages"]
    yield "Opportunity", stages["salesforce"], "stages.salesforce"
    yield "Opportunity", stages["reasonField"], "stages.reasonField"
    for name in DOCUMENT["create"]["salesforce"]["defaults"]:
        yield "Opportunity", name, f"create.salesforce.defaults.{name}"


def test_every_custom_field_of_the_mapping_is_deployed_by_the_metadata() -> None:
    deployed = custom_fields()
    named = [(f"{obj}.{name}", where) for obj, name, where in named_fields() if name.endswith("__c")]
    assert named, "the default mapping names custom fields"
    missing = [f"{field} ({where})" for field, where in named if field not in deployed]
    assert missing == []
    custom_objects = {DOCUMENT[s]["sobject"] for s in ("opportunity", "account", "contacts", "solutions")
                      if DOCUMENT[s]["sobject"].endswith("__c")}
    for obj in custom_objects:
        assert (DEFAULT / "objects" / obj / f"{obj}.object-meta.xml").exists(), obj


def test_the_keys_the_connector_upserts_by_are_unique_external_ids() -> None:
    deployed = custom_fields()
    keys = [f"Opportunity.{DOCUMENT['opportunity']['referralIdField']}",
            f"{DOCUMENT['solutions']['sobject']}.{DOCUMENT['solutions']['keyField']}"]
    for key in keys:
        assert text(deployed[key], "externalId") == "true" and text(deployed[key], "unique") == "true", key


def test_the_solutions_relationship_is_the_one_the_metadata_names() -> None:
    spec = DOCUMENT["solutions"]
    parent = custom_fields()[f"{spec['sobject']}.{spec['parentField']}"]
    assert text(parent, "referenceTo") == DOCUMENT["opportunity"]["sobject"]
    assert f"{text(parent, 'relationshipName')}__r" == spec["relationship"]


def test_the_picklist_tables_use_values_the_metadata_defines() -> None:
    deployed = custom_fields()
    for fld in DOCUMENT["opportunity"]["fields"]:
        if fld.get("transform") != "table":
            continue
        element = deployed[f"Opportunity.{fld['salesforce']}"]
        values = {v.findtext(NS + "fullName") for v in element.iter(NS + "value")}
        table = DOCUMENT["tables"][fld["table"]]
        assert set(table["values"].values()) | {table.get("defaultSalesforce")} - {None} <= values


def test_the_permission_set_lets_the_connector_write_what_it_writes() -> None:
    root = ET.parse(next(DEFAULT.glob("permissionsets/*.permissionset-meta.xml"))).getroot()
    editable = {p.findtext(NS + "field") for p in root.iter(NS + "fieldPermissions")
                if p.findtext(NS + "editable") == "true"}
    deployed = custom_fields()
    mapping = Mapping.from_document(DOCUMENT)
    written = [(o.sobject, f.sf_field) for o in (mapping.opportunity, mapping.account, mapping.contacts,
                                                mapping.solution_rows_mapping)
               for f in o.fields if f.to_salesforce or f.copied_on_create(True)]
    written += [("Opportunity", mapping.own_fields.audit), ("Opportunity", mapping.own_fields.sync_status or "")]
    for obj, name in written:
        field = deployed.get(f"{obj}.{name}")
        if name in NOT_GOVERNED or (field is not None and text(field, "required") == "true"):
            continue  # always editable: Salesforce refuses field permissions on these
        assert f"{obj}.{name}" in editable, f"{obj}.{name} is written by the connector"


@pytest.fixture
def integration_client(sf_sim: SalesforceSim) -> Iterator[SalesforceClient]:
    """The connector's client logged in to the simulator as the integration user (permission set applies)."""
    creds = sf_sim.credentials
    client = SalesforceClient(login_url=creds.login_url, api_version="64.0",
                              credentials=Credentials(Grant.PASSWORD, client_id=creds.client_id,
                                                      client_secret=creds.client_secret, username=creds.username,
                                                      password=creds.password, security_token=creds.security_token))
    yield client


def test_an_org_built_from_the_metadata_accepts_the_mapping_as_the_integration_user(
        integration_client: SalesforceClient) -> None:
    schema = integration_client.org_schema(sobjects_of(DOCUMENT))
    assert validate(DOCUMENT, schema) == []
    mapping = Mapping.from_document(DOCUMENT, describe=schema)
    text_lengths = {f.sf_field: f.transform.max_length for f in mapping.solution_rows_mapping.fields}  # type: ignore[attr-defined]
    assert text_lengths["Solution_Type__c"] == 50  # lengths come from the describe, so a long value is cut, not refused


def test_a_referral_body_from_records_read_in_the_org(sf_sim: SalesforceSim,
                                                      integration_client: SalesforceClient) -> None:
    """The create path end to end on the mapping's side: seller data in the org -> the POST /referrals body."""
    account = sf_sim.create("Account", {"Name": "Contoso Ltd", "BillingCountry": "United States",
                                        "BillingCity": "Seattle"})
    opp = sf_sim.create("Opportunity", {"Name": "Contoso - Azure migration", "AccountId": account, "Amount": 125000,
                                        "StageName": "Qualification", "CloseDate": "2027-01-31",
                                        "How_can_Microsoft_help__c": "CustomerTechnicalArchitecture",
                                        "Sync_with_Partner_Center__c": True})
    contact = sf_sim.create("Contact", {"FirstName": "Ada", "LastName": "Lopez", "Email": "ada@contoso.example",
                                        "AccountId": account})
    sf_sim.create("OpportunityContactRole", {"OpportunityId": opp, "ContactId": contact, "Role": "Decision Maker"})
    sf_sim.create("Microsoft_Solution__c", {"Name": "Migrate Accelerator", "Opportunity__c": opp,
                                            "Solution_Id__c": "sol-1", "Solution_Type__c": "Service"})
    client = integration_client
    mapping = Mapping.from_document(DOCUMENT, describe=client.org_schema)
    [record] = client.query(mapping.opportunity_query([opp]))
    [account_record] = client.query(mapping.account_query([record["AccountId"]]))
    contacts = [row["Contact"] for row in client.query(mapping.contact_roles_query([opp]))]
    body = mapping.referral_for_create(record, account=account_record, contacts=contacts)
    assert body["name"] == "Contoso - Azure migration" and body["externalReferenceId"] == opp
    assert body["customerProfile"] == {"name": "Contoso Ltd", "address": {"city": "Seattle", "country": "US"},
                                       "team": [{"firstName": "Ada", "lastName": "Lopez",
                                                 "email": "ada@contoso.example"}]}
    assert body["details"]["dealValue"] == 125000 and body["details"]["closingDateTime"] == "2027-01-31T00:00:00Z"
    assert body["details"]["currency"] == "USD"  # single-currency org: the mapping's default
    assert body["details"]["requirements"]["solutions"] == [{"id": "sol-1", "name": "Migrate Accelerator",
                                                            "type": "Service"}]
    assert body["inviteContext"]["assistanceRequestCode"] == "CustomerTechnicalArchitecture"
    values = mapping.sf_values(record)
    assert values["stage"] == "accepted" and values["solutions"] == ["sol-1"] and "currency" not in values
