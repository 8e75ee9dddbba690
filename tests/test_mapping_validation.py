"""A bad mapping file is refused at load with every problem, each at its JSON path; the CLI says the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.salesforce import SalesforceSim
from shared.cli import main
from shared.mapping import Mapping, MappingError, sobjects_of, validate
from shared.salesforce.describe import OrgSchema
from shared.settings import APP_ROOT

MAPPING_FILE = APP_ROOT / "mappings" / "salesforce.json"
STAGES = ["Prospecting", "Qualification", "Needs Analysis", "Value Proposition", "Id. Decision Makers",
          "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost"]
ASSISTANCE = ["Unknown", "GeneralOrOther", "CustomerTechnicalArchitecture", "ProofOfConceptOrDemo",
              "QuotesOrLicensing", "PostSalesCustomerSuccess", "WorkloadSpecificValueProposition"]


def default_document() -> dict[str, Any]:
    return json.loads(MAPPING_FILE.read_text())


def org(**overrides: list[dict[str, Any]]) -> OrgSchema:
    """A describe with everything the default mapping names (objects' fields overridable per object)."""
    def fields(*names: str) -> list[dict[str, Any]]:
        return [{"name": n, "type": "string", "length": 255} for n in names]

    objects: dict[str, list[dict[str, Any]]] = {
        "Opportunity": [
            *fields("Id", "Name", "Amount", "CurrencyIsoCode", "CloseDate", "Description", "Decline_Reason__c",
                    "Referral_Identifier__c", "Referral_Link__c", "Sync_with_Partner_Center__c", "Audit__c",
                    "Partner_Center_Sync_Status__c"),
            {"name": "StageName", "type": "picklist", "picklistValues": [{"value": s} for s in STAGES]},
            {"name": "How_can_Microsoft_help__c", "type": "picklist",
             "picklistValues": [{"value": v} for v in ASSISTANCE]},
        ],
        "Account": fields("Id", "Name", "BillingStreet", "BillingCity", "BillingState", "BillingPostalCode",
                          "BillingCountry"),
        "Contact": fields("Id", "FirstName", "LastName", "Email", "Phone"),
        "OpportunityContactRole": [{"name": "Role", "type": "picklist",
                                    "picklistValues": [{"value": "Decision Maker"}, {"value": "Other"}]}],
        "Microsoft_Solution__c": fields("Id", "Name", "Opportunity__c", "Solution_Id__c", "Solution_Key__c",
                                        "Solution_Type__c"),
    }
    objects.update(overrides)
    relationships = [{"childSObject": "Microsoft_Solution__c", "field": "Opportunity__c",
                      "relationshipName": "Microsoft_Solutions__r"}]
    return OrgSchema.from_describes([{"name": name, "fields": f, **({"childRelationships": relationships}
                                                                    if name == "Opportunity" else {})}
                                     for name, f in objects.items()])


def paths(problems: list[Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for problem in problems:
        found[problem.path] = found.get(problem.path, "") + problem.message + " | "
    return found


def test_the_default_mapping_is_valid_offline_and_against_the_org() -> None:
    document = default_document()
    assert validate(document) == []
    assert validate(document, org()) == []
    assert sobjects_of(document) == ["Account", "Contact", "Microsoft_Solution__c", "Opportunity",
                                     "OpportunityContactRole"]


def test_every_mistake_is_listed_by_path_at_once() -> None:
    document = default_document()
    opp_fields = document["opportunity"]["fields"]
    opp_fields[1]["direction"] = "sideways"                       # schema: bad enum
    opp_fields[2]["transform"] = "rot13"                          # unknown transform
    opp_fields[3]["referral"] = "details.closingDate"             # unknown referral path
    opp_fields[4]["key"] = "name"                                 # duplicate key
    opp_fields[5]["table"] = "helpTable"                          # unknown table
    opp_fields[8]["direction"] = "both"                           # a link cannot go back
    document["contacts"]["fields"][0]["referral"] = "givenName"   # unknown path inside the list item
    document["solutions"]["referralList"] = "details.notes"       # not a list
    del document["stages"]["toSalesforce"]["Closed/Expired"]      # stage table gap
    document["stages"]["toSalesforce"]["Active/Accepted"] = "Closed Won"     # phase mismatch
    document["stages"]["toSalesforce"]["New/Pending"] = "Pending Review"     # does not read back
    document["stages"]["notYetAccepted"] = "Qualification"        # not an open stage
    document["stages"]["onHold"] = ["Closed Lost"]                # both synced and on hold
    document["create"]["partnerCenter"]["defaults"]["details.value"] = 1     # unknown default path
    document["create"]["partnerCenter"]["required"][0]["path"] = "title"     # unknown required path
    document["tables"]["assistanceRequestCode"]["values"]["GeneralOrOther"] = "Unknown"  # ambiguous reverse
    document["unexpected"] = True                                 # schema: unknown section

    with pytest.raises(MappingError) as caught:
        Mapping.from_document(document, source="bad.json")
    found = paths(caught.value.problems)
    expected = {
        "$.opportunity.fields[1].direction": "'sideways' is not one of",
        "$.opportunity.fields[2].transform": "unknown transform 'rot13'",
        "$.opportunity.fields[3].referral": "unknown referral path details.closingDate",
        "$.opportunity.fields[4].key": "duplicate key 'name' (also at $.opportunity.fields[0].key)",
        "$.opportunity.fields[5].table": "unknown table 'helpTable'",
        "$.opportunity.fields[8].direction": "a link is built from the referral",
        "$.contacts.fields[0].referral": "unknown referral path customerProfile.team[].givenName",
        "$.solutions.referralList": "'details.notes' is not a list in the referral",
        "$.stages.toSalesforce": "no stage for the referral status Closed/Expired",
        "$.stages.toSalesforce['Active/Accepted']": "Active/Accepted is accepted, but the stage 'Closed Won' is won",
        "$.stages.toSalesforce['New/Pending']": "'Pending Review' is not in stages.toPartnerCenter",
        "$.stages.notYetAccepted": "must be an \"open\" stage",
        "$.stages.onHold[0]": "a stage is synced or on hold, not both",
        "$.stages.toSalesforce['Closed/Lost']": "is on hold",
        "$.create.partnerCenter.defaults['details.value']": "unknown referral path details.value",
        "$.create.partnerCenter.required[0].path": "unknown referral path title",
        "$.tables.assistanceRequestCode.values.GeneralOrOther": "reading it back is ambiguous",
        "$": "('unexpected' was unexpected)",
    }
    for path, message in expected.items():
        assert path in found, f"{path} not reported; got {sorted(found)}"
        assert message in found[path], f"{path}: {found[path]}"
    text = str(caught.value)
    assert text.startswith("mapping bad.json has") and all(path in text for path in expected)


def test_org_describe_mistakes_are_listed_by_path() -> None:
    document = default_document()
    document["opportunity"]["fields"][1]["salesforce"] = "amount"          # wrong case
    document["opportunity"]["fields"][4]["salesforce"] = "Notes__c"        # does not exist
    document["account"]["sobject"] = "Company"                            # no such object
    document["stages"]["toPartnerCenter"]["Legacy Stage"] = "accepted"    # not a stage of the org
    del document["stages"]["toPartnerCenter"]["Value Proposition"]        # an org stage without a phase
    document["tables"]["assistanceRequestCode"]["values"]["Unknown"] = "Nothing"  # not a picklist value
    document["contacts"]["contactRole"] = "Customer Champion"             # not a Role value
    document["create"]["salesforce"]["defaults"]["Co_Sell__c"] = True     # unknown default field
    found = paths(validate(document, org()))
    expected = {
        "$.opportunity.fields[1].salesforce": "unknown Salesforce field Opportunity.amount: Salesforce spells it Amount",
        "$.opportunity.fields[4].salesforce": "unknown Salesforce field Opportunity.Notes__c",
        "$.account.sobject": "unknown Salesforce object Company",
        "$.stages.toPartnerCenter['Legacy Stage']": "'Legacy Stage' is not a Opportunity.StageName value",
        "$.stages.toPartnerCenter": "the org's stage 'Value Proposition' has no phase",
        "$.opportunity.fields[5].table": "'Nothing' is not a value of the picklist Opportunity.How_can_Microsoft_help__c",
        "$.contacts.contactRole": "'Customer Champion' is not a value of OpportunityContactRole.Role",
        "$.create.salesforce.defaults.Co_Sell__c": "unknown Salesforce field Opportunity.Co_Sell__c",
    }
    for path, message in expected.items():
        assert message in found.get(path, ""), f"{path}: {found.get(path)}; all: {sorted(found)}"
    assert validate(document) == []  # each of these needs the org to be seen


def test_missing_sections_and_relationship_are_schema_problems() -> None:
    document = default_document()
    del document["stages"]
    del document["solutions"]["relationship"]
    found = paths(validate(document))
    assert "'stages' is a required property" in found["$"]
    assert "'relationship' is a required property" in found["$.solutions"]
    with_org = default_document()
    with_org["solutions"]["relationship"] = "Solutions__r"
    assert "has no child relationship Solutions__r" in paths(validate(with_org, org()))["$.solutions.relationship"]


def test_a_file_that_is_not_json_is_refused_with_line_and_column(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "version": 1,\n  "opportunity": \n}\n')
    with pytest.raises(MappingError, match="not valid JSON: .* at line 4 column 1"):
        Mapping.load(broken)
    with pytest.raises(MappingError, match="file not found"):
        Mapping.load(tmp_path / "missing.json")


def test_cli_validate_mapping_prints_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = default_document()
    document["opportunity"]["fields"][2]["transform"] = "rot13"
    del document["stages"]["toSalesforce"]["New/Pending"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    assert main(["--settings", str(tmp_path / "none.json"), "validate-mapping", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: 2 problem(s)" in err
    assert "$.opportunity.fields[2].transform: unknown transform 'rot13'" in err
    assert "$.stages.toSalesforce: no stage for the referral status New/Pending" in err

    assert main(["--settings", str(tmp_path / "none.json"), "validate-mapping", str(MAPPING_FILE)]) == 0
    assert "OK, 11 merge fields" in capsys.readouterr().out


def test_cli_checks_against_the_org_with_describe_from_org(sf_sim: SalesforceSim, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in sf_sim.credentials.settings_env().items():
        monkeypatch.setenv(name, value)
    settings = ["--settings", str(tmp_path / "none.json")]
    assert main([*settings, "validate-mapping", str(MAPPING_FILE), "--describe-from-org"]) == 0
    assert "checked against the org's describe" in capsys.readouterr().out
    document = default_document()
    document["opportunity"]["fields"][1]["salesforce"] = "Amount__c"
    document["stages"]["toPartnerCenter"]["Closed Maybe"] = "won"
    bad = tmp_path / "org.json"
    bad.write_text(json.dumps(document))
    assert main([*settings, "validate-mapping", str(bad)]) == 0  # offline both look fine
    assert main([*settings, "validate-mapping", str(bad), "--describe-from-org"]) == 1
    err = capsys.readouterr().err
    assert "$.opportunity.fields[1].salesforce: unknown Salesforce field Opportunity.Amount__c" in err
    assert "$.stages.toPartnerCenter['Closed Maybe']: 'Closed Maybe' is not a Opportunity.StageName value" in err
