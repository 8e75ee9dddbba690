"""What the status page, `status.json` and `python -m shared status` show: one dict, gathered cheaply.

Why one plain function: the HTML page, the JSON route and the CLI must tell the same story, and a test can
call it against Azurite without a host. Every list is bounded (a page view must stay a handful of table
queries however long the connector has run), and every text that may carry a URL goes through `redact`, so
a function key or a SAS signature never reaches a page, a terminal or a screenshot.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import islice
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError
from shared.models.records import utcnow

if TYPE_CHECKING:
    from shared.models.records import DeadLetter, Link, StatusDoc, SyncLogEntry, SyncState
    from shared.models.webhooks import WebhookRegistration
    from shared.runtime import Services
    from shared.settings import Settings
    from shared.store import Store

LOG_LIMIT = 100
"""Sync log entries shown (and counted per outcome): the newest ones, one cheap query."""
LINK_LIMIT = 500
"""Links listed in the searchable table; more are counted, and an exact id still finds any link."""
DEAD_LETTER_LIMIT = 200
INTENT_LIMIT = 50
COUNT_CAP = 5000
"""Links and dead letters are counted up to this many rows, then shown as "5000+": counting is a scan."""
VALUE_CHARS = 300
"""Before/after values longer than this are cut (a note may hold 32 KB; the page shows the start)."""

POLL_STALE = dt.timedelta(minutes=10)
"""No successful Salesforce poll for this long is worth a look (the default schedule polls every minute)."""
PUSH_POLL_STALE = dt.timedelta(minutes=40)
"""With push configured the poll runs every 15 minutes by default: stale after two missed runs and more."""
PUSH_MISSED_RECENT = dt.timedelta(hours=24)
"""A change the poll had to deliver within this window keeps the push warning up."""
RECONCILE_STALE = dt.timedelta(hours=1)
"""Likewise for the reconcile (every 15 minutes by default)."""

POLL_DOC = "salesforce-poll"
RECONCILE_DOC = "partner-center-reconcile"
TOKEN_DOC = "partner-center-token"
BUDGET_DOC = "salesforce-budget"
PUSH_DOC = "salesforce-push"
"""Status documents of shared/salesforce/polling.py, shared/sync/reconcile.py, shared/partner_center/token.py,
shared/salesforce/budget.py and shared/salesforce/push.py (literal here so gathering imports none of the clients; a test checks)."""

OK, WARNING, ERROR, UNKNOWN = "ok", "warning", "error", "unknown"

_SECRET_NAMES = r"code|sig|token|access_token|refresh_token|id_token|client_secret|client_assertion|assertion|" \
                r"password|key|secret|session_id|sessionid|sid"
_SECRET_PATTERNS = [
    # A query or form parameter: `?code=...`, `&refresh_token=...`, `client_secret=...` (also x-functions-key=).
    (re.compile(rf"(?i)(?<![A-Za-z0-9])((?:{_SECRET_NAMES})=)[^&\s\"'<>,;]+"), r"\1***"),
    # A JSON member: `"access_token": "..."`.
    (re.compile(rf"(?i)(\"(?:{_SECRET_NAMES})\"\s*:\s*\")[^\"]*"), r"\1***"),
    # An HTTP header: `Authorization: Bearer ...`, `x-functions-key: ...` (the scheme is kept, not the credential).
    (re.compile(r"(?i)\b((?:authorization|proxy-authorization|x-functions-key|ocp-apim-subscription-key)\"?\s*[:=]\s*"
                r"\"?(?:(?:bearer|basic|signature|sharedkey|oauth)\s+)?)[^\s\"'<>,;]+"), r"\1***"),
    # A bare bearer token or Salesforce session id (`00D...!AQ...`: the org id, then the secret part).
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/!]+=*"), r"\1***"),
    (re.compile(r"\b(00D[A-Za-z0-9]{12,15}!)[A-Za-z0-9._\-]+"), r"\1***"),
]


def redact(text: str | None) -> str:
    """`text` with every secret-looking value replaced by `***`: query and form parameters (`?code=`, `sig=`,
    `access_token=`, `refresh_token=`, `client_secret=`, `key=`...), the same names as JSON members, the
    credential of an `Authorization` header or any bearer token, and a Salesforce session id.

    Messages are written without secrets already; this is the second line of defence for whatever a remote
    service or a future message puts into a text the page, `status.json` or the CLI show.
    """
    text = text or ""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def ago(when: dt.datetime | str | None, now: dt.datetime) -> str:
    """`when` as people say it: "just now", "42 s ago", "5 min ago", "3 h ago", "2 days ago"; "never" for None."""
    moment = _parse_time(when)
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 5:
        return "just now"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * (2 if unit == "days" else 1):
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def plural(count: int, word: str, many: str | None = None) -> str:
    """ "1 row", "3 rows"; `many` for irregular words ("opportunities")."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def _total(value: Any) -> int | None:
    """A count, or the sum of a per-source dict of counts (the poll reports both ways)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return sum(v for v in value.values() if isinstance(v, int) and not isinstance(v, bool))
    return None


def _parse_time(value: dt.datetime | str | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def shorten(value: Any, limit: int = VALUE_CHARS) -> Any:
    """A field value fit for display: scalars as they are, other values as compact JSON; long text cut."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _count(items: Iterable[Any], cap: int = COUNT_CAP) -> tuple[int, bool]:
    """How many, counting at most `cap` (then True: there are more)."""
    total = sum(1 for _ in islice(items, cap + 1))
    return min(total, cap), total > cap


# Health of each side --------------------------------------------------------------------------------------

def poll_health(doc: StatusDoc | None, now: dt.datetime, *, stale: dt.timedelta = POLL_STALE,
                schedule: str | None = None) -> dict[str, Any]:
    """The Salesforce poll: when it last succeeded, and its error if the latest run failed (and its schedule:
    every minute, or every 15 minutes once Salesforce pushes)."""
    if doc is None:
        return {"state": UNKNOWN, "summary": "has not run yet", **({"schedule": schedule} if schedule else {})}
    data = doc.data
    last_success, last_error = data.get("last_success"), data.get("last_error")
    facts = {**({"schedule": schedule} if schedule else {}), "last_success": last_success, "last_error": redact(last_error) or None,
             "last_error_at": data.get("last_error_at"), "read": data.get("read"), "handed_on": data.get("handed_on")}
    if last_error:
        return {"state": ERROR, "summary": f"failing ({ago(data.get('last_error_at'), now)}): {redact(last_error)}",
                **facts}
    success = _parse_time(last_success)
    if success is None:
        return {"state": UNKNOWN, "summary": "no successful poll yet", **facts}
    read, queued = _total(data.get("read")), _total(data.get("handed_on"))
    detail = f"; {plural(read, 'row')} read" if read is not None else ""
    if queued is not None:
        detail += f", {plural(queued, 'opportunity', 'opportunities')} queued"
    state = WARNING if now - success > stale else OK
    return {"state": state, "summary": f"last success {ago(success, now)}{detail}", **facts}


def push_health(doc: StatusDoc | None, now: dt.datetime, *, configured: bool) -> dict[str, Any]:
    """Salesforce push (outbound messages): the last batch received, refusals and why, and the changes the
    poll found that push should have delivered (push broken or misconfigured)."""
    if not configured:
        return {"state": UNKNOWN, "configured": False,
                "summary": "not configured: the poll delivers Salesforce's changes (set SALESFORCE_ORG_ID and "
                           "deploy the Flows, salesforce/README.md)"}
    data = doc.data if doc is not None else {}
    facts = {"configured": True, "last_received_at": data.get("last_received_at"),
             "last_batch": data.get("last_batch"), "refused": data.get("refused", 0),
             "last_refused_at": data.get("last_refused_at"),
             "last_refused_reason": redact(data.get("last_refused_reason")) or None,
             "missed": data.get("missed", 0), "last_missed_at": data.get("last_missed_at"),
             "last_missed_opportunity": data.get("last_missed_opportunity")}
    received, refused = _parse_time(facts["last_received_at"]), _parse_time(facts["last_refused_at"])
    missed = _parse_time(facts["last_missed_at"])
    if refused is not None and (received is None or refused > received):
        return {"state": ERROR, **facts, "summary": f"refusing outbound messages ({ago(refused, now)}): "
                                                    f"{facts['last_refused_reason']}"}
    if missed is not None and now - missed < PUSH_MISSED_RECENT:
        return {"state": WARNING, **facts,
                "summary": f"the poll found {plural(int(facts['missed']), 'change')} push should have delivered "
                           f"(latest: opportunity {facts['last_missed_opportunity']}, {ago(missed, now)}): is the "
                           "Flow active and its outbound message's endpoint this app?"}
    if received is None:
        return {"state": UNKNOWN, **facts, "summary": "configured; no outbound message received yet"}
    extra = f"; {plural(int(facts['refused']), 'refusal')}, latest: {facts['last_refused_reason']}" \
        if facts["refused"] else ""
    batch = f" (a call of {plural(int(facts['last_batch']), 'notification')})" if facts["last_batch"] else ""
    return {"state": OK, **facts, "summary": f"last outbound message {ago(received, now)}{batch}{extra}"}


def reconcile_health(doc: StatusDoc | None, now: dt.datetime) -> dict[str, Any]:
    """The Partner Center reconcile (the safety net behind webhooks and the poll)."""
    if doc is None:
        return {"state": UNKNOWN, "summary": "has not run yet"}
    data = doc.data
    success = _parse_time(data.get("last_success"))
    counts = {k: data.get(k) for k in ("referrals_listed", "referrals_queued", "opportunities_queued",
                                       "intents_queued")}
    if success is None:
        return {"state": UNKNOWN, "summary": "no successful run yet", "last_success": None, **counts}
    queued = sum(counts[k] or 0 for k in ("referrals_queued", "opportunities_queued", "intents_queued"))
    state = WARNING if now - success > RECONCILE_STALE else OK
    return {"state": state, "last_success": success.isoformat(), **counts,
            "summary": f"last run {ago(success, now)}: {plural(counts['referrals_listed'] or 0, 'referral')} "
                       f"listed, {plural(queued, 'item')} queued"}


def token_health(doc: StatusDoc | None, now: dt.datetime) -> dict[str, Any]:
    """The Partner Center refresh token: last refresh, age, expiry warning, last refusal (never the token)."""
    if doc is None:
        return {"state": UNKNOWN, "summary": "no token refresh recorded yet"}
    data = doc.data
    keys = ("last_refresh_at", "refresh_token_source", "refresh_token_age_days", "expires_around", "warning",
            "last_error", "last_error_at", "mfa_required")
    facts = {k: (redact(data[k]) if isinstance(data.get(k), str) else data.get(k)) for k in keys}
    if data.get("last_error") or data.get("mfa_required"):
        return {"state": ERROR, "summary": f"refused ({ago(data.get('last_error_at'), now)}): "
                                           f"{redact(data.get('last_error') or 'MFA required')}", **facts}
    if data.get("warning"):
        return {"state": WARNING, "summary": redact(data["warning"]), **facts}
    if not data.get("last_refresh_at"):
        return {"state": UNKNOWN, "summary": "no successful refresh yet", **facts}
    age = data.get("refresh_token_age_days")
    expires = _parse_time(data.get("expires_around"))
    summary = f"refreshed {ago(data['last_refresh_at'], now)}"
    if age is not None:
        days = int(float(age))
        summary += f"; refresh token {plural(days, 'day')} old" if days else "; refresh token under a day old"
    if expires is not None:
        summary += f", expires around {expires:%Y-%m-%d}"
    return {"state": OK, "summary": summary, **facts}


def budget_health(doc: StatusDoc | None, now: dt.datetime) -> dict[str, Any]:
    """The org's daily API budget as Salesforce last reported it."""
    if doc is None:
        return {"state": UNKNOWN, "summary": "no Salesforce call recorded yet"}
    data = doc.data
    used, limit, share = data.get("used"), data.get("limit"), data.get("budget_share")
    state = {"ok": OK, "reserved": WARNING, "exhausted": ERROR}.get(str(data.get("state")), UNKNOWN)
    summary = f"{used} of {limit} daily calls used"
    if isinstance(used, int) and isinstance(limit, int) and limit:
        summary += f" ({used / limit:.1%})" if used == 0 or used / limit >= 0.001 else " (under 0.1%)"
    if isinstance(share, (int, float)):
        summary += f"; background work pauses at {share:.0%}"
    summary += f" (seen {ago(data.get('observed_at'), now)})"
    return {"state": state, "summary": summary, "used": used, "limit": limit, "budget_share": share,
            "share_used": data.get("share_used"), "budget_state": data.get("state"),
            "observed_at": data.get("observed_at")}


def login_health(settings: Settings) -> dict[str, Any]:
    """Which Salesforce login the settings choose, and what an operator must know about it (the password
    grant is being retired by Salesforce; client credentials need a My Domain URL)."""
    from urllib.parse import urlsplit

    from shared.salesforce.auth import Credentials, login_notice

    try:
        grant = Credentials.from_settings(settings).grant
    except ConfigError as exc:
        return {"state": ERROR, "summary": redact(str(exc)), "grant": None}
    host = urlsplit(settings.salesforce_login_url).hostname
    notice = login_notice(grant)
    if notice is not None:
        return {"state": WARNING, "summary": notice, "grant": grant.value, "login_host": host}
    names = {"jwt_bearer": "JWT bearer", "client_credentials": "client credentials", "password": "username-password"}
    return {"state": OK, "summary": f"{names.get(grant.value, grant.value)} login at {host}", "grant": grant.value,
            "login_host": host}


def webhook_health(fetch: Callable[[], WebhookRegistration | None], own_url: str | None) -> dict[str, Any]:
    """Where the tenant's webhook points (URL masked); a failure to ask is shown, never raised.

    Args:
        fetch: reads the registration (`services().webhooks.get_registration`); may raise anything.
        own_url: this app's receiver URL, to tell whether the registration points here (None: unknown).
    """
    from shared.partner_center.registration import describe, masked
    from shared.sync.failures import describe as describe_error

    try:
        registration = fetch()
    except Exception as exc:  # noqa: BLE001 - the page must render whatever went wrong with this one call
        return {"state": ERROR, "summary": f"could not be read: {redact(describe_error(exc))}",
                "registered": None, "url": None, "events": [], "points_here": None,
                "receiver_url": redact(masked(own_url)) or None}
    facts = describe(registration, own_url)
    facts["url"], facts["receiver_url"] = redact(facts["url"]) or None, redact(facts["receiver_url"]) or None
    if not facts["registered"]:
        return {"state": ERROR, "summary": "not registered: Partner Center sends no events", **facts}
    events = f"{len(facts['events'])} event(s)"
    if own_url is None:
        facts["points_here"] = None
        return {"state": OK, "summary": f"registered to {facts['url']} for {events} (this app's public URL is "
                                        "not set, so whether it points here is unknown)", **facts}
    if not facts["points_here"]:
        return {"state": WARNING, "summary": f"registered to {facts['url']}, not to this app", **facts}
    return {"state": OK, "summary": f"points here, {events}", **facts}


# Lists -------------------------------------------------------------------------------------------------

def log_row(entry: SyncLogEntry) -> dict[str, Any]:
    """One sync log entry for display: `changes` as rows, conflicts and account candidates apart."""
    changes, conflicts, candidates = [], [], []
    for key, value in entry.changes.items():
        if key == "conflicts" and isinstance(value, list):
            conflicts = [{"field": str(c.get("key")), "partner_center": shorten(c.get("partner_center")),
                          "salesforce": shorten(c.get("salesforce")), "winner": c.get("winner")}
                         for c in value if isinstance(c, dict)]
        elif key == "account_candidates" and isinstance(value, list):
            candidates = [{"id": str(c.get("Id")), "name": shorten(c.get("Name"))}
                          for c in value if isinstance(c, dict)]
        elif isinstance(value, list) and len(value) == 3:
            changes.append({"field": key, "before": shorten(value[0]), "after": shorten(value[1]), "to": value[2]})
        else:
            changes.append({"field": key, "before": None, "after": shorten(value), "to": None})
    return {"at": _iso(entry.at), "direction": entry.direction, "outcome": entry.outcome.value,
            "referral_id": entry.referral_id, "opportunity_id": entry.opportunity_id,
            "message": redact(entry.message), "duration_ms": entry.duration_ms, "request_ids": entry.request_ids,
            "changes": changes, "conflicts": conflicts, "account_candidates": candidates}


def dead_letter_row(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter for display: what it was about (a relay's URL only masked), why, and if it can be replayed."""
    from shared.sync.replay import QUEUES

    payload = letter.payload
    if letter.kind == "webhook-forward":
        subject = f"relay to {redact(payload.get('url_shown')) or 'a downstream URL'}"
    else:
        record = payload.get(f"{letter.kind}_id")
        subject = redact(f"{letter.kind} {record}") if record else letter.kind
    return {"key": letter.key, "kind": letter.kind, "subject": subject, "reason": redact(letter.reason),
            "attempts": letter.attempts, "first_failed_at": _iso(letter.first_failed_at),
            "last_failed_at": _iso(letter.last_failed_at), "replayable": letter.kind in QUEUES}


def link_row(link: Link, state: SyncState | None) -> dict[str, Any]:
    """A link with what its sync state knows cheaply: the deal's name and stage, the last sync, the last error."""
    base = state.base if state else {}
    name = base.get("name")
    return {"referral_id": link.referral_id, "opportunity_id": link.opportunity_id,
            "engagement_id": link.engagement_id, "name": shorten(name, 120) if name else None,
            "stage": shorten(base.get("stage"), 60) if base.get("stage") else None,
            "created_at": _iso(link.created_at), "synced_at": _iso(state.synced_at) if state else None,
            "last_error": redact(state.last_error) if state and state.last_error else None}


def _links(store: Store, search: str | None) -> tuple[list[dict[str, Any]], int, bool]:
    """The first LINK_LIMIT links with their states (one range query), the count, and any link `search` names."""
    shown: list[Link] = []
    total = 0
    for link in store.links.list():
        total += 1
        if len(shown) < LINK_LIMIT:
            shown.append(link)
        if total > COUNT_CAP:
            break
    states: dict[str, SyncState] = {}
    if shown:  # links come in RowKey order ("ref-<id>"), states are keyed by the same id: one range
        for state in store.state.list("RowKey ge @lo and RowKey le @hi",
                                      {"lo": shown[0].referral_id, "hi": shown[-1].referral_id}):
            states[state.referral_id] = state
    term = (search or "").strip()
    if term and not any(term in (link.referral_id, link.opportunity_id) for link in shown):
        found = store.links.get_by_referral(term) or store.links.get_by_opportunity(term)
        if found is not None:
            shown.insert(0, found)
            state = store.state.get(found.referral_id)
            if state is not None:
                states[state.referral_id] = state
    rows = [link_row(link, states.get(link.referral_id)) for link in shown]
    rows.sort(key=lambda row: row["created_at"] or "", reverse=True)
    return rows, min(total, COUNT_CAP), total > COUNT_CAP


# The whole report --------------------------------------------------------------------------------------

def collect(store: Store, *, webhook: Callable[[], WebhookRegistration | None], own_url: str | None = None,
            dry_run: bool = False, search: str | None = None, now: dt.datetime | None = None,
            salesforce_login: dict[str, Any] | None = None, push_configured: bool = False,
            poll_schedule: str | None = None) -> dict[str, Any]:
    """Everything the status page shows, as JSON-ready data.

    Args:
        store: the connector's tables.
        webhook: reads the webhook registration (its failure is shown in the report, not raised).
        own_url: this app's receiver URL (to tell whether the webhook points here), or None.
        dry_run: the `COSELL_DRY_RUN` setting, shown in the header.
        search: a referral or opportunity id to find among all links (beyond the LINK_LIMIT listed).
        now: the time (tests pass a fixed one).
        salesforce_login: `login_health` of the settings (None: not shown).
        push_configured: SALESFORCE_ORG_ID is set (Salesforce pushes; the poll is a 15-minute safety net).
        poll_schedule: the poll's NCRONTAB schedule, shown with its health.

    Raises:
        Unavailable: Table Storage cannot be reached (nothing else is worth showing then).
    """
    now = now or utcnow()
    status = store.status
    entries = store.synclog.recent(LOG_LIMIT)
    letters = sorted(islice(store.dead_letters.list(), DEAD_LETTER_LIMIT),
                     key=lambda letter: letter.last_failed_at, reverse=True)
    dead_count, dead_more = (len(letters), False) if len(letters) < DEAD_LETTER_LIMIT else \
        _count(store.dead_letters.list())
    intents = store.intents.list_open()
    links, link_count, links_more = _links(store, search)
    outcomes = Counter(entry.outcome.value for entry in entries)
    return {
        "generated_at": now.isoformat(),
        "dry_run": dry_run,
        "health": {
            "salesforce_poll": poll_health(status.get(POLL_DOC), now, schedule=poll_schedule,
                                           stale=PUSH_POLL_STALE if push_configured else POLL_STALE),
            "salesforce_push": push_health(status.get(PUSH_DOC), now, configured=push_configured),
            "partner_center_reconcile": reconcile_health(status.get(RECONCILE_DOC), now),
            "partner_center_token": token_health(status.get(TOKEN_DOC), now),
            "webhook": webhook_health(webhook, own_url),
            "salesforce_budget": budget_health(status.get(BUDGET_DOC), now),
            **({"salesforce_login": salesforce_login} if salesforce_login is not None else {}),
        },
        "counts": {
            "links": link_count, "links_more": links_more,
            "open_intents": len(intents),
            "dead_letters": dead_count, "dead_letters_more": dead_more,
            "sync_log_window": len(entries),
            "sync_log_outcomes": dict(sorted(outcomes.items())),
        },
        "sync_log": [log_row(entry) for entry in entries],
        "dead_letters": [dead_letter_row(letter) for letter in letters],
        "intents": [{"opportunity_id": intent.opportunity_id, "attempted_at": _iso(intent.attempted_at)}
                    for intent in sorted(intents, key=lambda i: i.attempted_at)[:INTENT_LIMIT]],
        "links": links,
        "search": search or None,
    }


def own_receiver_url(services: Services, base_url: str | None = None) -> str | None:
    """This app's webhook receiver: from the settings (COSELL_PUBLIC_URL), else from the URL the page was
    requested at, else unknown."""
    from shared.partner_center.registration import RECEIVER_PATH, receiver_url

    try:
        return receiver_url(services.settings)
    except ConfigError:
        return base_url.rstrip("/") + RECEIVER_PATH if base_url else None


def collect_for(services: Services, *, base_url: str | None = None, search: str | None = None) -> dict[str, Any]:
    """`collect` with the process's clients: what the routes and the CLI call."""
    return collect(services.store, webhook=lambda: services.webhooks.get_registration(),
                   own_url=own_receiver_url(services, base_url), dry_run=services.settings.cosell_dry_run,
                   search=search, salesforce_login=login_health(services.settings),
                   push_configured=bool(services.settings.salesforce_org_id),
                   poll_schedule=services.settings.poll_schedule)


__all__ = [
    "COUNT_CAP", "DEAD_LETTER_LIMIT", "LINK_LIMIT", "LOG_LIMIT", "ago", "collect", "collect_for", "login_health",
    "redact",
    "shorten",
]
