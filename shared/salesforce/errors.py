"""The one place that turns a Salesforce failure into a connector error.

Salesforce answers errors as `[{"errorCode": ..., "message": ...}]` (a call) or per record
`{"statusCode": ..., "message": ..., "fields": [...]}` (Collections, composite). Both come through
`error_for`, so the sync layer sees the same meaning whichever way a failure arrived: retry later
(`Unavailable`), stop non-urgent work (`LimitExceeded`), fix the input (`InvalidInput`), or fix the setup
(`ConfigError`). Messages keep Salesforce's error code and a short message; Salesforce sometimes quotes the
offending value, so the message is cut short rather than carrying a whole field of customer text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.errors import (
    AlreadyExists,
    AuthExpired,
    ConfigError,
    Conflict,
    ConnectorError,
    InvalidInput,
    LimitExceeded,
    NotFound,
    Throttled,
    Unavailable,
)

if TYPE_CHECKING:
    from shared.salesforce.budget import ApiUsage

LOCK_ERROR = "UNABLE_TO_LOCK_ROW"
"""Another transaction holds the row: the write did not happen and may be retried."""

HALTED = "PROCESSING_HALTED"
"""A composite subrequest that did not run because an earlier one failed."""

MESSAGE_LIMIT = 200
CONCURRENCY_RETRY = 20.0
"""Seconds to wait after Salesforce refused a call for too many concurrent long-running requests."""

_NOT_FOUND = {"NOT_FOUND", "ENTITY_IS_DELETED"}
_DUPLICATE = {"DUPLICATE_VALUE", "DUPLICATE_EXTERNAL_ID", "DUPLICATES_DETECTED"}
_SETUP = {"INSUFFICIENT_ACCESS", "INSUFFICIENT_ACCESS_OR_READONLY", "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
          "API_DISABLED_FOR_ORG", "API_CURRENTLY_DISABLED", "FUNCTIONALITY_NOT_ENABLED"}


def first_error(content: Any) -> tuple[str, str]:
    """(error code, message) of any error body Salesforce (or a proxy in front of it) sends."""
    item = content[0] if isinstance(content, list) and content else content
    if isinstance(item, Mapping):
        code = item.get("errorCode") or item.get("statusCode") or item.get("error") or "UNKNOWN"
        message = item.get("message") or item.get("error_description") or ""
        return str(code), str(message)
    return "UNKNOWN", str(item or "")


def error_for(status: int, content: Any, *, what: str, usage: ApiUsage | None = None) -> ConnectorError:
    """The connector error for a Salesforce failure.

    Args:
        status: the HTTP status (400 for a per-record error, which carries none of its own).
        content: the error body (list, dict or text).
        what: the operation, for the message (`upsert Opportunity`, `query`); never record data.
        usage: the org's API usage as the failed answer itself reported it (`Sforce-Limit-Info`), if it did.
            `REQUEST_LIMIT_EXCEEDED` is also Salesforce's answer when the org already runs 25 long requests
            at once: with calls left in the daily limit, that is a short wait, not a spent budget.
    """
    code, message = first_error(content)
    if len(message) > MESSAGE_LIMIT:
        message = message[:MESSAGE_LIMIT] + "..."
    text = f"Salesforce {what}: {code} {message}".rstrip()
    if code == "REQUEST_LIMIT_EXCEEDED":
        if usage is not None and usage.used < usage.limit:
            return Throttled(f"{text}: {usage.used} of {usage.limit} daily calls are used, so the daily limit is "
                             "not the cause: the org runs too many long requests at once (Salesforce allows 25); "
                             "trying again shortly", retry_after=CONCURRENCY_RETRY)
        return LimitExceeded(f"{text}: the org's daily API limit is used up; work resumes when it resets")
    if status == 401 or code == "INVALID_SESSION_ID":
        return AuthExpired(f"{text}: the session was refused even after logging in again")
    if code == LOCK_ERROR or status >= 500:
        return Unavailable(text)
    if status == 429:
        return Throttled(text)
    if status in (409, 412):
        return Conflict(text)
    if status == 404 or code in _NOT_FOUND:
        return NotFound(text)
    if code in _DUPLICATE:
        return AlreadyExists(text)
    if status == 403 or code in _SETUP:
        return ConfigError(f"{text}: give the integration user the Partner_Center_Co_sell_Integration "
                           "permission set (salesforce/README.md)")
    if status == 300:
        return InvalidInput(f"{text}: more than one record has that external id")
    return InvalidInput(text)


__all__ = ["CONCURRENCY_RETRY", "HALTED", "LOCK_ERROR", "error_for", "first_error"]
