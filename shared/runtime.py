"""The lazily built, process-wide clients the functions share.

Why lazy: `function_app.py` must import fast (cold start), and a route that only needs storage must not
fail because a Salesforce setting is missing. Each client is built on first use and then reused across
invocations, as the Functions worker keeps the process alive.
"""

from __future__ import annotations

import functools
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.sync.engine import SyncEngine
    from shared.partner_center import PartnerCenterClient, WebhookRegistrationClient, WebhookVerifier
    from shared.settings import Settings
    from shared.keyvault import KeyVaultSecrets
    from shared.mapping import Mapping
    from shared.salesforce import SalesforceClient
    from shared.store import QueueSender, SecretStore, Store


class Services:
    """Everything a trigger needs, built on first use."""

    @cached_property
    def settings(self) -> Settings:
        from shared.settings import get_settings

        return get_settings()

    @cached_property
    def store(self) -> Store:
        from shared.store import Store

        return Store.from_settings(self.settings)

    @cached_property
    def queues(self) -> QueueSender:
        from shared.store import QueueSender

        return QueueSender.from_settings(self.settings)

    @cached_property
    def secrets(self) -> KeyVaultSecrets | SecretStore:
        """Where the connector keeps its own secrets (the rotated Partner Center refresh token): the Key Vault
        at COSELL_KEYVAULT_URL when set (Azure), else the store's secrets table."""
        if self.settings.cosell_keyvault_url:
            from shared.keyvault import KeyVaultSecrets

            return KeyVaultSecrets.from_settings(self.settings)
        return self.store.secrets

    @cached_property
    def partner_center(self) -> PartnerCenterClient:
        from shared.partner_center import PartnerCenterClient

        return PartnerCenterClient.from_settings(self.settings, store=self.store, secrets=self.secrets)

    @cached_property
    def webhooks(self) -> WebhookRegistrationClient:
        from shared.partner_center import WebhookRegistrationClient

        return WebhookRegistrationClient.from_settings(self.settings)

    @cached_property
    def webhook_verifier(self) -> WebhookVerifier:
        """Kept for the process so fetched signing certificates stay cached between deliveries."""
        from shared.partner_center import WebhookVerifier

        return WebhookVerifier.from_settings(self.settings)

    @cached_property
    def salesforce(self) -> SalesforceClient:
        """Kept for the process: the session, the token and the org's describe are reused across invocations."""
        from shared.salesforce import SalesforceClient

        return SalesforceClient.from_settings(self.settings, store=self.store)

    @cached_property
    def mapping(self) -> Mapping:
        """The mapping file, checked against the org's describe (read once), so a field the org lacks fails
        loudly at the first sync instead of in every one; CurrencyIsoCode is mapped only where it exists."""
        from shared.mapping import Mapping

        return Mapping.load(self.settings.mapping_path, describe=self.salesforce.org_schema)

    @cached_property
    def sync_engine(self) -> SyncEngine:
        from shared.sync.engine import SyncEngine

        return SyncEngine.from_services(self)


@functools.cache
def services() -> Services:
    """The one `Services` of this process (tests call `services.cache_clear()` to start over)."""
    return Services()


__all__ = ["Services", "services"]
