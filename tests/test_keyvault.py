"""KeyVaultSecrets against a fake Key Vault that answers the REST calls, through the real SDK pipeline.

The vault is a `requests` adapter behind azure-core's own `RequestsTransport`, so everything above the
socket runs for real: the challenge-based bearer authentication Key Vault clients do (an unauthenticated
first request, a 401 with `WWW-Authenticate`, a token for `https://vault.azure.net/.default`), the
generated REST calls and their JSON, the retry policy and the error mapping. No network.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.keyvault.secrets import SecretClient
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPResponse

from shared.errors import ConfigError, Conflict, InvalidInput, Unavailable
from shared.keyvault import KeyVaultSecrets, vault_secret_name
from shared.runtime import Services
from shared.settings import Settings
from shared.store.secrets import SecretStore

VAULT = "https://cosell-test.vault.azure.net"
TOKEN = "fake-access-token"
CHALLENGE = ('Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001", '
             'resource="https://vault.azure.net"')


class FakeCredential:
    """A TokenCredential that hands out one fixed token and remembers the scopes it was asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)


@dataclass
class Call:
    method: str
    path: str
    authorized: bool
    body: dict[str, Any] | None


@dataclass
class FakeVault(BaseAdapter):
    """Key Vault's secrets REST API, in memory: versions per secret, faults on demand."""

    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)
    """(method, status, headers): the next matching authorized call answers with that status, once."""

    def __post_init__(self) -> None:
        super().__init__()

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:
        url = urlsplit(request.url)
        body = json.loads(request.body) if request.body else None
        authorized = request.headers.get("Authorization") == f"Bearer {TOKEN}"
        self.calls.append(Call(request.method or "", url.path, authorized, body))
        if not authorized:
            return self._answer(request, 401, {"error": {"code": "Unauthorized", "message": "no token"}},
                                {"WWW-Authenticate": CHALLENGE})
        for index, (method, status, headers) in enumerate(self.faults):
            if method == request.method:
                del self.faults[index]
                return self._answer(request, status, {"error": {"code": "Fault", "message": "injected"}}, headers)
        parts = [part for part in url.path.split("/") if part]
        if len(parts) < 2 or parts[0] != "secrets":
            return self._answer(request, 400, {"error": {"code": "BadParameter", "message": "bad path"}})
        name = parts[1]
        if request.method == "PUT":
            assert body is not None
            version = f"v{len(self.versions.get(name, [])) + 1}"
            bundle = {"value": body["value"], "id": f"{VAULT}/secrets/{name}/{version}",
                      "contentType": body.get("contentType"), "tags": body.get("tags"),
                      "attributes": {"enabled": True, "created": 1767225600, "updated": 1767225600,
                                     "recoveryLevel": "Recoverable"}}
            self.versions.setdefault(name, []).append(bundle)
            return self._answer(request, 200, bundle)
        if request.method == "GET":
            if name not in self.versions:
                return self._answer(request, 404, {"error": {
                    "code": "SecretNotFound", "message": f"A secret with (name/id) {name} was not found"}})
            return self._answer(request, 200, self.versions[name][-1])
        return self._answer(request, 405, {"error": {"code": "MethodNotAllowed", "message": "no"}})

    @staticmethod
    def _answer(request: requests.PreparedRequest, status: int, body: dict[str, Any],
                headers: dict[str, str] | None = None) -> requests.Response:
        content = json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json; charset=utf-8", "x-ms-request-id": f"req-{status}",
                       "Content-Length": str(len(content)), **(headers or {})}
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict(all_headers)
        response.raw = HTTPResponse(body=io.BytesIO(content), headers=all_headers, status=status,
                                    preload_content=False)
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def vault() -> FakeVault:
    return FakeVault()


def transport_for(vault: FakeVault) -> RequestsTransport:
    session = requests.Session()
    session.mount("https://", vault)
    return RequestsTransport(session=session, session_owner=False)


def secrets_from_settings(vault: FakeVault, credential: FakeCredential | None = None) -> KeyVaultSecrets:
    settings = Settings(cosell_keyvault_url=VAULT + "/")
    return KeyVaultSecrets.from_settings(settings, credential=credential or FakeCredential(),
                                         transport=transport_for(vault))


def secrets_without_retries(vault: FakeVault) -> KeyVaultSecrets:
    """For failure answers: the same client without the pipeline's retries (their back-off waits seconds)."""
    client = SecretClient(VAULT, FakeCredential(), transport=transport_for(vault), retry_total=0)
    return KeyVaultSecrets(client)


def test_put_then_get_round_trips_through_the_sdk_with_challenge_authentication(vault: FakeVault) -> None:
    credential = FakeCredential()
    secrets = secrets_from_settings(vault, credential)

    secrets.put("partner-center-refresh-token", "rt-1")
    secrets.put("partner-center-refresh-token", "rt-2")

    assert secrets.get("partner-center-refresh-token") == "rt-2"
    assert [v["value"] for v in vault.versions["partner-center-refresh-token"]] == ["rt-1", "rt-2"]
    # The first call goes out without a token to learn the vault's tenant; the token is for the vault.
    assert vault.calls[0].authorized is False
    assert all(call.authorized for call in vault.calls[1:])
    assert credential.scopes and set(credential.scopes) == {("https://vault.azure.net/.default",)}
    written = [call.body for call in vault.calls if call.method == "PUT" and call.authorized]
    assert written[-1] == {"value": "rt-2", "contentType": "text/plain", "tags": {"written-by": "cosell-connector"}}


def test_setting_style_names_map_to_the_secret_the_template_creates(vault: FakeVault) -> None:
    secrets = secrets_from_settings(vault)

    secrets.put("PARTNER_CENTER_REFRESH_TOKEN", "rt")

    assert secrets.get("partner_center_refresh_token") == "rt"
    assert set(vault.versions) == {"partner-center-refresh-token"}
    assert {call.path.rstrip("/") for call in vault.calls} == {"/secrets/partner-center-refresh-token"}


def test_a_missing_secret_reads_as_none(vault: FakeVault) -> None:
    assert secrets_from_settings(vault).get("never-written") is None


def test_one_throttled_answer_is_retried_by_the_pipeline(vault: FakeVault) -> None:
    secrets = secrets_from_settings(vault)
    vault.faults.append(("PUT", 429, {"Retry-After": "0"}))

    secrets.put("partner-center-refresh-token", "rt")

    assert secrets.get("partner-center-refresh-token") == "rt"
    assert [call.method for call in vault.calls if call.authorized].count("PUT") == 2


def test_a_refused_write_names_the_missing_role_and_never_the_value(vault: FakeVault) -> None:
    secrets = secrets_without_retries(vault)
    vault.faults.append(("PUT", 403, {}))

    with pytest.raises(ConfigError) as raised:
        secrets.put("partner-center-refresh-token", "rt-very-secret-value")

    message = str(raised.value)
    assert "Key Vault Secrets Officer" in message and "'partner-center-refresh-token'" in message
    assert raised.value.request_id == "req-403"
    assert "rt-very-secret-value" not in message


def test_a_refused_read_names_the_reader_role(vault: FakeVault) -> None:
    secrets = secrets_without_retries(vault)
    vault.faults.append(("GET", 403, {}))

    with pytest.raises(ConfigError, match="Key Vault Secrets User on the vault"):
        secrets.get("partner-center-refresh-token")


def test_a_deleted_but_recoverable_secret_is_a_conflict(vault: FakeVault) -> None:
    vault.faults.append(("PUT", 409, {}))

    with pytest.raises(Conflict, match="recover"):
        secrets_without_retries(vault).put("partner-center-refresh-token", "rt")


def test_a_vault_failure_is_unavailable(vault: FakeVault) -> None:
    vault.faults.append(("GET", 503, {}))

    with pytest.raises(Unavailable, match="HTTP 503"):
        secrets_without_retries(vault).get("partner-center-refresh-token")


def test_an_unreachable_vault_is_unavailable() -> None:
    class Unreachable(BaseAdapter):
        def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:
            raise requests.ConnectionError("connection refused")

        def close(self) -> None:
            pass

    session = requests.Session()
    session.mount("https://", Unreachable())
    client = SecretClient(VAULT, FakeCredential(), transport=RequestsTransport(session=session), retry_total=0)

    with pytest.raises(Unavailable, match="not reachable"):
        KeyVaultSecrets(client).get("partner-center-refresh-token")


@pytest.mark.parametrize(("name", "expected"), [
    ("partner-center-refresh-token", "partner-center-refresh-token"),
    ("PARTNER_CENTER_REFRESH_TOKEN", "partner-center-refresh-token"),
    (" salesforce_private_key ", "salesforce-private-key"),
])
def test_vault_secret_names(name: str, expected: str) -> None:
    assert vault_secret_name(name) == expected


@pytest.mark.parametrize("name", ["", "a/b", "token.v2", "x" * 128])
def test_names_a_vault_cannot_hold_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        vault_secret_name(name)


def test_from_settings_needs_an_https_vault_url() -> None:
    with pytest.raises(ConfigError, match="COSELL_KEYVAULT_URL is not set"):
        KeyVaultSecrets.from_settings(Settings(), credential=FakeCredential())
    with pytest.raises(ConfigError, match="https://"):
        KeyVaultSecrets.from_settings(Settings(cosell_keyvault_url="http://127.0.0.1:8200"),
                                      credential=FakeCredential())


def test_services_keep_secrets_in_the_vault_only_when_one_is_configured(azurite: str) -> None:
    in_azure = Services()
    in_azure.settings = Settings(cosell_keyvault_url=VAULT, cosell_storage=azurite)
    local = Services()
    local.settings = Settings(cosell_storage=azurite)

    vault_secrets = in_azure.secrets
    assert isinstance(vault_secrets, KeyVaultSecrets)
    assert vault_secrets.vault_url == VAULT
    assert isinstance(local.secrets, SecretStore)
    assert local.secrets is local.store.secrets
