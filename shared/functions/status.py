"""The status page (`GET /api/status`), its data (`GET /api/status.json`) and the page's replay button
(`POST /api/status/replay`). Function auth level: the page shows deal names and ids.

Thin: gather with `shared.status.collect_for`, render, answer. Module level imports only azure.functions and
the standard library (cold start).
"""

from __future__ import annotations

import json
import secrets
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

bp = func.Blueprint()

REPLAY_BATCH = 200
"""Dead letters one `{"all": true}` request replays; the answer says whether more remain (press again)."""
_NO_CACHE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _json(body: dict[str, Any], status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, ensure_ascii=False), status_code=status,
                             mimetype="application/json", charset="utf-8", headers=_NO_CACHE)


def _base_url(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}"


def _error(exc: Exception) -> tuple[int, str]:
    """A failure as (HTTP status, one line): who must act, and what to do."""
    from shared.errors import InvalidInput, NotFound, Unavailable
    from shared.sync.failures import describe

    if isinstance(exc, InvalidInput):
        return 400, str(exc)
    if isinstance(exc, NotFound):
        return 404, str(exc)
    if isinstance(exc, Unavailable):
        return 503, str(exc)
    return 500, describe(exc)


@bp.function_name("status_page")
@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def status_page(req: func.HttpRequest) -> func.HttpResponse:
    """The status page for people; `?q=<id>` also finds a link beyond the ones listed."""
    from html import escape

    from shared.errors import ConnectorError
    from shared.runtime import services
    from shared.status import collect_for, content_security_policy, render_page

    nonce = secrets.token_urlsafe(18)
    headers = {**_NO_CACHE, "Content-Security-Policy": content_security_policy(nonce)}
    try:
        report = collect_for(services(), base_url=_base_url(req), search=req.params.get("q"))
    except ConnectorError as exc:
        status, message = _error(exc)
        page = (f'<!doctype html><meta charset="utf-8"><title>Co-sell connector · status</title>'
                f"<h1>The status could not be gathered</h1><p>{escape(message)}</p>")
        return func.HttpResponse(page, status_code=status, mimetype="text/html", charset="utf-8", headers=headers)
    page = render_page(report, nonce=nonce, replay_path=urlsplit(req.url).path.rstrip("/") + "/replay")
    return func.HttpResponse(page, mimetype="text/html", charset="utf-8", headers=headers)


@bp.function_name("status_json")
@bp.route(route="status.json", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def status_json(req: func.HttpRequest) -> func.HttpResponse:
    """The same data as the page, for scripts and dashboards."""
    from shared.errors import ConnectorError
    from shared.runtime import services
    from shared.status import collect_for

    try:
        return _json(collect_for(services(), base_url=_base_url(req), search=req.params.get("q")))
    except ConnectorError as exc:
        status, message = _error(exc)
        return _json({"error": message}, status)


@bp.function_name("status_replay")
@bp.route(route="status/replay", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def status_replay(req: func.HttpRequest) -> func.HttpResponse:
    """Replay `{"key": "<dead letter key>"}` or `{"all": true}`; answers what was re-queued.

    JSON only (415 otherwise): a plain HTML form of another site cannot send it, so a page elsewhere cannot
    make a visitor's browser replay work on a local host that checks no key.
    """
    from shared.errors import ConnectorError
    from shared.runtime import services
    from shared.sync.replay import replay

    if "application/json" not in (req.headers.get("content-type") or "").lower():
        return _json({"error": 'send JSON (Content-Type: application/json): {"key": "..."} or {"all": true}'}, 415)
    try:
        body = req.get_json()
    except (ValueError, RecursionError):  # RecursionError: arrays or objects nested too deep to parse
        body = None
    key = body.get("key") if isinstance(body, dict) else None
    everything = isinstance(body, dict) and body.get("all") is True
    if not (isinstance(key, str) and key) and not everything:
        return _json({"error": 'the body must be {"key": "<dead letter key>"} or {"all": true}'}, 400)
    app = services()
    replayed: list[dict[str, str]] = []
    try:
        letters = replay(app.store, app.queues, key=None if everything else key)
        for letter in islice(letters, REPLAY_BATCH):
            replayed.append({"key": letter.key, "kind": letter.kind})
        remaining = everything and next(iter(app.store.dead_letters.list()), None) is not None
    except ConnectorError as exc:
        status, message = _error(exc)
        return _json({"error": message, "replayed": replayed, "count": len(replayed)}, status)
    return _json({"replayed": replayed, "count": len(replayed), "remaining": bool(remaining)})
