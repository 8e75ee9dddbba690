"""Partner Center: tokens, the referrals client, the webhook registration client, the signature check.

Imports msal, requests and cryptography: blueprint modules reach it through `shared.runtime.services()`.
"""

from shared.partner_center.referrals import PartnerCenterClient, PatchOperation, odata_filter, odata_quote
from shared.partner_center.signature import SIGNATURE_HEADERS, SignatureRejected, WebhookVerifier
from shared.partner_center.token import AppOnlyToken, RefreshTokenCredential
from shared.partner_center.transport import ApiTransport, RateLimiter, RetryPolicy, raise_for_response
from shared.partner_center.webhooks import WebhookRegistrationClient

__all__ = [
    "SIGNATURE_HEADERS",
    "ApiTransport",
    "AppOnlyToken",
    "PartnerCenterClient",
    "PatchOperation",
    "RateLimiter",
    "RefreshTokenCredential",
    "RetryPolicy",
    "SignatureRejected",
    "WebhookRegistrationClient",
    "WebhookVerifier",
    "odata_filter",
    "odata_quote",
    "raise_for_response",
]
