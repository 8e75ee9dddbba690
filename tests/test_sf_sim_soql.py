"""The simulator's SOQL: the parser, the evaluator's semantics, and the errors Salesforce would give.

Run in-process against an `Org` (no HTTP): the REST tests cover the wire; these cover the language.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sandbox.sf_org import Org
from sandbox.sf_schema import build_schema
from sandbox.sf_values import format_datetime
from sandbox.soql import SoqlError, bind, parse, run

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


class StepClock:
    """Each call is one second later: records get distinct, known SystemModstamps."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


def _org(*, multi_currency: bool = False) -> Org:
    org = Org(build_schema(multi_currency=multi_currency), clock=StepClock())
    org.add_user("integration@cosell.sandbox", first_name="Co-sell", last_name="Integration", password="p",
                 security_token="t", permission_set="Partner_Center_Co_sell_Integration")
    org.add_user("seller@cosell.sandbox", first_name="Sam", last_name="Seller", password="p", security_token="t")
    return org


def _insert(org: Org, sobject: str, **fields: Any) -> str:
    obj = org.schema.objects[sobject]
    user = org.users["seller@cosell.sandbox"]
    return org.insert(obj, org.parse_fields(obj, fields, org.access(user)), user)


@pytest.fixture(scope="module")
def org() -> Org:
    """Accounts, opportunities (one without account or amount), solutions, and a deleted opportunity."""
    org = _org()
    contoso = _insert(org, "Account", Name="Contoso", BillingCountry="US")
    fabrikam = _insert(org, "Account", Name="Fabrikam", BillingCountry="DE")
    obrien = _insert(org, "Account", Name="O'Brien & Co", BillingCountry="IE")
    rows = [
        ("Contoso cloud", contoso, "Prospecting", 5000, "2026-06-30", "REF-1", True),
        ("Contoso data", contoso, "Qualification", 120000.5, "2026-04-15", None, True),
        ("Fabrikam 100% renewal", fabrikam, "Closed Won", 800, "2026-01-31", "REF-2", False),
        ("Fabrikam_upgrade", fabrikam, "Closed Lost", None, "2026-02-28", None, False),
        ("O'Brien pilot", obrien, "Negotiation/Review", 42, "2026-05-01", "ref-3", False),
        ("Orphan", None, "Prospecting", 7, "2026-07-01", None, False),
    ]
    for name, account, stage, amount, close, referral, sync in rows:
        fields: dict[str, Any] = {"Name": name, "StageName": stage, "CloseDate": close,
                                  "Sync_with_Partner_Center__c": sync}
        if account:
            fields["AccountId"] = account
        if amount is not None:
            fields["Amount"] = amount
        if referral:
            fields["Referral_Identifier__c"] = referral
        _insert(org, "Opportunity", **fields)
    first = _ids(org, "SELECT Id FROM Opportunity WHERE Name = 'Contoso cloud'")[0]
    _insert(org, "Microsoft_Solution__c", Name="Azure OpenAI", Solution_Id__c="sol-2", Opportunity__c=first)
    _insert(org, "Microsoft_Solution__c", Name="Fabric", Solution_Id__c="sol-1", Opportunity__c=first)
    gone = _insert(org, "Opportunity", Name="Deleted deal", StageName="Prospecting", CloseDate="2026-09-01")
    seller = org.users["seller@cosell.sandbox"]
    org.delete(org.schema.objects["Opportunity"], gone, seller)
    return org


def q(org: Org, soql: str, *, include_deleted: bool = False, user: str = "integration@cosell.sandbox") -> list[dict]:
    plan = bind(parse(soql), org.schema, org.access(org.users[user]))
    return run(plan, org, include_deleted=include_deleted, version="v64.0").records


def _names(org: Org, soql: str, **options: Any) -> list[str]:
    return [r["Name"] for r in q(org, soql, **options)]


def _ids(org: Org, soql: str) -> list[str]:
    return [r["Id"] for r in q(org, soql)]


def _error(org: Org, soql: str) -> SoqlError:
    with pytest.raises(SoqlError) as caught:
        q(org, soql)
    return caught.value


def test_select_shapes_records_like_the_rest_api(org: Org) -> None:
    records = q(org, "SELECT Id, Name, Amount, CloseDate, SystemModstamp FROM Opportunity WHERE Name = 'Contoso cloud'")
    assert len(records) == 1
    record = records[0]
    assert list(record) == ["attributes", "Id", "Name", "Amount", "CloseDate", "SystemModstamp"]
    assert record["attributes"] == {"type": "Opportunity", "url": f"/services/data/v64.0/sobjects/Opportunity/{record['Id']}"}
    assert record["Amount"] == 5000.0 and record["CloseDate"] == "2026-06-30"
    assert record["SystemModstamp"].endswith(".000+0000")


def test_text_equality_is_case_insensitive_and_ids_are_exact(org: Org) -> None:
    assert _names(org, "select name from opportunity where NAME = 'CONTOSO CLOUD'") == ["Contoso cloud"]
    assert _names(org, "SELECT Name FROM Opportunity WHERE Referral_Identifier__c = 'REF-3'") == ["O'Brien pilot"]
    an_id = _ids(org, "SELECT Id FROM Opportunity WHERE Name = 'Orphan'")[0]
    assert _names(org, f"SELECT Name FROM Opportunity WHERE Id = '{an_id[:15]}'") == ["Orphan"]
    assert _names(org, f"SELECT Name FROM Opportunity WHERE Id = '{an_id}'") == ["Orphan"]
    assert _error(org, f"SELECT Name FROM Opportunity WHERE Id = '{an_id.lower()}'").code == "INVALID_QUERY_FILTER_OPERATOR"


def test_and_or_not_and_parentheses(org: Org) -> None:
    names = _names(org, "SELECT Name FROM Opportunity WHERE (Sync_with_Partner_Center__c = true OR "
                        "Referral_Identifier__c != null) AND NOT StageName = 'Closed Won' ORDER BY Name")
    assert names == ["Contoso cloud", "Contoso data", "O'Brien pilot"]
    names = _names(org, "SELECT Name FROM Opportunity WHERE NOT (Amount > 100 OR Amount = null) ORDER BY Name")
    assert names == ["O'Brien pilot", "Orphan"]


def test_mixing_and_with_or_needs_parentheses(org: Org) -> None:
    error = _error(org, "SELECT Id FROM Opportunity WHERE Amount > 1 AND Amount < 10 OR Name = 'x'")
    assert error.code == "MALFORMED_QUERY"
    assert "OR" in error.message


def test_polling_cursor_query_returns_rows_after_the_cursor_in_order(org: Org) -> None:
    rows = q(org, "SELECT Id, SystemModstamp FROM Opportunity ORDER BY SystemModstamp, Id")
    stamps = [(r["SystemModstamp"], r["Id"]) for r in rows]
    assert stamps == sorted(stamps)
    cursor_stamp, cursor_id = rows[2]["SystemModstamp"], rows[2]["Id"]
    literal = cursor_stamp.replace(".000+0000", "Z")
    after = q(org, f"SELECT Id FROM Opportunity WHERE SystemModstamp > {literal} OR "
                   f"(SystemModstamp = {literal} AND Id > '{cursor_id}') ORDER BY SystemModstamp, Id")
    assert [r["Id"] for r in after] == [r["Id"] for r in rows[3:]]


@pytest.mark.parametrize("literal", ["{day}T{time}Z", "{day}T{time}.000Z", "{day}T{shifted}+02:00"])
def test_datetime_literal_forms_compare_as_utc(org: Org, literal: str) -> None:
    first = q(org, "SELECT Id, SystemModstamp FROM Opportunity ORDER BY SystemModstamp LIMIT 1")[0]
    moment = dt.datetime.strptime(first["SystemModstamp"], "%Y-%m-%dT%H:%M:%S.000+0000")
    text = literal.format(day=moment.date().isoformat(), time=moment.strftime("%H:%M:%S"),
                          shifted=(moment + dt.timedelta(hours=2)).strftime("%H:%M:%S"))
    assert [r["Id"] for r in q(org, f"SELECT Id FROM Opportunity WHERE SystemModstamp = {text}")] == [first["Id"]]


def test_date_literals_and_typed_comparisons(org: Org) -> None:
    assert _names(org, "SELECT Name FROM Opportunity WHERE CloseDate < 2026-03-01 ORDER BY CloseDate") == [
        "Fabrikam 100% renewal", "Fabrikam_upgrade"]
    assert _names(org, "SELECT Name FROM Opportunity WHERE CloseDate >= 2026-06-30 AND Amount <= 5000 "
                       "ORDER BY Amount") == ["Orphan", "Contoso cloud"]
    quoted = _error(org, "SELECT Id FROM Opportunity WHERE CloseDate = '2026-06-30'")
    assert quoted.code == "INVALID_QUERY_FILTER_OPERATOR" and "should not be enclosed in quotes" in quoted.message
    assert _error(org, "SELECT Id FROM Opportunity WHERE CloseDate = 2026-06-30T00:00:00Z").code == \
        "INVALID_QUERY_FILTER_OPERATOR"
    assert _error(org, "SELECT Id FROM Opportunity WHERE Amount = '5'").code == "INVALID_QUERY_FILTER_OPERATOR"
    assert _error(org, "SELECT Id FROM Opportunity WHERE IsClosed = 'true'").code == "INVALID_QUERY_FILTER_OPERATOR"


def test_in_and_not_in(org: Org) -> None:
    assert _names(org, "SELECT Name FROM Opportunity WHERE StageName IN ('Closed Won', 'closed lost') ORDER BY Name") \
        == ["Fabrikam 100% renewal", "Fabrikam_upgrade"]
    ids = _ids(org, "SELECT Id FROM Opportunity WHERE Amount > 1000 ORDER BY Amount")
    assert _ids(org, f"SELECT Id FROM Opportunity WHERE Id IN ('{ids[0][:15]}', '{ids[1]}') ORDER BY Amount") == ids
    remaining = _names(org, "SELECT Name FROM Opportunity WHERE StageName NOT IN ('Prospecting', 'Closed Won', "
                            "'Closed Lost') ORDER BY Name")
    assert remaining == ["Contoso data", "O'Brien pilot"]


def test_like_wildcards_and_escapes(org: Org) -> None:
    assert _names(org, "SELECT Name FROM Opportunity WHERE Name LIKE 'contoso%' ORDER BY Name") == [
        "Contoso cloud", "Contoso data"]
    assert _names(org, "SELECT Name FROM Opportunity WHERE Name LIKE 'Fabrikam_upgrade'") == ["Fabrikam_upgrade"]
    assert _names(org, "SELECT Name FROM Opportunity WHERE Name LIKE '%\\%%'") == ["Fabrikam 100% renewal"]
    assert _names(org, "SELECT Name FROM Opportunity WHERE Name LIKE '%\\_%'") == ["Fabrikam_upgrade"]
    assert _names(org, "SELECT Name FROM Opportunity WHERE Name LIKE 'O\\'Brien%'") == ["O'Brien pilot"]


def test_string_escapes(org: Org) -> None:
    assert _names(org, "SELECT Name FROM Account WHERE Name = 'O\\'Brien & Co'") == ["O'Brien & Co"]
    assert _error(org, "SELECT Name FROM Account WHERE Name = 'bad \\q escape'").code == "MALFORMED_QUERY"


def test_null_semantics(org: Org) -> None:
    assert _names(org, "SELECT Name FROM Opportunity WHERE Amount = null") == ["Fabrikam_upgrade"]
    assert len(q(org, "SELECT Id FROM Opportunity WHERE Amount != null")) == 5
    # A null field is never < or > anything, but it is != a value.
    assert "Fabrikam_upgrade" not in _names(org, "SELECT Name FROM Opportunity WHERE Amount < 1000000")
    assert "Orphan" in _names(org, "SELECT Name FROM Opportunity WHERE AccountId != null OR Account.Name != 'x'")


def test_order_by_several_fields_with_nulls_placement(org: Org) -> None:
    default = _names(org, "SELECT Name FROM Opportunity ORDER BY Amount")
    assert default[0] == "Fabrikam_upgrade"  # ASC puts nulls first
    desc = _names(org, "SELECT Name FROM Opportunity ORDER BY Amount DESC")
    assert desc[0] == "Contoso data" and desc[-1] == "Fabrikam_upgrade"  # DESC puts nulls last
    assert _names(org, "SELECT Name FROM Opportunity ORDER BY Amount ASC NULLS LAST")[-1] == "Fabrikam_upgrade"
    assert _names(org, "SELECT Name FROM Opportunity ORDER BY Amount DESC NULLS FIRST")[0] == "Fabrikam_upgrade"
    grouped = _names(org, "SELECT Name FROM Opportunity ORDER BY Account.Name DESC NULLS LAST, Name ASC")
    assert grouped == ["O'Brien pilot", "Fabrikam 100% renewal", "Fabrikam_upgrade", "Contoso cloud",
                       "Contoso data", "Orphan"]


def test_limit_and_offset(org: Org) -> None:
    everything = _names(org, "SELECT Name FROM Opportunity ORDER BY Name")
    assert _names(org, "SELECT Name FROM Opportunity ORDER BY Name LIMIT 2") == everything[:2]
    assert _names(org, "SELECT Name FROM Opportunity ORDER BY Name LIMIT 2 OFFSET 3") == everything[3:5]
    assert _error(org, "SELECT Name FROM Opportunity OFFSET 2001").code == "NUMBER_OUTSIDE_VALID_RANGE"


def test_relationship_fields_in_select_where_and_null_parents(org: Org) -> None:
    records = q(org, "SELECT Name, Account.Name, Account.BillingCountry, Owner.Name FROM Opportunity "
                     "WHERE Account.BillingCountry IN ('DE', 'US') OR Account.Name = null ORDER BY Name")
    assert [r["Name"] for r in records] == ["Contoso cloud", "Contoso data", "Fabrikam 100% renewal",
                                            "Fabrikam_upgrade", "Orphan"]
    contoso = records[0]["Account"]
    assert contoso["Name"] == "Contoso" and contoso["BillingCountry"] == "US"
    assert contoso["attributes"]["type"] == "Account"
    assert records[-1]["Account"] is None
    assert records[0]["Owner"]["Name"] == "Sam Seller"
    solution = q(org, "SELECT Opportunity__r.Account.Name FROM Microsoft_Solution__c LIMIT 1")[0]
    assert solution["Opportunity__r"]["Account"]["Name"] == "Contoso"


def test_parent_to_child_subquery(org: Org) -> None:
    records = q(org, "SELECT Name, (SELECT Solution_Id__c, Name FROM Microsoft_Solutions__r ORDER BY Solution_Id__c) "
                     "FROM Opportunity WHERE Name LIKE 'Contoso%' ORDER BY Name")
    with_rows, without = records
    assert with_rows["Microsoft_Solutions__r"]["totalSize"] == 2
    assert [r["Solution_Id__c"] for r in with_rows["Microsoft_Solutions__r"]["records"]] == ["sol-1", "sol-2"]
    assert without["Microsoft_Solutions__r"] is None
    assert _error(org, "SELECT Id, (SELECT Id FROM Nothing__r) FROM Opportunity").code == "INVALID_TYPE"


def test_count(org: Org) -> None:
    plan = bind(parse("SELECT COUNT() FROM Opportunity WHERE IsClosed = true"), org.schema,
                org.access(org.users["integration@cosell.sandbox"]))
    result = run(plan, org, include_deleted=False, version="v64.0")
    assert result.total == 2 and result.records == []


def test_query_all_includes_deleted_rows(org: Org) -> None:
    assert _names(org, "SELECT Name FROM Opportunity WHERE Name = 'Deleted deal'") == []
    rows = q(org, "SELECT Name, IsDeleted FROM Opportunity WHERE Name = 'Deleted deal'", include_deleted=True)
    assert rows == [{"attributes": rows[0]["attributes"], "Name": "Deleted deal", "IsDeleted": True}]


def test_formula_field_is_queryable(org: Org) -> None:
    assert q(org, "SELECT Partner_Center_Synced__c FROM Opportunity WHERE Name = 'Orphan'")[0][
        "Partner_Center_Synced__c"] is None


@pytest.mark.parametrize("soql", [
    "",
    "SELECT FROM Opportunity",
    "SELECT Id Opportunity",
    "SELECT Id, FROM Opportunity",
    "SELECT Id FROM Opportunity WHERE",
    "SELECT Id FROM Opportunity WHERE Name",
    "SELECT Id FROM Opportunity WHERE Name = ",
    "SELECT Id FROM Opportunity WHERE Name = 'unterminated",
    "SELECT Id FROM Opportunity WHERE Name = :bindVariable",
    "SELECT Id FROM Opportunity WHERE (Name = 'a'",
    "SELECT Id FROM Opportunity WHERE Name IN ()",
    "SELECT Id FROM Opportunity GROUP BY Name",
    "SELECT Id FROM Opportunity ORDER BY",
    "SELECT Id FROM Opportunity LIMIT ten",
    "SELECT Id FROM Opportunity LIMIT 5 extra",
    "SELECT COUNT(Id) FROM Opportunity",
    "SELECT Id FROM Opportunity WHERE CloseDate > 2026-13-45",
    "SELECT Id FROM Opportunity WHERE SystemModstamp > 2026-01-01T00:00:00",
    "SELECT Id FROM Opportunity WHERE Amount > null",
    "SELECT Id FROM Opportunity FOR UPDATE",
    "SELECT Id, (SELECT Id, (SELECT Id FROM Notes) FROM OpportunityContactRoles) FROM Opportunity",
    "DELETE FROM Opportunity",
])
def test_malformed_queries_are_refused(org: Org, soql: str) -> None:
    assert _error(org, soql).code == "MALFORMED_QUERY"


@pytest.mark.parametrize("soql, code", [
    ("SELECT Nope__c FROM Opportunity", "INVALID_FIELD"),
    ("SELECT Id FROM Opportunity WHERE Nope = 1", "INVALID_FIELD"),
    ("SELECT Nope.Name FROM Opportunity", "INVALID_FIELD"),
    ("SELECT Id FROM Opportunity ORDER BY Nope", "INVALID_FIELD"),
    ("SELECT Id FROM Opportunity WHERE Audit__c = 'x'", "INVALID_FIELD"),
    ("SELECT Id FROM Opportunity ORDER BY Description", "INVALID_FIELD"),
    ("SELECT Id FROM Nothing__c", "INVALID_TYPE"),
    ("SELECT CurrencyIsoCode FROM Opportunity", "INVALID_FIELD"),
    ("SELECT Id, Name, name FROM Opportunity", "MALFORMED_QUERY"),
    ("SELECT Id FROM Opportunity WHERE IsClosed > true", "INVALID_QUERY_FILTER_OPERATOR"),
    ("SELECT Id FROM Opportunity WHERE AccountId LIKE '001%'", "INVALID_QUERY_FILTER_OPERATOR"),
])
def test_schema_errors(org: Org, soql: str, code: str) -> None:
    assert _error(org, soql).code == code


def test_currency_iso_code_exists_only_in_multi_currency_orgs() -> None:
    org = _org(multi_currency=True)
    _insert(org, "Opportunity", Name="Euro deal", StageName="Prospecting", CloseDate="2026-01-01",
            CurrencyIsoCode="EUR")
    _insert(org, "Opportunity", Name="Default", StageName="Prospecting", CloseDate="2026-01-01")
    rows = q(org, "SELECT Name, CurrencyIsoCode FROM Opportunity WHERE CurrencyIsoCode IN ('EUR', 'USD') ORDER BY Name")
    assert [(r["Name"], r["CurrencyIsoCode"]) for r in rows] == [("Default", "USD"), ("Euro deal", "EUR")]


def test_datetimes_are_formatted_like_salesforce() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert format_datetime(moment) == "2026-01-02T02:04:05.678+0000"
