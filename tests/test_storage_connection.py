"""How the connector reaches its storage: connection string, or the managed identity like the Functions host.

The choice is checked offline; the identity-based path is then driven end to end against an Azurite that
only accepts bearer tokens over HTTPS (`--oauth basic`), so the tables and queues really are reached with a
token credential and no key.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from sandbox.azurite import ACCOUNT, AZURITE_BIN, free_port
from sandbox.ca import SandboxCA
from shared.errors import ConfigError, Unavailable
from shared.settings import Settings
from shared.store import REFERRAL_QUEUE, QueueSender, Store
from shared.store.connection import StorageTarget, storage_credential, storage_target, transport_options

CONNECTION_STRING = "DefaultEndpointsProtocol=https;AccountName=cosell;AccountKey=a2V5;EndpointSuffix=core.windows.net"
HOST_CONNECTION_STRING = "DefaultEndpointsProtocol=https;AccountName=host;AccountKey=aG9zdA==;EndpointSuffix=core.net"


def settings(**values: Any) -> Settings:
    """Settings with every storage setting given explicitly (the test process's environment plays no part)."""
    storage = {"cosell_storage": None, "azurewebjobsstorage": None, "cosell_storage__accountname": None,
               "cosell_storage__tableserviceuri": None, "cosell_storage__queueserviceuri": None}
    return Settings(**{**storage, **values})


def test_the_connection_string_wins_as_the_functions_host_decides() -> None:
    target = storage_target(settings(cosell_storage=CONNECTION_STRING, cosell_storage__accountname="cosellstore",
                                     azurewebjobsstorage=HOST_CONNECTION_STRING))
    assert target == StorageTarget(connection_string=CONNECTION_STRING)
    assert not target.uses_identity


def test_an_account_name_gives_both_endpoints_for_the_managed_identity() -> None:
    target = storage_target(settings(cosell_storage__accountname="cosellstore"))
    assert target == StorageTarget(table_url="https://cosellstore.table.core.windows.net",
                                   queue_url="https://cosellstore.queue.core.windows.net")
    assert target.uses_identity


def test_explicit_service_uris_win_over_the_account_name() -> None:
    # infra/main.bicep passes the account's primaryEndpoints, which end in a slash.
    target = storage_target(settings(
        cosell_storage__accountname="cosellstore",
        cosell_storage__tableserviceuri="https://cosellstore.table.core.usgovcloudapi.net/",
        cosell_storage__queueserviceuri="https://cosellstore.queue.core.usgovcloudapi.net/",
    ))
    assert target.table_url == "https://cosellstore.table.core.usgovcloudapi.net"
    assert target.queue_url == "https://cosellstore.queue.core.usgovcloudapi.net"


def test_the_identity_connection_wins_over_the_hosts_connection_string() -> None:
    target = storage_target(settings(cosell_storage__accountname="cosellstore",
                                     azurewebjobsstorage=HOST_CONNECTION_STRING))
    assert target.uses_identity and target.table_url == "https://cosellstore.table.core.windows.net"


def test_the_hosts_connection_string_is_the_fallback_and_empty_values_are_unset() -> None:
    # local.settings.example.json lists every setting, most of them empty.
    target = storage_target(settings(cosell_storage="", cosell_storage__accountname="",
                                     cosell_storage__tableserviceuri="", azurewebjobsstorage=HOST_CONNECTION_STRING))
    assert target == StorageTarget(connection_string=HOST_CONNECTION_STRING)


def test_nothing_configured_says_what_to_set() -> None:
    with pytest.raises(ConfigError) as raised:
        storage_target(settings())
    assert "COSELL_STORAGE" in str(raised.value) and "COSELL_STORAGE__accountName" in str(raised.value)


def test_one_service_uri_alone_names_the_missing_one() -> None:
    with pytest.raises(ConfigError, match="COSELL_STORAGE__queueServiceUri is not set"):
        storage_target(settings(cosell_storage__tableserviceuri="https://cosellstore.table.core.windows.net"))


@pytest.mark.parametrize("account", ["Cosell_Store", "ab", "a" * 25, "cosell.store"])
def test_a_malformed_account_name_is_refused(account: str) -> None:
    with pytest.raises(ConfigError, match="COSELL_STORAGE__accountName must be a storage account name"):
        storage_target(settings(cosell_storage__accountname=account))


def test_a_token_is_never_meant_for_plain_http() -> None:
    with pytest.raises(ConfigError, match="COSELL_STORAGE__tableServiceUri must be an https:// URL"):
        storage_target(settings(cosell_storage__tableserviceuri="http://127.0.0.1:10002/devstoreaccount1",
                                cosell_storage__queueserviceuri="https://127.0.0.1:10001/devstoreaccount1"))


# --- the identity path, end to end -------------------------------------------------------------------


def fake_entra_token(audience: str = "https://storage.azure.com") -> str:
    """An unsigned token with the claims Azurite's `--oauth basic` checks (issuer, audience, lifetime)."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"aud": audience, "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000001/",
              "iat": now - 60, "nbf": now - 60, "exp": now + 3600, "oid": "fake-managed-identity"}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


class FakeManagedIdentity:
    """Stands in for DefaultAzureCredential: a token for whatever scope is asked, scopes remembered."""

    def __init__(self, **_: Any) -> None:
        self.scopes: set[tuple[str, ...]] = set()

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.add(scopes)
        return AccessToken(fake_entra_token(), int(time.time()) + 3600)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def oauth_azurite(sandbox_ca: SandboxCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """Azurite over HTTPS (a sandbox-CA certificate) that checks bearer tokens (`--oauth basic`)."""
    workdir = tmp_path_factory.mktemp("azurite-oauth")
    issued = sandbox_ca.issue("127.0.0.1", hosts=("127.0.0.1",))
    (workdir / "cert.pem").write_bytes(issued.cert_pem)
    (workdir / "key.pem").write_bytes(issued.key_pem)
    ports = {"queue": free_port(), "table": free_port()}
    process = subprocess.Popen(
        [str(AZURITE_BIN), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--loose",
         "--disableTelemetry", "--oauth", "basic",
         "--cert", str(workdir / "cert.pem"), "--key", str(workdir / "key.pem"),
         "--blobHost", "127.0.0.1", "--blobPort", str(free_port()),
         "--queueHost", "127.0.0.1", "--queuePort", str(ports["queue"]),
         "--tableHost", "127.0.0.1", "--tablePort", str(ports["table"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=workdir,
    )
    try:
        deadline = time.monotonic() + 30
        while not all(_listening(port) for port in ports.values()):
            assert process.poll() is None, "Azurite with --oauth exited at start"
            assert time.monotonic() < deadline, "Azurite with --oauth did not listen within 30 s"
            time.sleep(0.1)
        yield ports
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def managed_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeManagedIdentity]:
    """Replace DefaultAzureCredential (what `storage_credential` builds) for this test."""
    identity = FakeManagedIdentity()
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", lambda **_: identity)
    storage_credential.cache_clear()
    yield identity
    storage_credential.cache_clear()


def test_tables_and_queues_are_reached_with_the_managed_identity_and_no_key(
        oauth_azurite: dict[str, int], managed_identity: FakeManagedIdentity) -> None:
    endpoint = "https://127.0.0.1:{port}/" + ACCOUNT + "/"
    config = settings(cosell_storage__tableserviceuri=endpoint.format(port=oauth_azurite["table"]),
                      cosell_storage__queueserviceuri=endpoint.format(port=oauth_azurite["queue"]))

    store = Store.from_settings(config)
    store.secrets.put("probe", "written with a token")
    QueueSender.from_settings(config).send(REFERRAL_QUEUE, {"referral_id": "r-1"})

    assert store.secrets.get("probe") == "written with a token"
    reader = QueueClient(endpoint.format(port=oauth_azurite["queue"]).rstrip("/"), REFERRAL_QUEUE,
                         credential=managed_identity, message_decode_policy=TextBase64DecodePolicy())
    message = reader.receive_message()
    assert message is not None and json.loads(message.content) == {"referral_id": "r-1"}
    assert managed_identity.scopes == {("https://storage.azure.com/.default",)}


def test_that_azurite_really_refuses_requests_without_a_token(oauth_azurite: dict[str, int]) -> None:
    # Guards the test above: if Azurite accepted anonymous calls, it would prove nothing about tokens.
    answer = requests.get(f"https://127.0.0.1:{oauth_azurite['table']}/{ACCOUNT}/Tables", timeout=10,
                          headers={"Accept": "application/json;odata=nometadata", "x-ms-version": "2019-02-02"})
    assert answer.status_code in (401, 403)


# --- the environment's network settings: read once, when a client is made ------------------------------------

def test_the_proxy_and_ca_bundle_for_an_endpoint_are_read_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:8080")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/inspecting-proxy.pem")
    options = transport_options("https://cosell.queue.core.windows.net")
    assert options["use_env_settings"] is False  # requests would read all of this again for every call
    assert options["proxies"]["https"] == "http://proxy.example:8080"
    assert options["connection_verify"] == "/etc/ssl/inspecting-proxy.pem"
    assert "proxies" not in transport_options("https://store.internal.example")  # NO_PROXY honoured


class _Proxy:
    """A forward proxy that answers 503 to everything and remembers the request lines it saw."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                request = connection.recv(65536).decode("latin-1")
                self.seen.append(request.split("\r\n", 1)[0])
                connection.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                   b"Connection: close\r\n\r\n")

    def close(self) -> None:
        self.server.close()


def test_a_queue_sender_uses_the_proxy_of_its_creation_and_reads_no_environment_after(
        azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = _Proxy()
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", proxy.url)
        proxied = QueueSender.from_connection_string(azurite)
        monkeypatch.delenv("http_proxy")
        direct = QueueSender.from_connection_string(azurite)
        monkeypatch.setenv("http_proxy", proxy.url)  # set again: a sender made without it must not notice

        direct.send(REFERRAL_QUEUE, {"referral_id": "direct"})
        assert proxy.seen == []
        with pytest.raises(Unavailable):
            proxied.send(REFERRAL_QUEUE, {"referral_id": "proxied"})
        assert proxy.seen and all(line.startswith("POST http://127.0.0.1:") for line in proxy.seen)
    finally:
        proxy.close()
