"""Partner Center triggers: the webhook receiver, its queue processors, and the registration routes.

Thin on purpose: each trigger gets the process's cached clients from `shared.runtime.services()` and calls
one function of `shared/partner_center` (or, for referral changes, the sync layer). Only azure.functions and
the standard library are imported at module level (cold start).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("shared.functions.partner_center")

# Literal queue names: the decorators need them at import time, before any SDK may load. They equal
# shared.store.queues.REFERRAL_QUEUE / FORWARD_QUEUE (a test checks).
REFERRAL_QUEUE_NAME = "referral-changes"
FORWARD_QUEUE_NAME = "webhook-forward"


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)


def _error_response(exc: Exception) -> func.HttpResponse:
    """A connector error as an HTTP answer: the status says who must act, the message says what to do."""
    from shared.errors import (
        AlreadyExists,
        AuthExpired,
        ConfigError,
        Conflict,
        InvalidInput,
        NotFound,
        Throttled,
        Unavailable,
    )

    status, headers = 500, None
    if isinstance(exc, InvalidInput):
        status = 400
    elif isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, (Conflict, AlreadyExists)):
        status = 409
    elif isinstance(exc, Throttled):
        status = 429
        if exc.retry_after is not None:
            headers = {"Retry-After": str(int(exc.retry_after))}
    elif isinstance(exc, AuthExpired):
        status = 502  # Partner Center refused the connector's credentials: an operator must act
    elif isinstance(exc, Unavailable):
        status = 503
    elif isinstance(exc, ConfigError):
        status = 500
    return _json({"error": str(exc)}, status, headers)


@bp.function_name("partner_center_events")
@bp.route(route="partnercenter/events", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def partner_center_events(req: func.HttpRequest) -> func.HttpResponse:
    """Webhook receiver: verify the signature, enqueue, answer 202 (401/400 with nothing enqueued)."""
    from shared.partner_center.receiver import receive
    from shared.runtime import services

    app = services()
    receipt = receive(req.get_body(), dict(req.headers), verifier=app.webhook_verifier, queues=app.queues,
                      forward_urls=app.settings.forward_urls)
    body: dict[str, Any] = {"status": receipt.reason}
    if receipt.referral_id:
        body["referral_id"] = receipt.referral_id
    return _json(body, receipt.status)


@bp.function_name("partner_center_referral_changes")
@bp.queue_trigger(arg_name="msg", queue_name=REFERRAL_QUEUE_NAME, connection="COSELL_STORAGE")
def partner_center_referral_changes(msg: func.QueueMessage) -> None:
    """A referral changed: sync it (read both sides fresh, merge, write what differs)."""
    from shared.runtime import services
    from shared.sync.processor import process_referral

    process_referral(services(), msg.get_json())


@bp.function_name("partner_center_relay")
@bp.queue_trigger(arg_name="msg", queue_name=FORWARD_QUEUE_NAME, connection="COSELL_STORAGE")
def partner_center_relay(msg: func.QueueMessage) -> None:
    """Relay one verified event to one downstream URL; on the host's last try, record a dead letter too."""
    from shared.models.records import DeadLetter
    from shared.partner_center.receiver import RelayFailed, forward, max_dequeue_count, relay_session
    from shared.partner_center.registration import masked
    from shared.runtime import services
    from shared.telemetry import log_dead_letter

    message = msg.get_json()
    try:
        forward(message, relay_session())
    except RelayFailed as exc:
        attempts = msg.dequeue_count or 1
        if attempts >= max_dequeue_count():
            services().store.dead_letters.put(DeadLetter(
                kind="webhook-forward", key=msg.id, reason=str(exc), attempts=attempts,
                payload={**message, "url_shown": masked(message.get("url"))}))
            log_dead_letter("webhook-forward", msg.id, attempts=attempts, reason=str(exc))
        raise


@bp.function_name("partner_center_webhook")
@bp.route(route="partnercenter/webhook", methods=["GET", "POST", "PUT"], auth_level=func.AuthLevel.FUNCTION)
def partner_center_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """View (GET), register (POST `{"url"?, "events"?, "overwrite"}`) or update (PUT) the webhook."""
    from shared.errors import ConfigError, ConnectorError
    from shared.partner_center import registration
    from shared.runtime import services

    app = services()
    try:
        own_url = registration.receiver_url(app.settings)
    except ConfigError:
        own_url = None
    try:
        if req.method == "GET":
            return _json(registration.describe(app.webhooks.get_registration(), own_url), 200)
        try:
            body = req.get_json() if req.get_body() else {}
        except (ValueError, RecursionError):  # RecursionError: arrays or objects nested too deep to parse
            return _json({"error": "the body must be JSON: {\"url\"?, \"events\"?, \"overwrite\"?}"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "the body must be a JSON object"}, 400)
        url, events = body.get("url"), body.get("events")
        if (url is not None and not isinstance(url, str)) or (
                events is not None and not (isinstance(events, list) and all(isinstance(e, str) for e in events))):
            return _json({"error": "url must be a string and events a list of event names"}, 400)
        if url is None and own_url is None:
            registration.receiver_url(app.settings)  # raises the ConfigError that names the missing setting
        if req.method == "POST":
            outcome = registration.register(app.webhooks, own_url=own_url, url=url, events=events,
                                            overwrite=bool(body.get("overwrite", False)))
            return _json(outcome.to_dict(), 201 if outcome.action == "registered" else 200)
        outcome = registration.update(app.webhooks, own_url=own_url, url=url, events=events)
        return _json(outcome.to_dict(), 200)
    except ConnectorError as exc:
        return _error_response(exc)


@bp.function_name("partner_center_webhook_test")
@bp.route(route="partnercenter/webhook/test", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def partner_center_webhook_test(req: func.HttpRequest) -> func.HttpResponse:
    """Have Partner Center send its test event, and report how the delivery went."""
    from shared.errors import ConnectorError
    from shared.partner_center import registration
    from shared.runtime import services

    try:
        status = registration.send_test(services().webhooks)
    except ConnectorError as exc:
        return _error_response(exc)
    return _json({"correlation_id": status.correlation_id, "status": status.status, "delivered": status.delivered,
                  "callback_url": registration.masked(status.callback_url),
                  "results": [r.model_dump(mode="json", by_alias=True) for r in status.results]}, 200)
