"""The one way the connector talks HTTP to Partner Center: retries, throttling, errors and tracing.

Why one transport for both Partner Center APIs: every rule of the handbook about failure lives here once.

- `raise_for_response()` is the only place that turns a status into a connector error.
- `ApiTransport.request()` is the only place that retries: 429 honouring `Retry-After`; 5xx and connection
  errors with jittered exponential backoff, capped, for idempotent calls only (GET, PUT, PATCH with
  If-Match, or a call the caller declares idempotent); never a create. A 429 is retried for any method,
  because the service refused it before doing anything. A 401 refreshes the token once; a 401 carrying
  error `900421` (no MFA claim) stops at once with `MfaRequired`.
- Every call sends a fresh `client-request-id` and logs the `request-id` that comes back: the two numbers
  Microsoft support asks for. Tokens and bodies are never logged.
- A client-side rate limit (token bucket), because Microsoft publishes no per-endpoint limits.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests

from shared.errors import (
    AlreadyExists,
    AuthExpired,
    Conflict,
    ConnectorError,
    InvalidInput,
    MfaRequired,
    NotFound,
    Throttled,
    Unavailable,
)

log = logging.getLogger("shared.partner_center")

MFA_ERROR_CODE = "900421"
MFA_MESSAGE = (
    "Partner Center refused the token because its sign-in carried no MFA claim (error 900421): "
    "create a new refresh token by signing in with multi-factor authentication as the Referrals admin "
    "user, store it in PARTNER_CENTER_REFRESH_TOKEN, and restart the sync"
)
DEFAULT_TIMEOUT = (5.0, 30.0)
"""Connect and read timeouts for every call (a hung call would hold a Functions worker forever)."""


class TokenSource(Protocol):
    """What the transport needs from a credential: a bearer token, and a way to drop a refused one."""

    def token(self) -> str: ...

    def invalidate(self) -> None: ...


class TimeoutSession(requests.Session):
    """A `requests.Session` with a default timeout, for code (MSAL) that passes none."""

    def __init__(self, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Small values in tests keep waits tiny; production defaults are the handbook's.

    Attributes:
        max_attempts: attempts in total, the first included.
        backoff_base: seconds of the first backoff ceiling; doubles each attempt (the wait is drawn
            between half the ceiling and the ceiling, so instances that failed together spread out).
        backoff_cap: the ceiling no backoff exceeds.
        max_retry_after: a `Retry-After` longer than this is not slept through: `Throttled` goes to the
            caller (a queue message is better re-tried later than a worker held for minutes).
    """

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    max_retry_after: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Jittered exponential backoff before retry number `attempt` (1-based)."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    def throttle_wait(self, retry_after: float | None, attempt: int) -> float:
        """The wait after a 429: what the service asked for plus a little jitter, or the backoff."""
        if retry_after is None:
            return self.backoff(attempt)
        return retry_after + random.uniform(0, min(1.0, self.backoff_base))


class RateLimiter:
    """A thread-safe token bucket: at most `rate` calls a second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one call's token, sleeping until one is free; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait:
            self._sleep(wait)
        return wait


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare here; the backoff applies instead


def _error_text(response: requests.Response) -> str:
    """A short, record-free description of an error body: the service's code and message, trimmed."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            body = error
        parts = [str(body.get(key)) for key in ("code", "error", "message", "error_description", "description")
                 if isinstance(body.get(key), (str, int))]
        if parts:
            return ": ".join(dict.fromkeys(parts))[:300]
    return ""


def is_mfa_refusal(response: requests.Response) -> bool:
    """True for a 401 whose body or WWW-Authenticate names error 900421 (sign-in without MFA)."""
    if response.status_code != 401:
        return False
    return MFA_ERROR_CODE in response.text or MFA_ERROR_CODE in response.headers.get("WWW-Authenticate", "")


def raise_for_response(response: requests.Response, *, api: str = "Partner Center") -> None:
    """The one place that maps a Partner Center status to a connector error; 2xx returns quietly.

    Args:
        response: the answer to check.
        api: the service's name for the message.
    """
    status = response.status_code
    if status < 400:
        return
    request_id = response.headers.get("request-id") or response.headers.get("MS-RequestId")
    method = response.request.method if response.request is not None else "?"
    path = urlsplit(response.url).path if response.url else "?"
    detail = _error_text(response)
    message = f"{api} {method} {path} answered {status}" + (f": {detail}" if detail else "")
    error: ConnectorError
    if status == 401 and is_mfa_refusal(response):
        error = MfaRequired(MFA_MESSAGE, request_id=request_id)
    elif status in (401, 403):
        error = AuthExpired(
            message + " (check that the refresh token's user still has the Referrals admin role "
            "and that the app registration is consented)", request_id=request_id)
    elif status == 404:
        error = NotFound(message, request_id=request_id)
    elif status == 409:
        error = AlreadyExists(message, request_id=request_id)
    elif status == 412:
        error = Conflict(message + " (the referral changed since it was read: re-read and re-merge)",
                         request_id=request_id)
    elif status == 429:
        error = Throttled(message, retry_after=_retry_after(response), request_id=request_id)
    elif status >= 500:
        error = Unavailable(message, request_id=request_id)
    else:
        error = InvalidInput(message, request_id=request_id)
    raise error


def resolve_link(base_url: str, link: str) -> str:
    """A link the service returned, on the configured base's scheme, host and path.

    Why: the reference's nextLink reads `http://api.partner.microsoft.com/v1.0/referrals?$skiptoken=...`:
    another scheme, and a path without the base's `/engagements`. Its host is never trusted, and the part
    of its path the base does not already hold (`/referrals`) is put under the base's path: the segments the
    two paths share at the start (`/v1.0`) are the API's, not the resource's.

    Args:
        base_url: the configured base, e.g. `https://api.partner.microsoft.com/v1.0/engagements`.
        link: the absolute link the service returned.
    """
    base, parts = urlsplit(base_url.rstrip("/")), urlsplit(link)
    base_segments = [s for s in base.path.split("/") if s]
    link_segments = [s for s in parts.path.split("/") if s]
    if link_segments[:len(base_segments)] == base_segments:
        rest = link_segments[len(base_segments):]
    else:
        shared = 0
        while (shared < min(len(base_segments), len(link_segments))
               and base_segments[shared] == link_segments[shared]):
            shared += 1
        rest = link_segments[shared:]
    path = "/" + "/".join(base_segments + rest)
    return urlunsplit((base.scheme, base.netloc, path, parts.query, ""))


_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class ApiTransport:
    """Authenticated, rate-limited, retried calls to one Partner Center API.

    Args:
        base_url: the API's base (a setting, so the sandbox can stand in).
        credential: where bearer tokens come from.
        session: the HTTP session (injectable; honours REQUESTS_CA_BUNDLE).
        rate_limit: calls a second, client side.
        retry: the retry policy.
        api: the API's name in messages and logs.
        sleep: injectable for tests of the policy itself.
    """

    def __init__(self, base_url: str, credential: TokenSource, *, session: requests.Session | None = None,
                 rate_limit: float = 10.0, retry: RetryPolicy | None = None, api: str = "Partner Center",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.session = session or TimeoutSession()
        self.limiter = RateLimiter(rate_limit)
        self.retry = retry or RetryPolicy()
        self.api = api
        self._sleep = sleep
        self._local = threading.local()

    @property
    def last_request_id(self) -> str | None:
        """The `request-id` of this thread's last answer, for the sync log."""
        return getattr(self._local, "request_id", None)

    def url_for(self, path_or_url: str) -> str:
        """An absolute URL on this API's base. A link the service returned (nextLink) is resolved against the
        configured base, so the bearer token never goes anywhere else (`resolve_link`)."""
        if "://" not in path_or_url:
            return self.base_url + "/" + path_or_url.lstrip("/")
        return resolve_link(self.base_url, path_or_url)

    def request(self, method: str, path_or_url: str, *, json: Any = None, headers: Mapping[str, str] | None = None,
                idempotent: bool | None = None) -> requests.Response:
        """Send one call, retrying as the module docstring says; returns the 2xx response.

        Args:
            method: HTTP method.
            path_or_url: a path under the base URL, or a link the service returned.
            json: the JSON body, if any.
            headers: extra headers (If-Match, Prefer, Content-Type).
            idempotent: override the method's default: True lets a POST be retried after 5xx or a
                connection error (safe only when repeating it cannot create twice).

        Raises:
            ConnectorError: the subclass that says what went wrong, after retries ran out.
        """
        method = method.upper()
        extra = dict(headers or {})
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS or (method == "PATCH" and "If-Match" in extra)
        url = self.url_for(path_or_url)
        path = urlsplit(url).path
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            self.limiter.acquire()
            client_request_id = str(uuid.uuid4())
            try:
                call_headers = {
                    "Authorization": f"Bearer {self.credential.token()}",
                    "Accept": "application/json",
                    "client-request-id": client_request_id,
                    **extra,
                }
                response = self.session.request(method, url, json=json, headers=call_headers)
            except (requests.ConnectionError, requests.Timeout, Unavailable) as exc:
                if idempotent and attempt < self.retry.max_attempts:
                    wait = self.retry.backoff(attempt)
                    log.warning("%s %s %s failed (%s), retry %d in %.2fs (client-request-id %s)", self.api,
                                method, path, type(exc).__name__, attempt, wait, client_request_id)
                    self._sleep(wait)
                    continue
                if isinstance(exc, Unavailable):
                    raise
                raise Unavailable(f"{self.api} {method} {path} could not be reached: {type(exc).__name__}") from None
            request_id = response.headers.get("request-id") or response.headers.get("MS-RequestId")
            self._local.request_id = request_id
            log.info("%s %s %s -> %d (request-id %s, client-request-id %s)", self.api, method, path,
                     response.status_code, request_id, client_request_id)
            status = response.status_code
            if status == 401 and not refreshed and not is_mfa_refusal(response):
                refreshed = True
                self.credential.invalidate()
                attempt -= 1  # the refresh is not a failed attempt
                continue
            if attempt < self.retry.max_attempts and (status == 429 or (status >= 500 and idempotent)):
                retry_after = _retry_after(response)
                if status == 429 and retry_after is not None and retry_after > self.retry.max_retry_after:
                    raise_for_response(response, api=self.api)
                wait = (self.retry.throttle_wait(retry_after, attempt) if status == 429
                        else self.retry.backoff(attempt))
                log.warning("%s %s %s answered %d, retry %d in %.2fs", self.api, method, path, status, attempt, wait)
                self._sleep(wait)
                continue
            raise_for_response(response, api=self.api)
            return response


__all__ = [
    "DEFAULT_TIMEOUT",
    "MFA_MESSAGE",
    "ApiTransport",
    "RateLimiter",
    "RetryPolicy",
    "TimeoutSession",
    "TokenSource",
    "is_mfa_refusal",
    "raise_for_response",
    "resolve_link",
]
