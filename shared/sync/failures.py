"""What to do when a sync fails: retry later (and when), or stop and keep it as a dead letter.

Why here and not in host.json alone: the host's retries are immediate and blind. A throttled call should
wait as long as the service asked, a rejected request should not be retried at all, and a record that keeps
failing must end up with its reason where a person sees it. This is that decision, as a plain function.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.errors import (
    AuthExpired,
    ConfigError,
    ConnectorError,
    InvalidInput,
    LimitExceeded,
    NotFound,
    Throttled,
)

BASE_DELAY = 5.0
MAX_DELAY = 15 * 60.0
LIMIT_DELAY = 30 * 60.0
"""How long to wait after the Salesforce daily budget is hit before trying again."""


@dataclass(frozen=True)
class Retry:
    delay_seconds: float
    reason: str


@dataclass(frozen=True)
class GiveUp:
    reason: str


def backoff(attempt: int, *, base: float = BASE_DELAY, cap: float = MAX_DELAY, jitter: float = 0.2) -> float:
    """Exponential back-off with +-jitter: 5 s, 10 s, 20 s ... capped, so retries of many records spread out."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return max(0.0, delay * random.uniform(1 - jitter, 1 + jitter))


def decide(error: Exception, attempt: int, max_attempts: int) -> Retry | GiveUp:
    """Choose between retrying and giving up.

    Args:
        error: what the sync raised.
        attempt: the attempt that just failed, counting from 1.
        max_attempts: the `COSELL_MAX_ATTEMPTS` setting.

    Returns:
        `Retry` with a delay, or `GiveUp` with the reason to keep in the dead letter.
    """
    reason = describe(error)
    if isinstance(error, (InvalidInput, NotFound, AuthExpired, ConfigError)):
        return GiveUp(reason)  # the same request would fail the same way: a person must act
    if attempt >= max_attempts:
        return GiveUp(reason)
    if isinstance(error, LimitExceeded):
        return Retry(LIMIT_DELAY, reason)
    if isinstance(error, Throttled) and error.retry_after:
        return Retry(max(error.retry_after, backoff(attempt)), reason)
    return Retry(backoff(attempt), reason)  # throttled, unavailable, conflict, or a bug worth one more look


def describe(error: Exception) -> str:
    """A one-line reason fit for the Audit field and the status page (no stack trace, no secret)."""
    if isinstance(error, ConnectorError):
        return str(error)
    return f"unexpected {type(error).__name__}; see the function logs"


__all__ = ["GiveUp", "Retry", "backoff", "decide", "describe"]
