"""Salesforce triggers: the change poll (timer), the nudge route `POST /api/salesforce/changes` and the
Outbound Message receiver `POST /api/salesforce/outbound`.

Thin on purpose: all three only hand opportunity ids to the opportunity queue, whose processor syncs them.
Only azure.functions and the standard library are imported at module level (cold start).
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("shared.functions.salesforce")


def _json(body: dict[str, object], status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.function_name("salesforce_poll")
@bp.timer_trigger(arg_name="timer", schedule="%COSELL_SF_POLL_SCHEDULE%", run_on_startup=False)
def salesforce_poll(timer: func.TimerRequest) -> None:
    """Hand on opportunities changed since the last poll (opted in or linked, and their solutions rows)."""
    from shared.runtime import services
    from shared.salesforce.polling import poll_changes
    from shared.telemetry import logged_run

    with logged_run("salesforce_poll") as run:
        result = poll_changes(services())
        if result is None:
            run.outcome = "paused"
        else:
            log.info("Salesforce poll: %d opportunity change(s) handed on (%s)", result.total, result.handed_on)


@bp.function_name("salesforce_changes")
@bp.route(route="salesforce/changes", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def salesforce_changes(req: func.HttpRequest) -> func.HttpResponse:
    """Sync these opportunities now: `{"ids": ["006..."]}` -> 202; a malformed body -> 400, nothing enqueued."""
    from shared.errors import ConnectorError, InvalidInput
    from shared.runtime import services
    from shared.salesforce.polling import nudge, parse_nudge

    try:
        ids = parse_nudge(req.get_body())
    except InvalidInput as exc:
        return _json({"error": str(exc)}, 400)
    try:
        count = nudge(services().queues, ids)
    except ConnectorError as exc:
        log.error("Salesforce nudge not enqueued: %s", exc)
        return _json({"error": str(exc)}, 503)
    return _json({"accepted": count}, 202)


@bp.function_name("salesforce_outbound")
@bp.route(route="salesforce/outbound", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def salesforce_outbound(req: func.HttpRequest) -> func.HttpResponse:
    """Salesforce Outbound Messages: the SOAP Ack once the ids are queued; 4xx refused, 5xx retry later."""
    from shared.runtime import services
    from shared.salesforce.push import receive

    answer = receive(services(), req.get_body())
    return func.HttpResponse(answer.body, status_code=answer.status, mimetype="text/xml", charset="utf-8")
