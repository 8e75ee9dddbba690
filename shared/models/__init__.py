"""Pydantic models at the connector's boundaries: Partner Center payloads and the connector's own records.

Importing this package loads pydantic: blueprint modules import it inside function bodies only.
"""

from shared.models.apitypes import ApiDateTime, format_api_datetime
from shared.models.events import REFERRAL_EVENTS, WebhookEvent, WebhookEventName
from shared.models.referral import (
    AssistanceRequestCode,
    Consent,
    CustomerProfile,
    Direction,
    InviteContext,
    Member,
    Organization,
    Qualification,
    Referral,
    ReferralDetails,
    ReferralPage,
    ReferralStatus,
    ReferralSubstatus,
    ReferralType,
    RequirementItem,
    Requirements,
    Solution,
)
from shared.models.webhooks import DeliveryAttempt, ValidationEventStatus, WebhookRegistration

__all__ = [
    # Partner Center payloads
    "ApiDateTime",
    "AssistanceRequestCode",
    "Consent",
    "DeliveryAttempt",
    "CustomerProfile",
    "Direction",
    "InviteContext",
    "Member",
    "Organization",
    "Qualification",
    "REFERRAL_EVENTS",
    "Referral",
    "ReferralDetails",
    "ReferralPage",
    "ReferralStatus",
    "ReferralSubstatus",
    "ReferralType",
    "RequirementItem",
    "Requirements",
    "Solution",
    "ValidationEventStatus",
    "WebhookEvent",
    "WebhookEventName",
    "WebhookRegistration",
    "format_api_datetime",
]
