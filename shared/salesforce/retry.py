"""The Salesforce retry policy: what is retried, how often, how long to wait. One object, two layers.

What is retried:
- 5xx answers, in the transport (a urllib3 `Retry` on the session), for idempotent methods (GET, PATCH,
  PUT, DELETE: queries, updates, upserts by external id). A POST (creates, composite) is retried only on
  503, Salesforce's "not taken" answer: a 500 after a create may mean the record exists.
- `UNABLE_TO_LOCK_ROW`, in the client: the write did not happen (another transaction held the row), so
  re-sending it is safe; for Collections and composite only the locked records are re-sent.
What is not: `REQUEST_LIMIT_EXCEEDED` (the daily limit does not reset by waiting seconds: raise
`LimitExceeded` and let the caller stop), and every 4xx but the lock.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
RETRY_STATUSES = frozenset({500, 502, 503, 504})


class _SalesforceRetry(Retry):
    """urllib3's Retry, plus POST on 503 only (see the module docstring)."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() == "POST" and status_code == 503:
            return True
        return super().is_retry(method, status_code, has_retry_after)


class _Adapter(HTTPAdapter):
    """HTTPAdapter with a default timeout: a request without one could hang a function until it is killed."""

    def __init__(self, *, timeout: float, max_retries: Retry) -> None:
        super().__init__(max_retries=max_retries)
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RetryPolicy:
    """How persistently to retry.

    Attributes:
        attempts: retries after the first try (per call for 5xx, per record for locks).
        backoff: the first wait in seconds; doubled each time, with +-25 % jitter.
        max_backoff: the longest single wait.
        timeout: seconds to wait for a connection and for an answer.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    timeout: float = 30.0

    def transport(self) -> Retry:
        """The urllib3 Retry for 5xx and connection failures."""
        return _SalesforceRetry(
            total=self.attempts, connect=self.attempts, read=self.attempts, status=self.attempts, other=0,
            allowed_methods=IDEMPOTENT, status_forcelist=RETRY_STATUSES, backoff_factor=self.backoff,
            backoff_max=self.max_backoff, backoff_jitter=self.backoff / 4, raise_on_status=False,
            respect_retry_after_header=True,
        )

    def session(self) -> requests.Session:
        """A new requests Session with the transport retries and the default timeout mounted."""
        session = requests.Session()
        adapter = _Adapter(timeout=self.timeout, max_retries=self.transport())
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def delays(self) -> Iterator[float]:
        """The waits before each lock retry: `attempts` of them, growing, jittered."""
        for attempt in range(self.attempts):
            delay = min(self.max_backoff, self.backoff * (2 ** attempt))
            yield delay * random.uniform(0.75, 1.25)


__all__ = ["IDEMPOTENT", "RETRY_STATUSES", "RetryPolicy"]
