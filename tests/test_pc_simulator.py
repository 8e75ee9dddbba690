"""The simulator is as strict as the handbook, its webhook faults work, and it runs from the command line;
the operator's webhook commands work against it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox.partner_center import PartnerCenterSim
from shared.cli import main as cli_main
from tests.fixtures.partner_center import Downstream

ROOT = Path(__file__).resolve().parents[1]


def _token(sim: PartnerCenterSim, grant: dict[str, str], scope: str) -> str:
    answer = requests.post(f"{sim.url}/{sim.tenant_id}/oauth2/v2.0/token", verify=str(sim.ca.ca_pem_path), timeout=10,
                           data={"client_id": sim.client_id, "client_secret": sim.client_secret, "scope": scope, **grant})
    answer.raise_for_status()
    return answer.json()["access_token"]


def test_the_api_refuses_what_the_handbook_forbids(pc_sim: PartnerCenterSim) -> None:
    verify = str(pc_sim.ca.ca_pem_path)
    user = _token(pc_sim, {"grant_type": "refresh_token", "refresh_token": pc_sim.mint_refresh_token()},
                  "https://api.partner.microsoft.com/.default offline_access")
    app = _token(pc_sim, {"grant_type": "client_credentials"}, "https://api.partner.microsoft.com/.default")
    referral_id = pc_sim.create_incoming()["id"]
    base = pc_sim.api_url + "/referrals"

    def call(method: str, url: str, token: str = user, **kwargs: object) -> requests.Response:
        return requests.request(method, url, headers={"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})},
                                verify=verify, timeout=10, **kwargs)

    assert call("GET", base, token=app).status_code == 401  # App+User only
    assert call("GET", base, params={"$expand": "team"}).status_code == 400
    assert call("GET", base, params={"$filter": "name eq 'x'"}).status_code == 400
    assert call("GET", base, params={"$orderby": "name asc"}).status_code == 400
    assert call("GET", base, params={"$top": "2", "$skiptoken": "garbage"}).status_code == 400
    assert call("GET", base, params={"$top": "101"}).status_code == 400  # a page holds at most 100
    assert call("GET", base, params={"$top": "100"}).status_code == 200
    patch = f"{base}/{referral_id}"
    ops = [{"op": "replace", "path": "/details/dealValue", "value": 1}]
    assert call("PATCH", patch, data=json.dumps(ops), headers={"Content-Type": "text/plain"}).status_code == 415
    assert call("PATCH", patch, json=ops).status_code == 204  # application/json, as Microsoft's examples send it
    json_patch = {"Content-Type": "application/json-patch+json"}
    assert call("PATCH", patch, data=json.dumps([{"op": "remove", "path": "/details/notes"}]),
                headers=json_patch).status_code == 400
    assert call("PATCH", patch, data=json.dumps([{"op": "replace", "path": "/updatedDateTime", "value": "x"}]),
                headers=json_patch).status_code == 400
    assert call("PATCH", patch, data=json.dumps(ops), headers={**json_patch, "If-Match": '"stale"'}).status_code == 412
    assert call("PATCH", patch, data=json.dumps(ops), headers=json_patch).status_code == 204
    assert call("POST", base, json={"type": "Shared"}).status_code == 400  # customerProfile, consent, details missing
    discovery = requests.get(f"{pc_sim.url}/not-the-tenant/v2.0/.well-known/openid-configuration", verify=verify,
                             timeout=10)
    assert discovery.status_code == 400


def test_webhook_faults_duplicate_drop_reorder_delay(pc_sim: PartnerCenterSim) -> None:
    receiver = Downstream()
    try:
        pc_sim.registration = {"SubscriberId": "s", "WebhookUrl": receiver.url, "WebhookEvents": ["referral-created"]}

        def ids() -> list[str]:
            return [json.loads(body)["ResourceUri"].rsplit("/", 1)[1] for body, _ in receiver.received]

        pc_sim.add_webhook_fault("duplicate")
        first = pc_sim.create_incoming()["id"]
        pc_sim.wait_for_deliveries(lambda log: len(log) >= 2)
        assert ids() == [first, first]

        pc_sim.add_webhook_fault("drop")
        dropped = pc_sim.create_incoming()["id"]
        pc_sim.add_webhook_fault("reorder", count=2)
        a, b = pc_sim.create_incoming()["id"], pc_sim.create_incoming()["id"]
        pc_sim.wait_for_deliveries(lambda log: len(log) >= 5)
        time.sleep(0.3)
        assert dropped not in ids() and ids()[2:] == [b, a]

        pc_sim.add_webhook_fault("delay", delay=1.0)
        started = time.monotonic()
        late = pc_sim.create_incoming()["id"]
        pc_sim.wait_for_deliveries(lambda log: len(log) >= 6)
        assert time.monotonic() - started >= 1.0 and ids()[-1] == late
    finally:
        receiver.server.stop()


def test_command_line_starts_and_prints_the_settings(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "sandbox.partner_center", "--port", "0", "--ca", str(tmp_path)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = process.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("Partner Center simulator listening on https://127.0.0.1:")
        url = first.rsplit(" ", 1)[1].strip()
        assert (tmp_path / "ca.pem").exists()
        answer = requests.get(f"{url}/_sandbox/state", verify=str(tmp_path / "ca.pem"), timeout=10)
        assert answer.status_code == 200 and answer.json()["referrals"] == []
    finally:
        process.terminate()
        process.wait(10)


def test_register_webhook_and_webhook_status_commands(pc_sim: PartnerCenterSim, pc_env: dict[str, str], azurite: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    monkeypatch.setenv("COSELL_PUBLIC_URL", "https://cosell.example")
    no_file = ["--settings", str(tmp_path / "none.json")]
    pc_sim.registration = {"SubscriberId": "s", "WebhookUrl": "https://other.example/hook", "WebhookEvents": ["test-created"]}
    assert cli_main([*no_file, "register-webhook"]) == 1
    assert "https://other.example/hook" in capsys.readouterr().err
    assert cli_main([*no_file, "register-webhook", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "replaced"
    assert pc_sim.registration["WebhookUrl"] == "https://cosell.example/api/partnercenter/events"
    assert cli_main([*no_file, "webhook-status"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["webhook"]["points_here"] is True and report["webhook"]["registered"] is True



def test_referrals_from_microsoft_carry_the_documented_shapes(pc_sim: PartnerCenterSim) -> None:
    """Requirements as objects, the inviter as an organization, contact preferences as {locale,
    disableNotifications}, closing dates as a user's local midnight in UTC (Microsoft Learn, Referral resources;
    captured responses), so the connector is tested on what the real service sends."""
    import datetime as dt

    from shared.models import Referral

    seen_offsets = set()
    for _ in range(4):
        referral = pc_sim.create_incoming({"customerProfile": {"team": [{"firstName": "Ada", "email": "a@x.example"}]}})
        assert referral["details"]["requirements"]["industries"] == [{"id": "Retail"}]
        assert set(referral["inviteContext"]["invitedBy"]) == {"organizationId", "organizationName"}
        assert referral["customerProfile"]["team"][0]["contactPreference"] == {"locale": "en-US",
                                                                              "disableNotifications": False}
        closing = dt.datetime.fromisoformat(referral["details"]["closingDateTime"])
        hours_to_midnight = ((24 - closing.hour - closing.minute / 60) % 24) or 0
        offset = hours_to_midnight if hours_to_midnight <= 10 else hours_to_midnight - 24
        assert -3 <= offset <= 10 and referral["details"]["closingDateTime"].endswith("Z")
        seen_offsets.add(offset)
        Referral.model_validate(referral)  # the connector's model reads every one
    assert len(seen_offsets) == 4  # several time zones, east and west of UTC


def test_the_closed_referral_switch_refuses_what_the_reference_allows(pc_sim: PartnerCenterSim) -> None:
    verify = str(pc_sim.ca.ca_pem_path)
    user = _token(pc_sim, {"grant_type": "refresh_token", "refresh_token": pc_sim.mint_refresh_token()},
                  "https://api.partner.microsoft.com/.default offline_access")
    referral_id = pc_sim.create_incoming()["id"]
    pc_sim.update_as_microsoft(referral_id, {"status": "Closed", "substatus": "Lost", "statusReason": "budget cut"})

    def patch(ops: list[dict[str, object]]) -> requests.Response:
        return requests.patch(f"{pc_sim.api_url}/referrals/{referral_id}", data=json.dumps(ops), verify=verify,
                              headers={"Authorization": f"Bearer {user}", "Content-Type": "application/json-patch+json"},
                              timeout=10)

    won = [{"op": "replace", "path": "/substatus", "value": "Won"}]
    assert patch(won).status_code == 204  # the reference lists Closed -> Closed: allowed by default
    switched = requests.post(f"{pc_sim.url}/_sandbox/closed-referrals", json={"refuseEdits": True}, verify=verify,
                             timeout=10)
    assert switched.status_code == 200 and switched.json()["refuseEdits"] is True

    lost = patch([{"op": "replace", "path": "/substatus", "value": "Lost"},
                  {"op": "replace", "path": "/statusReason", "value": "again"}])
    edit = patch([{"op": "replace", "path": "/details/dealValue", "value": 1}])

    assert (lost.status_code, edit.status_code) == (400, 400)
    assert edit.json()["error"]["code"] == "ReferralClosed"
    assert pc_sim.closed_edits_refused == 2
    assert pc_sim.referrals[referral_id]["substatus"] == "Won"
