"""The Partner Center webhook event: a hint that a resource changed, carrying no referral data.

Why the model is thin: events may be duplicated, delayed, reordered or lost, so the connector only takes
the referral id out of `ResourceUri` and reads the referral itself. Unknown fields are kept, and the event
name is an open enum (an event name Microsoft adds parses, then is refused as "not a referral event" by the
receiver instead of crashing it).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.models.apitypes import ApiDateTime


class WebhookEventName(StrEnum):
    REFERRAL_CREATED = "referral-created"
    REFERRAL_UPDATED = "referral-updated"
    RELATED_REFERRAL_CREATED = "related-referral-created"
    RELATED_REFERRAL_UPDATED = "related-referral-updated"
    TEST_CREATED = "test-created"


REFERRAL_EVENTS = frozenset(
    {
        WebhookEventName.REFERRAL_CREATED,
        WebhookEventName.REFERRAL_UPDATED,
        WebhookEventName.RELATED_REFERRAL_CREATED,
        WebhookEventName.RELATED_REFERRAL_UPDATED,
    }
)
"""The events the connector subscribes to and acts on (`test-created` only proves delivery)."""

OpenEventName = Annotated[WebhookEventName | str, Field(union_mode="left_to_right")]

_REFERRAL_ID = re.compile(r"/referrals/([A-Za-z0-9][A-Za-z0-9._~-]{0,127})/?$")


class WebhookEvent(BaseModel):
    """The JSON body of one webhook delivery (PascalCase on the wire)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    event_name: OpenEventName = Field(alias="EventName")
    resource_uri: str | None = Field(default=None, alias="ResourceUri")
    resource_name: str | None = Field(default=None, alias="ResourceName")
    audit_uri: str | None = Field(default=None, alias="AuditUri")
    resource_change_utc_date: ApiDateTime | None = Field(default=None, alias="ResourceChangeUtcDate")

    @property
    def referral_id(self) -> str | None:
        """The referral's id, the last segment of a `.../referrals/{id}` ResourceUri (None otherwise)."""
        if not self.resource_uri:
            return None
        match = _REFERRAL_ID.search(self.resource_uri.split("?", 1)[0])
        return match.group(1) if match else None

    @property
    def is_referral_event(self) -> bool:
        """True for a referral event that names a referral: the only kind the connector enqueues."""
        return self.event_name in REFERRAL_EVENTS and self.referral_id is not None

    @property
    def is_test(self) -> bool:
        return self.event_name == WebhookEventName.TEST_CREATED

    def to_api(self) -> dict[str, Any]:
        """The event as Partner Center sends it (PascalCase, unknown fields kept)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


__all__ = ["REFERRAL_EVENTS", "WebhookEvent", "WebhookEventName"]
