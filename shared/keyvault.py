"""The connector's own secrets in Azure Key Vault, for when it runs in Azure (`COSELL_KEYVAULT_URL`).

Why: Partner Center rotates the refresh token on every redemption and the newest one must survive a
restart, a redeployment and a new storage account, in the place operators already manage secrets. The
vault is read live on every `get` (not through an app-setting reference, which App Service resolves at
start-up and refreshes once a day), so a restarted or scaled-out instance never redeems a superseded token.

`KeyVaultSecrets` has the interface of the store's secrets table (`get(name) -> str | None`,
`put(name, value)`), so the Partner Center token code does not know which one it writes to
(`services().secrets` picks). Vault secret names allow only letters, digits and `-`: a name is lower-cased
and `_` becomes `-` (`partner_center_refresh_token` and `PARTNER_CENTER_REFRESH_TOKEN` are both
`partner-center-refresh-token`, the secret infra/main.bicep creates).

The app's identity may read every secret (Key Vault Secrets User) but write only the refresh token
(Key Vault Secrets Officer on that one secret): a refused write says which role is missing where.
Retries are the SDK pipeline's; errors become the connector's, with the vault's request id and never a
secret's value.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets import SecretClient

from shared.errors import ConfigError, Conflict, ConnectorError, InvalidInput, Throttled, Unavailable

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline.transport import HttpTransport

    from shared.settings import Settings

_VAULT_NAME = re.compile(r"^[0-9a-z-]{1,127}$")
# Fail within seconds when the vault cannot be reached; the token code reports it as Unavailable.
_CLIENT_OPTIONS = {"retry_total": 3, "retry_backoff_factor": 0.5, "connection_timeout": 5, "read_timeout": 30}


def vault_secret_name(name: str) -> str:
    """The vault's name for a connector secret name: lower case, `_` as `-`.

    Raises:
        InvalidInput: the name has characters a vault secret name cannot hold.
    """
    candidate = name.strip().lower().replace("_", "-")
    if not _VAULT_NAME.match(candidate):
        raise InvalidInput(
            f"{name!r} cannot be a Key Vault secret name (letters, digits, '-' and '_' only, at most 127)"
        )
    return candidate


class KeyVaultSecrets:
    """Connector secrets kept in one vault.

    Args:
        client: the vault's SecretClient (tests give one with a fake transport).
    """

    def __init__(self, client: SecretClient) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings, *, credential: TokenCredential | None = None,
                      transport: HttpTransport | None = None) -> KeyVaultSecrets:
        """The vault at `COSELL_KEYVAULT_URL`, reached with the app's managed identity.

        Args:
            settings: the connector's settings.
            credential: defaults to `DefaultAzureCredential` (managed identity in Azure, `az login` on a
                workstation).
            transport: an azure-core transport; tests answer the vault's REST calls with it.
        """
        url = settings.require("cosell_keyvault_url").strip()
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.netloc:
            raise ConfigError("setting COSELL_KEYVAULT_URL must be the vault's https:// URL "
                              "(https://<name>.vault.azure.net/)")
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        options: dict[str, Any] = dict(_CLIENT_OPTIONS)
        if transport is not None:
            options["transport"] = transport
        return cls(SecretClient(vault_url=url, credential=credential, **options))

    @property
    def vault_url(self) -> str:
        return self._client.vault_url

    def get(self, name: str) -> str | None:
        """The newest version of a secret, or None when the vault has no such secret."""
        vault_name = vault_secret_name(name)
        try:
            return self._client.get_secret(vault_name).value
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._error(exc, vault_name, "read") from None

    def put(self, name: str, value: str) -> None:
        """Write a new version of a secret; older versions stay in the vault's history."""
        vault_name = vault_secret_name(name)
        try:
            self._client.set_secret(vault_name, value, content_type="text/plain",
                                    tags={"written-by": "cosell-connector"})
        except AzureError as exc:
            raise self._error(exc, vault_name, "write") from None

    def _error(self, exc: AzureError, vault_name: str, action: str) -> ConnectorError:
        """The one place a vault failure becomes a connector error (never with a secret's value)."""
        where = f"Key Vault secret {vault_name!r} at {self.vault_url}"
        response = getattr(exc, "response", None)
        request_id = response.headers.get("x-ms-request-id") if response is not None else None
        status = getattr(exc, "status_code", None)
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            return Unavailable(f"could not {action} {where}: the vault is not reachable ({type(exc).__name__})")
        if isinstance(exc, ClientAuthenticationError) and status is None:
            # No HTTP answer: the credential itself could not get a token.
            return ConfigError(f"could not {action} {where}: no Azure credential is available (a managed "
                               "identity in Azure, `az login` on a workstation)")
        if status in (401, 403):
            role = "Key Vault Secrets Officer on that secret" if action == "write" else \
                "Key Vault Secrets User on the vault"
            return ConfigError(f"the app's identity may not {action} {where}: it needs {role} "
                               "(infra/modules/roles.bicep grants it)", request_id=request_id)
        if status == 429:
            retry_after = response.headers.get("Retry-After") if response is not None else None
            return Throttled(f"Key Vault throttled a {action} of {where}",
                             retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
                             request_id=request_id)
        if status == 409:
            return Conflict(f"could not {action} {where}: it is deleted but recoverable; recover it "
                            "(`az keyvault secret recover`) or purge it first", request_id=request_id)
        if isinstance(exc, HttpResponseError) and status is not None and 400 <= status < 500:
            return InvalidInput(f"Key Vault refused a {action} of {where} (HTTP {status})", request_id=request_id)
        return Unavailable(f"could not {action} {where}: Key Vault failed (HTTP {status})", request_id=request_id)


__all__ = ["KeyVaultSecrets", "vault_secret_name"]
