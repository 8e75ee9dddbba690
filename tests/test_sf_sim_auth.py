"""The simulator's token endpoint: the three grants the connector may use, and their refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from simple_salesforce import Salesforce

from sandbox.ca import SandboxCA, self_signed
from sandbox.salesforce import SalesforceSim
from tests.fixtures.salesforce import API_VERSION, jwt_assertion, sf_login, sf_token

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _post(sim: SalesforceSim, form: dict[str, str], **kwargs: object) -> requests.Response:
    return requests.post(f"{sim.url}/services/oauth2/token", data=form, timeout=10, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("grant", ["jwt", "client_credentials", "password"])
def test_each_grant_gives_a_session_simple_salesforce_can_use(sf_sim: SalesforceSim, grant: str) -> None:
    response = sf_token(sf_sim, grant)
    assert response.status_code == 200
    token = response.json()
    assert token["instance_url"] == sf_sim.url and token["token_type"] == "Bearer"
    assert token["id"] == f"{sf_sim.url}/id/{sf_sim.org.org_id}/{sf_sim.integration.id}"
    expected = base64.b64encode(hmac.new(sf_sim.credentials.client_secret.encode(),
                                         (token["id"] + token["issued_at"]).encode(), hashlib.sha256).digest())
    assert token["signature"] == expected.decode()
    client = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version=API_VERSION)
    created = client.Account.create({"Name": f"via {grant}"})["id"]
    assert client.Account.get(created)["CreatedById"] == sf_sim.integration.id
    identity = requests.get(token["id"], headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=10)
    assert identity.json()["username"] == "integration@cosell.sandbox"


def test_jwt_for_the_seller_acts_as_the_seller(sf_sim: SalesforceSim) -> None:
    seller = sf_login(sf_sim, "jwt", user="seller")
    integration = sf_login(sf_sim, "jwt")
    opp = seller.Opportunity.create({"Name": "Seller deal", "StageName": "Prospecting", "CloseDate": "2026-01-01"})
    integration.Opportunity.update(opp["id"], {"Audit__c": "synced"})
    record = seller.Opportunity.get(opp["id"])
    assert record["CreatedById"] == sf_sim.seller.id and record["LastModifiedById"] == sf_sim.integration.id


def _jwt_form(sim: SalesforceSim, **overrides: object) -> dict[str, str]:
    creds = sim.credentials
    claims = {"issuer": creds.client_id, "subject": creds.username, "audience": creds.login_url,
              "private_key_pem": creds.private_key_pem, **overrides}
    return {"grant_type": JWT_GRANT, "assertion": jwt_assertion(**claims)}  # type: ignore[arg-type]


def test_jwt_refusals(sf_sim: SalesforceSim) -> None:
    other_key = self_signed("not the uploaded certificate").key_pem
    cases = [
        (_jwt_form(sf_sim, private_key_pem=other_key), "invalid_grant", "signature"),
        (_jwt_form(sf_sim, audience="https://login.salesforce.com"), "invalid_grant", "audience is invalid"),
        (_jwt_form(sf_sim, audience=sf_sim.url + "/"), None, None),
        (_jwt_form(sf_sim, issuer="someone-else"), "invalid_client_id", "client identifier invalid"),
        (_jwt_form(sf_sim, expires_in=-5), "invalid_grant", "expired"),
        (_jwt_form(sf_sim, expires_in=3600), "invalid_grant", "3 minutes"),
        (_jwt_form(sf_sim, subject="nobody@cosell.sandbox"), "invalid_grant", "hasn't approved"),
        (_jwt_form(sf_sim, header={"alg": "HS256"}), "invalid_grant", "RS256"),
        ({"grant_type": JWT_GRANT, "assertion": "not.a.jwt"}, "invalid_grant", "invalid assertion"),
    ]
    for form, error, description in cases:
        response = _post(sf_sim, form)
        if error is None:
            assert response.status_code == 200
            continue
        assert response.status_code == 400, form
        assert response.json()["error"] == error
        assert description in response.json()["error_description"]


def test_secret_based_grant_refusals(sf_sim: SalesforceSim) -> None:
    creds = sf_sim.credentials
    password = {"grant_type": "password", "client_id": creds.client_id, "client_secret": creds.client_secret,
                "username": creds.username, "password": creds.password}  # no security token appended
    assert _post(sf_sim, password).json() == {"error": "invalid_grant", "error_description": "authentication failure"}
    wrong_secret = {"grant_type": "client_credentials", "client_id": creds.client_id, "client_secret": "guess"}
    assert _post(sf_sim, wrong_secret).json()["error"] == "invalid_client"
    wrong_client = {"grant_type": "client_credentials", "client_id": "nope", "client_secret": creds.client_secret}
    assert _post(sf_sim, wrong_client).json()["error"] == "invalid_client_id"
    assert _post(sf_sim, {"grant_type": "authorization_code"}).json()["error"] == "unsupported_grant_type"
    basic = base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode()).decode()
    via_basic = _post(sf_sim, {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"})
    assert via_basic.status_code == 200
    assert sf_sim.org.api.used == 0  # logging in is not an API call


def test_client_credentials_are_refused_on_the_login_host(sandbox_ca: SandboxCA) -> None:
    """Salesforce refuses the client credentials flow on login/test.salesforce.com: only My Domain takes it."""
    sim = SalesforceSim(sandbox_ca, my_domain=False)
    sim.start()
    try:
        creds = sim.credentials
        refused = _post(sim, {"grant_type": "client_credentials", "client_id": creds.client_id,
                              "client_secret": creds.client_secret})
        assert refused.status_code == 400
        assert refused.json() == {"error": "invalid_grant", "error_description": "request not supported on this domain"}
        assert sf_token(sim, "jwt").status_code == 200  # the other grants still work there
    finally:
        sim.stop()


def test_a_bad_token_is_invalid_session_id(sf_sim: SalesforceSim) -> None:
    for header in ({}, {"Authorization": "Bearer forged"}, {"Authorization": "Basic abc"}):
        response = requests.get(f"{sf_sim.url}/services/data/v64.0/limits", headers=header, timeout=10)
        assert response.status_code == 401
        assert response.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_command_line_serves_https_and_writes_its_credentials(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    SandboxCA.load_or_create(ca_dir)
    process = subprocess.Popen([sys.executable, "-m", "sandbox.salesforce", "--port", "0", "--ca", str(ca_dir)],
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        info = (ca_dir / "salesforce-sim.json").read_text()
        assert '"login_url": "' + url in info and "BEGIN" not in info  # key kept in its own file
        key = (ca_dir / "salesforce-jwt.key").read_bytes()
        assertion = jwt_assertion(key, issuer="3MVG9sandbox.CoSellConnector", subject="integration@cosell.sandbox",
                                  audience=url)
        response = requests.post(f"{url}/services/oauth2/token", verify=str(ca_dir / "ca.pem"), timeout=10,
                                 data={"grant_type": JWT_GRANT, "assertion": assertion})
        assert response.status_code == 200
        assert response.json()["instance_url"] == url
    finally:
        process.terminate()
        process.wait(timeout=10)
