"""Payloads of the Partner Center webhook registration API (PascalCase registration, camelCase test status).

Unknown fields are kept, as everywhere Microsoft owns the schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class WebhookRegistration(BaseModel):
    """The tenant's one registration: which URL gets which events."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    webhook_url: str | None = Field(default=None, alias="WebhookUrl")
    webhook_events: list[str] = Field(default_factory=list, alias="WebhookEvents")
    subscriber_id: str | None = Field(default=None, alias="SubscriberId")

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class DeliveryAttempt(BaseModel):
    """One attempt to deliver the test event, as Partner Center reports it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    response_code: str | None = None
    response_message: str | None = None
    system_error: bool | None = None
    date_time_utc: str | None = None


class ValidationEventStatus(BaseModel):
    """The delivery status of a test event (`GET /registration/validationEvents/{correlationId}`)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    correlation_id: str
    partner_id: str | None = None
    status: str | None = None
    callback_url: str | None = None
    results: list[DeliveryAttempt] = Field(default_factory=list)

    @property
    def delivered(self) -> bool:
        """True when one attempt reached the receiver and it answered with a 2xx."""
        return any((r.response_code or "").lower() in ("ok", "accepted", "200", "202", "204") for r in self.results)


__all__ = ["DeliveryAttempt", "ValidationEventStatus", "WebhookRegistration"]
