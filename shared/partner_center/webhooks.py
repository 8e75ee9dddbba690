"""`WebhookRegistrationClient`: the Partner Center webhook registration API (`/webhooks/v1/registration`).

Why a client of its own: another host, another token (app-only, resource api.partnercenter.microsoft.com),
and a registration that is one per partner tenant, so reading before writing matters (see
`shared/partner_center/registration.py` for the overwrite rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import requests

from shared.errors import NotFound
from shared.models.webhooks import ValidationEventStatus, WebhookRegistration
from shared.partner_center.token import AppOnlyToken
from shared.partner_center.transport import ApiTransport, RetryPolicy, TimeoutSession

if TYPE_CHECKING:
    from shared.settings import Settings


class WebhookRegistrationClient:
    """Register, view and update the tenant's webhook; list events; send the test event and read its status."""

    def __init__(self, transport: ApiTransport) -> None:
        self.transport = transport

    @classmethod
    def from_settings(cls, settings: Settings, *, session: requests.Session | None = None,
                      retry: RetryPolicy | None = None) -> WebhookRegistrationClient:
        session = session or TimeoutSession()
        transport = ApiTransport(settings.partner_center_webhooks_url, AppOnlyToken.from_settings(settings, session),
                                 session=session, rate_limit=settings.cosell_pc_rate_limit, retry=retry,
                                 api="Partner Center webhooks")
        return cls(transport)

    def get_registration(self) -> WebhookRegistration | None:
        """The current registration, or None when the tenant has none (404 or an empty answer)."""
        try:
            response = self.transport.request("GET", "registration")
        except NotFound:
            return None
        if not response.content:
            return None
        registration = WebhookRegistration.model_validate(response.json())
        return registration if registration.webhook_url else None

    def register(self, url: str, events: list[str]) -> WebhookRegistration:
        """Register `url` for `events`; this replaces any registration of the tenant (one URL per event).

        Repeating it gives the same result, so it is retried like an idempotent call.
        """
        body = WebhookRegistration(webhook_url=url, webhook_events=events).to_api()
        response = self.transport.request("POST", "registration", json=body, idempotent=True)
        return WebhookRegistration.model_validate(response.json())

    def update(self, url: str, events: list[str]) -> WebhookRegistration:
        """Change the registration's URL and events (`PUT`; there is no DELETE)."""
        body = WebhookRegistration(webhook_url=url, webhook_events=events).to_api()
        response = self.transport.request("PUT", "registration", json=body)
        return WebhookRegistration.model_validate(response.json())

    def list_events(self) -> list[str]:
        """The event names this partner may subscribe to."""
        return [str(name) for name in self.transport.request("GET", "registration/events").json()]

    def send_test_event(self) -> str:
        """Ask Partner Center to deliver a `test-created` event; returns its correlation id.

        Not retried after a failure (each call sends an event and the service allows two a minute).
        """
        response = self.transport.request("POST", "registration/validationEvents", idempotent=False)
        return str(response.json()["correlationId"])

    def get_test_status(self, correlation_id: str) -> ValidationEventStatus:
        """Delivery status of a test event: each attempt's response code."""
        response = self.transport.request("GET", f"registration/validationEvents/{correlation_id}")
        return ValidationEventStatus.model_validate(response.json())


__all__ = ["WebhookRegistrationClient"]
