"""The connector's settings: the contract's environment variables as one typed model.

Why lazy and forgiving at load: a webhook receiver should not fail because a Salesforce password is
missing. Every field is optional at load; the code that needs one calls `require(...)` and gets a single
line naming the setting. A malformed value (a bool that is not a bool, a bad URL) fails at the first
`get_settings()` with one line per bad setting, never a stack trace of pydantic internals, and never the
value of a secret.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError

APP_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding function_app.py: relative paths in settings (the mapping file) start here."""

PUSH_POLL_SCHEDULE = "0 */15 * * * *"
"""The Salesforce poll's default when Salesforce pushes changes (SALESFORCE_ORG_ID set): a safety net."""

KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
"""How an app setting that App Service resolves from Key Vault starts (infra/main.bicep writes them)."""


class Settings(BaseSettings):
    """Every setting of the architecture contract, plus the connector's own knobs.

    Field names are the environment variable names in lower case (matching is case-insensitive).
    """

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    # Partner Center
    partner_center_tenant_id: str | None = None
    partner_center_client_id: str | None = None
    partner_center_client_secret: SecretStr | None = None
    partner_center_refresh_token: SecretStr | None = None
    partner_center_api_url: str = "https://api.partner.microsoft.com/v1.0/engagements"
    partner_center_webhooks_url: str = "https://api.partnercenter.microsoft.com/webhooks/v1"
    partner_center_authority: str = "https://login.microsoftonline.com"
    partner_center_webhook_cert_hosts: str = "3psostorageacct.blob.core.windows.net"
    """Hosts a webhook signing certificate may come from. The default is the host Microsoft's webhook
    reference shows in X-MS-Certificate-Url; a `*.blob.core.windows.net` wildcard would admit any storage
    account, anyone's."""
    partner_center_webhook_ca_bundle: str | None = None

    # Salesforce
    salesforce_login_url: str = "https://login.salesforce.com"
    salesforce_username: str | None = None
    salesforce_client_id: str | None = None
    salesforce_private_key: SecretStr | None = None
    salesforce_client_secret: SecretStr | None = None
    salesforce_password: SecretStr | None = None
    salesforce_security_token: SecretStr | None = None
    salesforce_api_version: str = "64.0"
    salesforce_org_id: str | None = None
    """The org whose Outbound Messages are accepted (Setup > Company Information > Salesforce.com
    Organization ID). Set, it also means push is configured: the poll's default becomes every 15 minutes."""

    # The connector
    cosell_storage: SecretStr | None = None
    """The connector's storage account; empty means the same as AzureWebJobsStorage (see `storage`)."""
    azurewebjobsstorage: SecretStr | None = None
    cosell_mapping_file: str = "mappings/salesforce.json"
    cosell_sf_poll_schedule: str = "0 */1 * * * *"
    cosell_pc_reconcile_schedule: str = "0 */15 * * * *"
    cosell_dry_run: bool = False
    cosell_local_function_key: SecretStr | None = None
    cosell_webhook_function_key: SecretStr | None = None
    """The events function's key, added as ?code= to the default webhook URL (Azure: the function key)."""
    cosell_public_url: str | None = None
    """Base URL of this app as Partner Center reaches it (defaults to https://$WEBSITE_HOSTNAME)."""
    cosell_webhook_forward_urls: str = ""
    """Comma-separated URLs that get every verified Partner Center event relayed, unchanged."""
    cosell_pc_rate_limit: float = Field(default=10.0, gt=0)
    """Client-side ceiling on Partner Center calls per second (Microsoft publishes no limit)."""
    cosell_sf_budget_share: float = Field(default=0.8, gt=0, le=1)
    """Stop non-urgent Salesforce work once this share of the org's daily API limit is used."""
    cosell_sf_poll_overlap_seconds: int = Field(default=300, ge=0)
    """Look-back of each Salesforce poll: rows that commit this late with an earlier SystemModstamp are still seen."""
    cosell_max_attempts: int = Field(default=5, ge=1)
    """Sync attempts for one record before it goes to the dead letters."""
    website_hostname: str | None = None
    cosell_storage__accountname: str | None = None
    """COSELL_STORAGE__accountName: reach the connector's tables and queues with the app's managed identity
    instead of a key, spelled as the Functions runtime's identity-based connections (shared/store/connection.py)."""
    cosell_storage__tableserviceuri: str | None = None
    """COSELL_STORAGE__tableServiceUri: the Table endpoint of that identity-based connection (other clouds)."""
    cosell_storage__queueserviceuri: str | None = None
    """COSELL_STORAGE__queueServiceUri: the Queue endpoint of that identity-based connection."""
    cosell_keyvault_url: str | None = None
    """Key Vault URL: when set, the connector keeps its own secrets (the rotated Partner Center refresh token)
    there instead of in Table Storage (shared/keyvault.py)."""

    @field_validator("partner_center_api_url", "partner_center_webhooks_url", "partner_center_authority",
                     "salesforce_login_url")
    @classmethod
    def _https_base_url(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _unresolved_key_vault_references_are_unset(cls, data: Any) -> Any:
        """App Service passes an app setting whose Key Vault reference it could not resolve (secret not set
        yet, role not granted yet) as the reference's own text: read that as unset, never as the secret."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items()
                    if not (isinstance(value, str) and value.startswith(KEY_VAULT_REFERENCE))}
        return data

    def require(self, name: str) -> Any:
        """Return a setting that this code path cannot do without, or say plainly which one is missing.

        Args:
            name: the field name (lower case) or the environment variable name.

        Returns:
            The value; secrets come back as plain `str` so the caller does not unwrap them by hand.
        """
        field = name.lower()
        value = getattr(self, field)
        if value is None or value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
            raise ConfigError(
                f"setting {field.upper()} is not set: add it to local.settings.json (Values) "
                "or the Function App's application settings"
            )
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    @property
    def poll_schedule(self) -> str:
        """The Salesforce poll's schedule: COSELL_SF_POLL_SCHEDULE when set; else every minute, or every 15
        minutes once push is configured (SALESFORCE_ORG_ID), the poll then being only the safety net.
        infra/main.bicep writes the same default into the app setting the timer binding reads."""
        if "cosell_sf_poll_schedule" in self.model_fields_set and self.cosell_sf_poll_schedule.strip():
            return self.cosell_sf_poll_schedule
        return PUSH_POLL_SCHEDULE if self.salesforce_org_id else self.cosell_sf_poll_schedule

    @property
    def forward_urls(self) -> list[str]:
        return [url.strip() for url in self.cosell_webhook_forward_urls.split(",") if url.strip()]

    @property
    def webhook_cert_hosts(self) -> list[str]:
        return [h.strip().lower() for h in self.partner_center_webhook_cert_hosts.split(",") if h.strip()]

    @property
    def mapping_path(self) -> Path:
        path = Path(self.cosell_mapping_file)
        return path if path.is_absolute() else APP_ROOT / path

    @property
    def public_url(self) -> str | None:
        if self.cosell_public_url:
            return self.cosell_public_url.rstrip("/")
        if self.website_hostname:
            return f"https://{self.website_hostname}"
        return None


def _describe(error: dict[str, Any]) -> str:
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    return f"setting {name.upper()}: {error['msg']}"


def load_settings() -> Settings:
    """Build the settings from the environment, turning validation errors into one `ConfigError`."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors(include_input=False, include_url=False))
        raise ConfigError(problems) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once (Functions workers keep the process between invocations)."""
    return load_settings()


def load_local_settings(path: Path) -> dict[str, str]:
    """Copy `Values` of a `local.settings.json` into the environment, as `func start` does.

    Variables already set in the environment win, so a test or a shell can override a file value.

    Returns:
        The values read from the file (empty when the file does not exist).
    """
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}): fix it or copy local.settings.example.json") from None
    values = document.get("Values") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} has no \"Values\" object: copy local.settings.example.json and edit it")
    loaded = {str(key): "" if value is None else str(value) for key, value in values.items()}
    for key, value in loaded.items():
        os.environ.setdefault(key, value)
    return loaded


__all__ = ["APP_ROOT", "Settings", "get_settings", "load_local_settings", "load_settings"]
