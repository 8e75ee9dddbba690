"""`GET /api/health`: anonymous, no secrets: is storage reachable, when did the timers last succeed."""

from __future__ import annotations

import json

import azure.functions as func

bp = func.Blueprint()

# Status documents written by the poll and reconcile timers when they finish a run.
TIMER_DOCS = {"salesforce_poll": "salesforce-poll", "partner_center_reconcile": "partner-center-reconcile"}


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared.errors import ConnectorError
    from shared.runtime import services

    report: dict[str, object] = {"storage": "ok"}
    try:
        status = services().store.status
        for key, doc_name in TIMER_DOCS.items():
            doc = status.get(doc_name)
            report[f"last_{key}"] = doc.data.get("last_success") if doc else None
    except ConnectorError as exc:
        # The message names the endpoint and the setting, never the key.
        report["storage"] = f"unreachable: {exc.message}"
    healthy = report["storage"] == "ok"
    return func.HttpResponse(json.dumps(report), status_code=200 if healthy else 503,
                             mimetype="application/json")
