"""Which storage account the connector's tables and queues live in, and how to sign in to it.

Why one function: the tables (`Store`) and the queues (`QueueSender`) must reach the same account the same
way, and the answer has to match what the Functions host does for the queue triggers' `COSELL_STORAGE`
connection. The host reads a connection as either a connection string (`COSELL_STORAGE`) or, without a
key, an identity-based connection spelled `COSELL_STORAGE__accountName` / `__tableServiceUri` /
`__queueServiceUri`; a connection string wins. Only when neither exists does the connector fall back to the
host's own `AzureWebJobsStorage` connection string (local development with Azurite).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from requests.utils import get_environ_proxies

from shared.errors import ConfigError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.settings import Settings

_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")


@dataclass(frozen=True)
class StorageTarget:
    """Either a connection string, or the two service endpoints to reach with a token credential."""

    connection_string: str | None = None
    table_url: str | None = None
    queue_url: str | None = None

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


def storage_target(settings: Settings) -> StorageTarget:
    """Decide how to reach the connector's storage.

    Order, as the Functions host resolves the `COSELL_STORAGE` connection: the `COSELL_STORAGE` connection
    string; else the identity-based `COSELL_STORAGE__*` settings (explicit endpoints win over the ones
    derived from the account name); else the `AzureWebJobsStorage` connection string.

    Raises:
        ConfigError: nothing is configured, or the identity-based settings are incomplete or malformed.
    """
    connection_string = _secret(settings.cosell_storage)
    if connection_string:
        return StorageTarget(connection_string=_usable("COSELL_STORAGE", connection_string))

    account = (settings.cosell_storage__accountname or "").strip()
    table_url = (settings.cosell_storage__tableserviceuri or "").strip()
    queue_url = (settings.cosell_storage__queueserviceuri or "").strip()
    if account or table_url or queue_url:
        if account and not _ACCOUNT_NAME.match(account):
            raise ConfigError(
                "setting COSELL_STORAGE__accountName must be a storage account name "
                "(3-24 lower-case letters and digits)"
            )
        table_url = table_url or (f"https://{account}.table.core.windows.net" if account else "")
        queue_url = queue_url or (f"https://{account}.queue.core.windows.net" if account else "")
        missing = [name for name, url in (("COSELL_STORAGE__tableServiceUri", table_url),
                                          ("COSELL_STORAGE__queueServiceUri", queue_url)) if not url]
        if missing:
            raise ConfigError(
                f"setting {' and '.join(missing)} is not set: with an identity-based COSELL_STORAGE connection "
                "set COSELL_STORAGE__accountName, or both service URIs"
            )
        return StorageTarget(table_url=_https_endpoint("COSELL_STORAGE__tableServiceUri", table_url),
                             queue_url=_https_endpoint("COSELL_STORAGE__queueServiceUri", queue_url))

    host_connection_string = _secret(settings.azurewebjobsstorage)
    if host_connection_string:
        return StorageTarget(connection_string=_usable("AzureWebJobsStorage", host_connection_string))
    raise ConfigError(
        "storage is not configured: set COSELL_STORAGE (or AzureWebJobsStorage) to a connection string, "
        "or COSELL_STORAGE__accountName to reach the account with the app's managed identity"
    )


@functools.cache
def storage_credential() -> TokenCredential:
    """The process's credential for identity-based storage: the managed identity in Azure, a developer's
    `az login` on a workstation. One instance, so its token cache is shared by tables and queues."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def transport_options(endpoint: str) -> dict[str, Any]:
    """The environment's network settings for a Storage client, read once, when the client is made.

    Why: left to itself, requests reads them again for every call (HTTP(S)_PROXY and NO_PROXY by walking all of
    `os.environ` twice, the CA bundle, ~/.netrc): measured, 0.5 of a queue message's 2.7 ms of CPU in the webhook
    receiver. The proxy that applies to `endpoint` (NO_PROXY honoured) and a `REQUESTS_CA_BUNDLE` or
    `CURL_CA_BUNDLE` are passed on as the transport's own settings; ~/.netrc credentials never belong on a
    storage request.
    """
    options: dict[str, Any] = {"use_env_settings": False}
    if proxies := get_environ_proxies(endpoint):
        options["proxies"] = proxies
    if bundle := os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"):
        options["connection_verify"] = bundle
    return options


def _secret(value: object) -> str:
    getter = getattr(value, "get_secret_value", None)
    return (getter() if getter else str(value or "")).strip()


def _usable(setting: str, connection_string: str) -> str:
    """The connection string, when the Storage SDKs can use it; else one line naming the setting, never its value.

    Why check here: the SDKs say only "blank or malformed" (no setting named) when a client is made, and an
    AccountKey that is not base64 fails at the first signed request, deep inside the table and queue code.
    """
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    try:
        TableServiceClient.from_connection_string(connection_string)
        QueueServiceClient.from_connection_string(connection_string)
    except ValueError:
        raise ConfigError(f"setting {setting} is not a storage connection string: copy one from the storage "
                          "account's Access keys (UseDevelopmentStorage=true for Azurite)") from None
    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    key = next((value for name, value in parts.items() if name.strip().lower() == "accountkey"), None)
    try:
        if key is not None:
            base64.b64decode(key.strip(), validate=True)
    except binascii.Error:
        raise ConfigError(f"setting {setting}: its AccountKey is not base64: copy the key again from the storage "
                          "account's Access keys") from None
    return connection_string


def _https_endpoint(setting: str, url: str) -> str:
    # A bearer token is only ever sent over HTTPS (azure-core refuses otherwise), so say so at start-up.
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise ConfigError(f"setting {setting} must be an https:// URL of the storage service")
    return url.rstrip("/")


__all__ = ["StorageTarget", "storage_credential", "storage_target", "transport_options"]
