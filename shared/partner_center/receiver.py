"""Receiving a webhook delivery: verify, enqueue, answer; and relaying it to other installs.

Why enqueue-then-answer: Partner Center marks an endpoint offline after 10 failed deliveries, so the
receiver does nothing slow. The event only says "look at referral X"; a queue processor does the looking.

Why a relay: Partner Center allows one webhook URL per event for the whole tenant, so a staging install or
another co-sell tool would otherwise steal production's events. Each verified referral event is put on the
forward queue once per URL of `COSELL_WEBHOOK_FORWARD_URLS`, with its raw body and signature headers, so
each downstream receiver can verify it exactly as if Partner Center had sent it.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests
from pydantic import ValidationError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.errors import Unavailable
from shared.models.events import WebhookEvent
from shared.partner_center.registration import masked
from shared.partner_center.signature import SIGNATURE_HEADERS, SignatureRejected, WebhookVerifier
from shared.settings import APP_ROOT
from shared.store.queues import FORWARD_QUEUE, REFERRAL_QUEUE

log = logging.getLogger("shared.partner_center")

MAX_EVENT_BYTES = 16 * 1024
"""Events are a few hundred bytes; the cap also keeps a forward message within a queue message's 64 KiB."""
DEFAULT_MAX_DEQUEUE_COUNT = 5


class Sender(Protocol):
    def send(self, queue: str, payload: dict[str, Any], *, delay_seconds: int | None = None) -> None: ...


@dataclass(frozen=True)
class Receipt:
    """The receiver's answer: an HTTP status and a short reason (never anything from the body)."""

    status: int
    reason: str
    referral_id: str | None = None


def receive(body: bytes, headers: Mapping[str, str], *, verifier: WebhookVerifier, queues: Sender,
            forward_urls: list[str]) -> Receipt:
    """Verify one delivery and enqueue its work; nothing is enqueued unless everything checks out.

    Returns:
        202 queued (or a test event received), 401 bad signature, 400 malformed or not a referral event,
        413 too large, 503 when the queue cannot take it (Partner Center will deliver again).
    """
    if len(body) > MAX_EVENT_BYTES:
        return Receipt(413, "body too large for a Partner Center event")
    try:
        verifier.verify(body, headers)
    except SignatureRejected as exc:
        log.warning("webhook refused: %s", exc.reason)
        return Receipt(401, exc.reason)
    try:
        event = WebhookEvent.model_validate_json(body)
    except ValidationError:
        return Receipt(400, "body is not a Partner Center event")
    if event.is_test:
        log.info("webhook test event received")
        return Receipt(202, "test event received")
    if not event.is_referral_event:
        return Receipt(400, f"not a referral event ({str(event.event_name)[:40]})")
    referral_id = event.referral_id
    try:
        queues.send(REFERRAL_QUEUE, {
            "referral_id": referral_id,
            "event": str(event.event_name),
            "changed_at": event.resource_change_utc_date.to_api() if event.resource_change_utc_date else None,
            "received_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        })
        signature_headers = {name: headers[name] for name in _present(headers, SIGNATURE_HEADERS)}
        for url in forward_urls:
            queues.send(FORWARD_QUEUE, {"url": url, "body": base64.b64encode(body).decode("ascii"),
                                        "headers": signature_headers, "referral_id": referral_id})
    except Unavailable as exc:
        log.error("webhook for referral %s not queued: %s", referral_id, exc)
        return Receipt(503, "queue unavailable, deliver again later")
    log.info("webhook %s for referral %s queued", event.event_name, referral_id)
    return Receipt(202, "queued", referral_id)


def _present(headers: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    """The header keys of `headers` (as spelt there) that match `names` case-insensitively."""
    wanted = {name.lower() for name in names}
    return [key for key in headers if key.lower() in wanted]


class RelayFailed(Exception):
    """A downstream receiver did not take the event; the queue will offer it again (or dead-letter it)."""


@functools.cache
def relay_session() -> requests.Session:
    """The relay's HTTP session: the one place its retries live (a few quick ones; the queue does the rest)."""
    session = requests.Session()
    retry = Retry(total=2, connect=2, read=0, status=2, backoff_factor=0.2, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=frozenset({"POST"}), respect_retry_after_header=True, raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def forward(message: Mapping[str, Any], session: requests.Session) -> int:
    """POST one relayed event, unchanged, to its downstream URL; returns the status on success.

    Raises:
        RelayFailed: not delivered (the reason masks the URL's query, which may hold a key).
    """
    url = str(message["url"])
    body = base64.b64decode(message["body"])
    headers = {"Content-Type": "application/json", **dict(message.get("headers") or {})}
    try:
        response = session.post(url, data=body, headers=headers, timeout=(5, 15), allow_redirects=False)
    except requests.RequestException as exc:
        raise RelayFailed(f"relay to {masked(url)} failed: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise RelayFailed(f"relay to {masked(url)} answered {response.status_code}")
    return response.status_code


@functools.cache
def max_dequeue_count() -> int:
    """host.json's `extensions.queues.maxDequeueCount`: the try after which the host gives a message up."""
    try:
        document = json.loads((APP_ROOT / "host.json").read_text(encoding="utf-8"))
        return int(document["extensions"]["queues"]["maxDequeueCount"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_MAX_DEQUEUE_COUNT


__all__ = ["MAX_EVENT_BYTES", "Receipt", "RelayFailed", "forward", "max_dequeue_count", "receive", "relay_session"]
