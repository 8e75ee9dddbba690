"""The doctor's verdicts, from facts alone: every ✓ and every ✗ with the sentence a partner acts on.

No network, no storage: `shared.doctor.checks` is plain functions. The probes against the simulators are
in tests/test_doctor_sim.py.
"""

from __future__ import annotations

import base64
import json

import pytest

from shared.doctor import checks
from shared.mapping import Mapping
from shared.models.webhooks import WebhookRegistration
from shared.salesforce.describe import OrgSchema
from shared.settings import APP_ROOT

OWN = "https://cosell.example/api/partnercenter/events?code=own-function-key"


def jwt(claims: dict) -> str:
    def segment(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'RS256', 'typ': 'JWT'})}.{segment(claims)}.c2lnbmF0dXJl"


# Partner Center ---------------------------------------------------------------------------------------

def test_token_claims_are_read_from_a_jwt_without_verifying_it() -> None:
    assert checks.token_claims(jwt({"amr": ["pwd", "mfa"], "aud": "x"})) == {"amr": ["pwd", "mfa"], "aud": "x"}


@pytest.mark.parametrize("token", ["opaque-token", "a.b", "a.%%%.c", "a." + base64.urlsafe_b64encode(b"[1]").decode() + ".c"])
def test_a_token_that_is_not_a_readable_jwt_has_no_claims(token: str) -> None:
    assert checks.token_claims(token) is None


def test_mfa_passes_when_amr_holds_mfa() -> None:
    verdict = checks.judge_mfa({"amr": ["pwd", "mfa"]})
    assert verdict.ok and "amr: mfa" in verdict.detail


@pytest.mark.parametrize("claims", [{"amr": ["pwd"]}, {"amr": "pwd"}, {}])
def test_mfa_fails_without_mfa_and_says_to_sign_in_again_with_mfa(claims: dict) -> None:
    verdict = checks.judge_mfa(claims)
    assert not verdict.ok
    assert "900421" in verdict.detail and "with MFA" in verdict.detail and "PARTNER_CENTER_REFRESH_TOKEN" in verdict.detail


def test_mfa_that_cannot_be_read_defers_to_the_referrals_read() -> None:
    verdict = checks.judge_mfa(None)
    assert verdict.ok and "referrals read" in verdict.detail


def test_token_and_referrals_carry_the_connectors_error_sentence() -> None:
    assert not checks.judge_pc_token("sign in again as the Referrals admin").ok
    assert checks.judge_pc_token(None).ok
    failed = checks.judge_referrals(None, "Partner Center refused the token (error 900421)")
    assert not failed.ok and "900421" in failed.detail
    assert checks.judge_referrals(0, None).ok and "no referral yet" in checks.judge_referrals(0, None).detail


def registration(url: str | None, events: list[str] | None = None) -> WebhookRegistration:
    return WebhookRegistration(WebhookUrl=url, WebhookEvents=events if events is not None else
                               ["referral-created", "referral-updated", "test-created"])


def test_webhook_pointing_here_passes_even_with_another_function_key_and_never_shows_a_key() -> None:
    verdict = checks.judge_webhook(registration("https://cosell.example/api/partnercenter/events?code=older-key"), OWN)
    assert verdict.ok
    assert "older-key" not in verdict.line() and "own-function-key" not in verdict.line()
    assert "related-referral-created" in verdict.detail  # says which optional events are not subscribed


def test_no_registration_says_to_register() -> None:
    verdict = checks.judge_webhook(None, OWN)
    assert not verdict.ok and "python -m shared register-webhook" in verdict.detail


def test_a_registration_elsewhere_names_it_masked_and_says_overwrite() -> None:
    verdict = checks.judge_webhook(registration("https://other-tool.example/hook?code=their-key"), OWN)
    assert not verdict.ok
    assert "https://other-tool.example/hook?code=***" in verdict.detail and "--overwrite" in verdict.detail
    assert "their-key" not in verdict.line()


def test_a_registration_without_the_referral_events_says_which() -> None:
    verdict = checks.judge_webhook(registration(OWN, ["referral-created", "test-created"]), OWN)
    assert not verdict.ok and "referral-updated" in verdict.detail


def test_an_unknown_own_url_asks_for_cosell_public_url() -> None:
    verdict = checks.judge_webhook(registration(OWN), None, own_url_error="setting COSELL_PUBLIC_URL is not set")
    assert not verdict.ok and "set COSELL_PUBLIC_URL" in verdict.detail


def test_a_registration_read_that_failed_is_a_cross_with_its_reason() -> None:
    verdict = checks.judge_webhook(None, OWN, error="the app-only token request was refused")
    assert not verdict.ok and verdict.detail == "the app-only token request was refused"


# Salesforce -------------------------------------------------------------------------------------------

def test_login_names_the_grant_and_warns_about_the_password_flow() -> None:
    assert checks.judge_sf_login("jwt_bearer", "https://acme.my.salesforce.com", None).ok
    password = checks.judge_sf_login("password", "https://acme.my.salesforce.com", None)
    assert password.ok and "retiring" in password.detail and "SALESFORCE_PRIVATE_KEY" in password.detail
    refused = checks.judge_sf_login(None, None, "Salesforce refused the jwt_bearer login for x: invalid_grant")
    assert not refused.ok and "invalid_grant" in refused.detail


def test_mapping_problems_are_counted_and_the_first_ones_shown() -> None:
    problems = [f"$.opportunity.fields[{i}].salesforce: unknown Salesforce field Opportunity.X{i}__c" for i in range(7)]
    verdict = checks.judge_mapping(problems)
    assert not verdict.ok
    assert verdict.detail.startswith("7 problem(s)") and "X4__c" in verdict.detail and "X5__c" not in verdict.detail
    assert "and 2 more" in verdict.detail and "validate-mapping --describe-from-org" in verdict.detail
    assert checks.judge_mapping([]).ok


def describe(name: str, fields: list[dict]) -> dict:
    return {"name": name, "fields": fields, "childRelationships": []}


def field(name: str, *, createable: bool = True, updateable: bool = True) -> dict:
    return {"name": name, "type": "string", "createable": createable, "updateable": updateable}


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return Mapping.load(APP_ROOT / "mappings" / "salesforce.json")


def test_write_needs_follow_the_mappings_directions(mapping: Mapping) -> None:
    needs = {(n.sobject, n.field, n.access) for n in checks.write_needs(mapping)}
    # flows to Salesforce on update: must be updateable; copied on create: createable
    assert ("Opportunity", "Amount", "updateable") in needs and ("Opportunity", "Amount", "createable") in needs
    # the connector's own fields: written on create (upsert) and on every sync
    for own in ("Referral_Identifier__c", "Audit__c", "Partner_Center_Sync_Status__c"):
        assert {("Opportunity", own, "createable"), ("Opportunity", own, "updateable")} <= needs
    # Name flows only to Partner Center on update, but is copied both ways on create
    assert ("Opportunity", "Name", "createable") in needs and ("Opportunity", "Name", "updateable") not in needs
    # How can Microsoft help: to Partner Center on update, both ways on create
    assert ("Opportunity", "How_can_Microsoft_help__c", "updateable") not in needs
    assert ("Opportunity", "StageName", "updateable") in needs and ("Opportunity", "Decline_Reason__c", "updateable") in needs
    # accounts and contacts are only ever created; contact roles too
    assert ("Account", "BillingCountry", "createable") in needs and ("Account", "BillingCountry", "updateable") not in needs
    assert ("OpportunityContactRole", "Role", "createable") in needs
    # solution rows are upserted on their key
    assert {("Microsoft_Solution__c", "Solution_Key__c", "createable"),
            ("Microsoft_Solution__c", "Solution_Key__c", "updateable"),
            ("Microsoft_Solution__c", "Opportunity__c", "createable")} <= needs


def everything_writable(mapping: Mapping, **overrides: dict) -> OrgSchema:
    """A describe granting every field the mapping writes, but `overrides` (`Object.Field` → field options)."""
    fields: dict[str, dict[str, dict]] = {}
    for need in checks.write_needs(mapping):
        fields.setdefault(need.sobject, {})[need.field] = field(need.field)
    for name, options in overrides.items():
        sobject, _, field_name = name.partition(".")
        if options is None:
            del fields[sobject][field_name]
        else:
            fields[sobject][field_name] = field(field_name, **options)
    return OrgSchema.from_describes([describe(s, list(f.values())) for s, f in fields.items()])


def test_missing_access_names_each_field_and_what_it_lacks(mapping: Mapping) -> None:
    assert checks.missing_access(checks.write_needs(mapping), everything_writable(mapping)) == []
    schema = everything_writable(mapping, **{"Opportunity.Amount": {"updateable": False},
                                             "Opportunity.Audit__c": {"createable": False},
                                             "Microsoft_Solution__c.Solution_Key__c": None})
    missing = checks.missing_access(checks.write_needs(mapping), schema)
    assert missing == ["Opportunity.Amount (not updateable)", "Opportunity.Audit__c (not createable)",
                       "Microsoft_Solution__c.Solution_Key__c (not visible)"]
    verdict = checks.judge_writable(missing)
    assert not verdict.ok and "Opportunity.Amount (not updateable)" in verdict.detail
    assert checks.INTEGRATION_PERMISSION_SET in verdict.detail
    assert checks.judge_writable([]).ok


def test_an_optional_field_the_org_lacks_is_no_need(mapping: Mapping) -> None:
    """CurrencyIsoCode is mapped with ifFieldExists: a single-currency org has no such field, and that is fine."""
    needs = checks.write_needs(mapping)
    assert any(n.field == "CurrencyIsoCode" and n.optional for n in needs)
    assert checks.missing_access(needs, everything_writable(mapping, **{"Opportunity.CurrencyIsoCode": None})) == []


def test_permission_set_assigned_or_how_to_assign_it() -> None:
    assert checks.judge_permission_set(["X", checks.INTEGRATION_PERMISSION_SET], "int@acme").ok
    verdict = checks.judge_permission_set(["SomethingElse"], "int@acme", access_ok=True)
    assert not verdict.ok  # a readable assignment list is the proof either way
    assert f"sf org assign permset --name {checks.INTEGRATION_PERMISSION_SET} --on-behalf-of int@acme" in verdict.detail


def test_unreadable_assignments_fall_back_to_the_field_access_the_set_grants() -> None:
    seen = checks.judge_permission_set(None, "int@acme", access_ok=True)
    assert seen.ok and "View Setup and Configuration" in seen.detail
    blind = checks.judge_permission_set(None, "int@acme", access_ok=False)
    assert not blind.ok and "sf org assign permset" in blind.detail


def test_budget_below_the_share_passes_and_above_it_says_what_pauses() -> None:
    assert checks.judge_budget(100, 1000, 0.8).ok
    verdict = checks.judge_budget(850, 1000, 0.8)
    assert not verdict.ok and "850 of 1,000" in verdict.detail and "COSELL_SF_BUDGET_SHARE" in verdict.detail
    assert not checks.judge_budget(None, None, 0.8).ok
    assert not checks.judge_budget(None, None, 0.8, "REQUEST_LIMIT_EXCEEDED").ok


def test_org_id_compares_15_and_18_character_forms() -> None:
    assert checks.same_org("00DHs0000000001", "00DHs0000000001MAA")
    assert not checks.same_org("00DHs0000000002", "00DHs0000000001MAA")
    assert checks.judge_org_id("00DHs0000000001MAA", "00DHs0000000001MAA").ok
    unset = checks.judge_org_id(None, "00DHs0000000001MAA")
    assert not unset.ok and "set SALESFORCE_ORG_ID to 00DHs0000000001MAA" in unset.detail
    other = checks.judge_org_id("00DXX0000000009AAA", "00DHs0000000001MAA")
    assert not other.ok and "00DXX0000000009AAA" in other.detail and "00DHs0000000001MAA" in other.detail


def test_storage_and_the_exit_code() -> None:
    assert checks.judge_storage(None, None).ok
    verdict = checks.judge_storage("Table storage at x did not answer", None)
    assert not verdict.ok and "Table storage" in verdict.detail
    assert checks.exit_code([checks.judge_storage(None, None)]) == 0
    assert checks.exit_code([checks.judge_storage(None, None), verdict]) == 1


def test_a_skipped_check_is_a_cross_that_points_at_the_earlier_failure() -> None:
    verdict = checks.skipped("salesforce_mapping", "Mapping against the org", "no Salesforce login")
    assert not verdict.ok and verdict.line() == "✗ Mapping against the org: not checked: no Salesforce login (fix that first)"
