"""The connector's errors, named by what they mean rather than by HTTP status.

Every remote API (Partner Center, Salesforce, Table Storage) maps its failures onto these in one place,
so the sync layer decides "retry, re-read, or give up" without knowing which service spoke.
Messages never carry secrets or whole records: ids and request ids only.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose.

    Attributes:
        request_id: the remote service's request id, when there was one (what support asks for).
    """

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        if self.request_id:
            return f"{self.message} (request-id {self.request_id})"
        return self.message


class ConfigError(ConnectorError):
    """A setting, a settings file or the mapping file is missing or malformed."""


class InvalidInput(ConnectorError):
    """The caller sent something the service (or the connector) refuses: fix the input, do not retry."""


class UnreadableRecord(InvalidInput):
    """The service sent a record in a shape the connector cannot read: retrying reads the same; a person
    must look (the reason names the fields, never their values)."""


class NotFound(ConnectorError):
    """The record does not exist (any more)."""


class AlreadyExists(ConnectorError):
    """A create met an existing record with the same key."""


class Conflict(ConnectorError):
    """Someone else changed the record since it was read (ETag / If-Match failed): re-read and re-merge."""


class Throttled(ConnectorError):
    """The service asked us to slow down; `retry_after` is how many seconds it asked for."""

    def __init__(self, message: str, *, retry_after: float | None = None, request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.retry_after = retry_after


class Unavailable(ConnectorError):
    """The service failed or could not be reached (5xx, timeout, connection refused): retry later."""


class AuthExpired(ConnectorError):
    """Credentials were refused even after one refresh: a person must renew them."""


class MfaRequired(AuthExpired):
    """Partner Center refused a token whose sign-in carried no MFA claim (error 900421)."""


class LimitExceeded(ConnectorError):
    """A daily quota (Salesforce API budget) is used up: stop non-urgent work until it resets."""


__all__ = [
    "AlreadyExists",
    "AuthExpired",
    "ConfigError",
    "Conflict",
    "ConnectorError",
    "InvalidInput",
    "LimitExceeded",
    "MfaRequired",
    "NotFound",
    "Throttled",
    "Unavailable",
    "UnreadableRecord",
]
