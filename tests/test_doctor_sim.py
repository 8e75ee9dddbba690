"""`python -m shared doctor` against the simulators: all ✓ when everything is right, and each fault a
partner can meet gives its own ✗ with the sentence that says what to do.

The faults are injected the way the world would produce them: through the simulators' `/_sandbox/` switches
(a revoked or MFA-less refresh token, a permission set taken away, the API budget spent), a webhook another
tool registered, an org whose metadata or stages differ from the mapping, wrong settings.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from sandbox.partner_center import PartnerCenterSim
from sandbox.salesforce import SalesforceSim
from sandbox.sf_model import DEFAULT_STAGES, Stage
from sandbox.sf_schema import DEFAULT_METADATA_DIR
from shared.cli import main
from shared.doctor import probes
from shared.doctor.checks import Verdict
from shared.settings import load_settings

PUBLIC_URL = "https://cosell-connector.example"


@dataclass
class World:
    pc: PartnerCenterSim
    sf: SalesforceSim
    env: dict[str, str]
    monkeypatch: pytest.MonkeyPatch

    def set(self, **values: str) -> None:
        for name, value in values.items():
            self.monkeypatch.setenv(name, value)

    def register_webhook(self, url: str) -> None:
        from shared.partner_center import WebhookRegistrationClient, registration

        client = WebhookRegistrationClient.from_settings(load_settings())
        registration.register(client, own_url=url, overwrite=True)

    def doctor(self) -> dict[str, Verdict]:
        verdicts = probes.run_all(load_settings())
        return {v.check: v for v in verdicts}


@pytest.fixture
def world_factory(pc_sim: PartnerCenterSim, sf_sim_factory: Callable[..., SalesforceSim], azurite: str,
                  monkeypatch: pytest.MonkeyPatch) -> Callable[..., World]:
    """Both simulators and Azurite, settings pointing at them, the webhook registered to this app's URL."""

    def build(**sf_options: object) -> World:
        sf = sf_sim_factory(**sf_options)
        env = {**pc_sim.settings_env(), **sf.credentials.settings_env(), "AzureWebJobsStorage": azurite,
               "COSELL_PUBLIC_URL": PUBLIC_URL, "SALESFORCE_ORG_ID": sf.org.org_id}
        world = World(pc_sim, sf, env, monkeypatch)
        world.set(**env)
        world.register_webhook(f"{PUBLIC_URL}/api/partnercenter/events")
        return world

    return build


def failed(report: dict[str, Verdict]) -> dict[str, str]:
    return {check: v.detail for check, v in report.items() if not v.ok}


def test_everything_right_is_all_ticks_and_the_cli_exits_0_without_printing_a_secret(
        world_factory: Callable[..., World], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    world = world_factory()
    assert main(["--settings", str(tmp_path / "none.json"), "doctor"]) == 0
    text = capsys.readouterr().out
    lines = text.strip().splitlines()
    assert all(line.startswith("✓ ") for line in lines[:-2]), text
    assert lines[-1] == "11 of 11 checks passed"
    assert main(["--settings", str(tmp_path / "none.json"), "doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [c["check"] for c in report["checks"]] == [
        "partner_center_token", "partner_center_mfa", "partner_center_referrals", "partner_center_webhook",
        "salesforce_login", "salesforce_mapping", "salesforce_writable", "salesforce_permission_set",
        "salesforce_api_budget", "salesforce_org_id", "storage"]
    secrets = [world.env[name] for name in ("PARTNER_CENTER_CLIENT_SECRET", "PARTNER_CENTER_REFRESH_TOKEN",
                                            "SALESFORCE_CLIENT_SECRET", "SALESFORCE_PASSWORD",
                                            "SALESFORCE_SECURITY_TOKEN")]
    secrets.append(world.env["SALESFORCE_PRIVATE_KEY"].splitlines()[1])
    for secret in secrets:
        assert secret not in text


def test_the_simulator_hides_setup_data_from_an_integration_user_as_salesforce_does(
        world_factory: Callable[..., World]) -> None:
    """/limits and PermissionSetAssignment need View Setup and Configuration (Salesforce's REST API guide, Limits;
    object reference, PermissionSetAssignment): the integration user is refused, an admin is answered."""
    from tests.fixtures.salesforce import sf_login

    world = world_factory()
    integration, admin = sf_login(world.sf), sf_login(world.sf, user="seller")
    headers = {"Authorization": f"Bearer {integration.session_id}"}
    refused = requests.get(f"{world.sf.url}/services/data/v64.0/limits", headers=headers, timeout=10)
    assert refused.status_code == 403 and refused.json()[0]["errorCode"] == "INSUFFICIENT_ACCESS"
    assert admin.restful("limits")["DailyApiRequests"]["Max"] == 100_000
    hidden = requests.get(f"{world.sf.url}/services/data/v64.0/query", headers=headers, timeout=10,
                          params={"q": "SELECT Id FROM PermissionSetAssignment"})
    assert hidden.status_code == 400 and hidden.json()[0]["errorCode"] == "INVALID_TYPE"
    rows = admin.query("SELECT Assignee.Username, PermissionSet.Name FROM PermissionSetAssignment")["records"]
    assert [(r["Assignee"]["Username"], r["PermissionSet"]["Name"]) for r in rows] == [
        ("integration@cosell.sandbox", "Partner_Center_Co_sell_Integration")]


def test_doctor_changes_nothing(world_factory: Callable[..., World]) -> None:
    from shared.partner_center.token import REFRESH_TOKEN_SECRET, TOKEN_STATUS
    from shared.salesforce.budget import BUDGET_DOC
    from shared.store import Store

    def pc_state() -> dict:
        state = requests.get(f"{world.pc.url}/_sandbox/state", timeout=10).json()
        state.pop("now", None)
        return state

    world = world_factory()
    store = Store.from_settings(load_settings())
    kept = (store.secrets.get(REFRESH_TOKEN_SECRET), store.status.get(TOKEN_STATUS), store.status.get(BUDGET_DOC))
    before = pc_state()
    api_before = world.sf.org.api.used
    records_before = requests.get(f"{world.sf.url}/_sandbox/state", timeout=10).json()["records"]
    world.doctor()
    assert (store.secrets.get(REFRESH_TOKEN_SECRET), store.status.get(TOKEN_STATUS), store.status.get(BUDGET_DOC)) == kept
    assert pc_state() == before
    assert requests.get(f"{world.sf.url}/_sandbox/state", timeout=10).json()["records"] == records_before
    assert world.sf.org.api.used - api_before <= 8  # describes, one query, limits: a handful of calls


def test_a_revoked_refresh_token(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    requests.post(f"{world.pc.url}/_sandbox/tokens/revoke", json={}, timeout=10).raise_for_status()
    problems = failed(world.doctor())
    assert set(problems) == {"partner_center_token", "partner_center_mfa", "partner_center_referrals"}
    assert "sign in again as the Referrals admin user with MFA" in problems["partner_center_token"]
    assert problems["partner_center_referrals"] == "not checked: no token (fix that first)"


def test_a_refresh_token_from_a_sign_in_without_mfa(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    token = requests.post(f"{world.pc.url}/_sandbox/tokens", json={"mfa": False}, timeout=10).json()["refresh_token"]
    world.set(PARTNER_CENTER_REFRESH_TOKEN=token)
    problems = failed(world.doctor())
    assert set(problems) == {"partner_center_mfa", "partner_center_referrals"}
    assert "did not use MFA (amr: pwd)" in problems["partner_center_mfa"]
    assert "900421" in problems["partner_center_referrals"]


def test_a_webhook_another_tool_registered(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    world.register_webhook("https://other-tool.example/hook?code=their-key")
    problems = failed(world.doctor())
    assert set(problems) == {"partner_center_webhook"}
    assert "https://other-tool.example/hook?code=***" in problems["partner_center_webhook"]
    assert "register-webhook --overwrite" in problems["partner_center_webhook"]


def test_a_salesforce_login_refused(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    world.set(SALESFORCE_USERNAME="nobody@cosell.sandbox")
    problems = failed(world.doctor())
    assert set(problems) == {"salesforce_login", "salesforce_mapping", "salesforce_writable",
                             "salesforce_permission_set", "salesforce_api_budget", "salesforce_org_id"}
    assert "refused the jwt_bearer login for nobody@cosell.sandbox" in problems["salesforce_login"]
    assert problems["salesforce_org_id"] == "not checked: no Salesforce login (fix that first)"


def test_the_permission_set_taken_away(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    requests.post(f"{world.sf.url}/_sandbox/permission-sets", json={"permission_set": None},
                  timeout=10).raise_for_status()
    problems = failed(world.doctor())
    assert set(problems) == {"salesforce_permission_set", "salesforce_mapping", "salesforce_writable"}
    assert "Opportunity.Referral_Identifier__c (not visible)" in problems["salesforce_writable"]
    assert "may not read permission set assignments and lacks access to mapped fields" in problems[
        "salesforce_permission_set"]
    assert "sf org assign permset --name Partner_Center_Co_sell_Integration" in problems["salesforce_permission_set"]
    assert "unknown Salesforce field Opportunity.Referral_Identifier__c" in problems["salesforce_mapping"]


def metadata_copy(tmp_path: Path, change: Callable[[str], str]) -> Path:
    """The project's force-app with its permission set changed as `change` says."""
    metadata = tmp_path / "force-app"
    shutil.copytree(DEFAULT_METADATA_DIR, metadata)
    permission_set = next(metadata.rglob("*.permissionset-meta.xml"))
    xml = permission_set.read_text(encoding="utf-8")
    changed = change(xml)
    assert changed != xml
    permission_set.write_text(changed, encoding="utf-8")
    return metadata


def test_an_integration_user_who_may_read_assignments_is_checked_by_name(
        world_factory: Callable[..., World], tmp_path: Path) -> None:
    view_setup = "<userPermissions>\n        <enabled>true</enabled>\n        <name>ViewSetup</name>\n    </userPermissions>\n"
    world = world_factory(metadata_dir=metadata_copy(tmp_path, lambda xml: xml.replace(
        "</PermissionSet>", view_setup + "</PermissionSet>")))
    report = world.doctor()
    assert not failed(report)
    assert report["salesforce_permission_set"].detail == (
        "Partner_Center_Co_sell_Integration is assigned to integration@cosell.sandbox")


def test_an_admin_login_without_the_permission_set(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    world.set(SALESFORCE_USERNAME=world.sf.credentials.seller_username)
    problems = failed(world.doctor())
    assert set(problems) == {"salesforce_permission_set"}
    assert "Partner_Center_Co_sell_Integration is not assigned to seller@cosell.sandbox" in problems[
        "salesforce_permission_set"]


def test_a_permission_set_that_forgets_edit_access(world_factory: Callable[..., World], tmp_path: Path) -> None:
    world = world_factory(metadata_dir=metadata_copy(tmp_path, lambda xml: xml.replace(
        "<editable>true</editable>\n        <field>Opportunity.Audit__c</field>",
        "<editable>false</editable>\n        <field>Opportunity.Audit__c</field>")))
    problems = failed(world.doctor())
    assert set(problems) == {"salesforce_writable", "salesforce_permission_set"}
    assert "lacks access to mapped fields" in problems["salesforce_permission_set"]
    assert ("Opportunity.Audit__c (not createable), Opportunity.Audit__c (not updateable)"
            in problems["salesforce_writable"])


def test_an_org_stage_the_mapping_has_no_phase_for(world_factory: Callable[..., World]) -> None:
    world = world_factory(stages=(*DEFAULT_STAGES, Stage("Legal Review", 95)))
    problems = failed(world.doctor())
    assert set(problems) == {"salesforce_mapping"}
    assert "the org's stage 'Legal Review' has no phase" in problems["salesforce_mapping"]


def test_the_api_budget_spent_by_others(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    requests.post(f"{world.sf.url}/_sandbox/limits", json={"limit": 1000, "used": 900}, timeout=10).raise_for_status()
    report = world.doctor()
    assert set(failed(report)) == {"salesforce_api_budget"}  # the other checks still ran: a person asked
    assert "of 1,000 daily API requests used" in report["salesforce_api_budget"].detail
    assert "COSELL_SF_BUDGET_SHARE" in report["salesforce_api_budget"].detail


def test_another_orgs_id_and_an_unset_one(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    world.set(SALESFORCE_ORG_ID="00DXX0000000009AAA")
    problems = failed(world.doctor())
    assert set(problems) == {"salesforce_org_id"}
    assert f"set SALESFORCE_ORG_ID to {world.sf.org.org_id}" in problems["salesforce_org_id"]
    world.set(SALESFORCE_ORG_ID="")
    assert "not set" in failed(world.doctor())["salesforce_org_id"]


def test_storage_that_does_not_answer(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    world.set(AzureWebJobsStorage="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
              "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
              "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    problems = failed(world.doctor())
    assert set(problems) == {"storage"}
    assert "Table storage at http://127.0.0.1:9" in problems["storage"]
    assert "Queue storage at http://127.0.0.1:9" in problems["storage"]
    assert "Eby8vdM02x" not in problems["storage"]


def test_the_cli_exits_1_on_any_cross(world_factory: Callable[..., World], capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    world = world_factory()
    world.set(SALESFORCE_ORG_ID="")
    assert main(["--settings", str(tmp_path / "none.json"), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "✗ Outbound messages: SALESFORCE_ORG_ID: not set" in out
    assert out.strip().endswith("10 of 11 checks passed; fix the 1 marked ✗ before going live")
