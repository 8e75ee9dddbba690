"""The rules around the tenant's single webhook registration, shared by the HTTP routes and the CLI.

Why rules at all: Partner Center keeps one URL per event for the whole partner tenant, and registering
again silently replaces it. A staging install or another co-sell tool registered there would lose its
events without anyone noticing. So a registration that points elsewhere is replaced only on an explicit
`overwrite`, and the refusal says where it points now. Function keys in URLs (`?code=`) are secrets: every
URL shown or logged here has its query string masked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared.errors import ConfigError, Conflict, InvalidInput, NotFound
from shared.models.events import REFERRAL_EVENTS, WebhookEventName
from shared.models.webhooks import ValidationEventStatus, WebhookRegistration

if TYPE_CHECKING:
    from shared.partner_center.webhooks import WebhookRegistrationClient
    from shared.settings import Settings

RECEIVER_PATH = "/api/partnercenter/events"
DEFAULT_EVENTS = sorted(e.value for e in REFERRAL_EVENTS) + [WebhookEventName.TEST_CREATED.value]
"""The referral events the connector acts on, plus `test-created` (the test event must be subscribed)."""


def masked(url: str | None) -> str | None:
    """The URL with every query value replaced by `***` (function keys are secrets)."""
    if not url:
        return url
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = urlencode([(name, "***") for name, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def same_endpoint(a: str | None, b: str | None) -> bool:
    """True when two URLs reach the same receiver (scheme, host, port, path; the key may differ)."""
    if not a or not b:
        return False
    pa, pb = urlsplit(a), urlsplit(b)
    return ((pa.scheme.lower(), pa.netloc.lower(), pa.path.rstrip("/"))
            == (pb.scheme.lower(), pb.netloc.lower(), pb.path.rstrip("/")))


def receiver_url(settings: Settings) -> str:
    """This app's own webhook receiver, with its function key as `?code=` when a key setting exists."""
    base = settings.public_url
    if not base:
        raise ConfigError(
            "setting COSELL_PUBLIC_URL is not set (and WEBSITE_HOSTNAME is unknown): it is the base URL at which "
            "Partner Center reaches this app; or pass the webhook URL explicitly"
        )
    url = base + RECEIVER_PATH
    key = settings.cosell_webhook_function_key or settings.cosell_local_function_key
    if key is not None and key.get_secret_value():
        url += "?" + urlencode({"code": key.get_secret_value()})
    return url


@dataclass
class RegistrationOutcome:
    """What a register or update did, in words safe to show (URLs masked)."""

    action: str
    registration: WebhookRegistration
    previous_url: str | None = None
    receiver_url: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "url": masked(self.registration.webhook_url),
            "events": self.registration.webhook_events,
            "previous_url": masked(self.previous_url),
            "points_here": same_endpoint(self.registration.webhook_url, self.receiver_url),
            "notes": self.notes,
        }


def describe(registration: WebhookRegistration | None, own_url: str | None) -> dict[str, Any]:
    """The registration as the status routes show it."""
    if registration is None:
        return {"registered": False, "url": None, "events": [], "points_here": False,
                "receiver_url": masked(own_url)}
    return {
        "registered": True,
        "url": masked(registration.webhook_url),
        "events": registration.webhook_events,
        "points_here": same_endpoint(registration.webhook_url, own_url),
        "receiver_url": masked(own_url),
    }


def _validated(url: str) -> str:
    """An https:// URL (plain http only on loopback, where the local host and the simulator live)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed or non-IP "[...]" host
        raise InvalidInput("the webhook URL is not a valid URL") from None
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")):
        return url
    raise InvalidInput("the webhook URL must be an https:// URL (Partner Center delivers over HTTPS only)")


def _events_or_default(client: WebhookRegistrationClient, events: list[str] | None, notes: list[str]) -> list[str]:
    if events:
        return list(dict.fromkeys(events))
    available = set(client.list_events())
    chosen = [event for event in DEFAULT_EVENTS if event in available]
    skipped = [event for event in DEFAULT_EVENTS if event not in available]
    if skipped:
        notes.append("not offered to this partner, so not subscribed: " + ", ".join(skipped))
    if not chosen:
        raise InvalidInput("Partner Center offers none of the referral events to this partner")
    return chosen


def register(client: WebhookRegistrationClient, *, own_url: str | None, url: str | None = None,
             events: list[str] | None = None, overwrite: bool = False) -> RegistrationOutcome:
    """Point the tenant's webhook at `url` (default: this app's receiver) for `events`.

    Raises:
        Conflict: a registration points elsewhere and `overwrite` is false; the message says where.
    """
    target = _validated(url or own_url or "")
    notes: list[str] = []
    current = client.get_registration()
    chosen = _events_or_default(client, events, notes)
    if current is not None and not same_endpoint(current.webhook_url, target) and not overwrite:
        raise Conflict(
            f"the Partner Center webhook is registered to {masked(current.webhook_url)} "
            f"for {', '.join(current.webhook_events) or 'no events'}; registering would take those events "
            "away from it. Send overwrite: true (CLI: --overwrite) to replace it"
        )
    if current is None:
        registration, action = client.register(target, chosen), "registered"
    else:
        registration, action = client.update(target, chosen), "replaced" if not same_endpoint(
            current.webhook_url, target) else "updated"
    return RegistrationOutcome(action, registration, current.webhook_url if current else None, own_url, notes)


def update(client: WebhookRegistrationClient, *, own_url: str | None, url: str | None = None,
           events: list[str] | None = None) -> RegistrationOutcome:
    """Change the URL and/or the events of the existing registration; what is not given stays.

    Raises:
        NotFound: there is no registration to update (register first).
    """
    current = client.get_registration()
    if current is None:
        raise NotFound("no Partner Center webhook is registered: register one first (POST)")
    target = _validated(url) if url else current.webhook_url or ""
    chosen = list(dict.fromkeys(events)) if events else current.webhook_events
    registration = client.update(target, chosen)
    return RegistrationOutcome("updated", registration, current.webhook_url, own_url)


def send_test(client: WebhookRegistrationClient, *, wait_seconds: float = 8.0, poll_seconds: float = 0.5,
              sleep: Callable[[float], None] = time.sleep) -> ValidationEventStatus:
    """Send the test event and wait (a little) for Partner Center to report its delivery."""
    correlation_id = client.send_test_event()
    deadline = time.monotonic() + wait_seconds
    status = client.get_test_status(correlation_id)
    while not status.results and time.monotonic() < deadline:
        sleep(poll_seconds)
        status = client.get_test_status(correlation_id)
    return status


__all__ = [
    "DEFAULT_EVENTS",
    "RECEIVER_PATH",
    "RegistrationOutcome",
    "describe",
    "masked",
    "receiver_url",
    "register",
    "same_endpoint",
    "send_test",
    "update",
]
