"""Structured logs the connector's dashboards and alerts are built on: one record per sync, per API-budget
reading and per dead letter, with ids as custom dimensions.

Why plain `logging` with `extra=`: in the Azure Functions Python worker a log record reaches Application
Insights one of two ways. By default the worker forwards only the message text to the host, which writes it
to `traces`; the `extra` fields are lost. With `PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true` and the
`azure-monitor-opentelemetry` package deployed, the worker itself exports logs through OpenTelemetry and
every `extra` field becomes a `customDimensions` entry (infra/main.bicep sets the setting). So each record
carries its dimensions both ways: as `extra` for `customDimensions`, and as `key=value` words in the
message, which KQL can `parse` when the worker's OpenTelemetry export is off. No metrics SDK: "log-based
metrics" are KQL over these records (infra/README.md has the queries for a workbook or an alert).

What is never logged: a secret, a token, a field's value, a whole record. Dimensions are ids, request ids,
field names, counts and durations; an error contributes its type, and its message only when it is one of
the connector's own errors (written without secrets). Every text is also scrubbed of anything shaped like a
token, a key or a password before it leaves, as a second line of defence.

Import cost: the standard library only, so any module may import this at load time.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from shared.errors import ConnectorError

log = logging.getLogger(__name__)

EVENT = "cosell_event"
"""The dimension that names the record's kind: `sync`, `api_budget`, `dead_letter`, `run` or `token`."""

SYNC_DIMENSIONS = ("cosell_event", "outcome", "direction", "referral_id", "opportunity_id", "duration_ms",
                   "request_ids", "changed_fields", "changed_count", "error_type", "error")
API_BUDGET_DIMENSIONS = ("cosell_event", "api", "used", "limit", "used_share")
DEAD_LETTER_DIMENSIONS = ("cosell_event", "kind", "key", "attempts", "reason")
RUN_DIMENSIONS = ("cosell_event", "job", "outcome", "duration_ms", "error_type")
TOKEN_DIMENSIONS = ("cosell_event", "state", "days_left")

FAILED_OUTCOMES = frozenset({"failed"})
"""Outcomes logged as warnings (and counted as failures by the README's queries)."""

_MAX_TEXT = 300
_MAX_LIST = 20
_SCRUB = (
    # A JWT (access, refresh or id token).
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "***"),
    # An Authorization header's credentials.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    # key=value pairs of URLs, connection strings and form bodies whose value is a credential.
    (re.compile(r"(?i)\b(code|sig|token|access_token|refresh_token|id_token|client_secret|client_assertion"
                r"|password|secret|accountkey|sharedaccesskey)=[^&;\s]+"), r"\1=***"),
)


def scrub(value: object, limit: int = _MAX_TEXT) -> str:
    """One line of at most `limit` characters, with anything credential-shaped replaced by `***`."""
    text = " ".join(str(value).split())
    for shape, replacement in _SCRUB:
        text = shape.sub(replacement, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _name(value: str | Enum) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def _joined(values: Iterable[object]) -> str | None:
    items = [scrub(v, 100) for v in values if str(v).strip()]
    return ",".join(items[:_MAX_LIST]) or None


def _emit(level: int, event: str, dimensions: dict[str, object | None], words: Iterable[str]) -> None:
    """Log one record: known dimensions as `extra` (customDimensions), the same as words in the message.

    Free text (an error, a reason) comes last in `words`, so `parse message with ... "error=" error` takes
    the rest of the line.
    """
    extra = {EVENT: event, **{name: value for name, value in dimensions.items() if value is not None}}
    text = " ".join(f"{name}={extra[name]}" for name in words if name in extra)
    log.log(level, "cosell %s %s", event, text, extra=extra)


def log_sync(outcome: str | Enum, *, direction: str | Enum | None = None, referral_id: str | None = None,
             opportunity_id: str | None = None, duration_ms: float | None = None,
             request_ids: Iterable[str] = (), changed_fields: Iterable[str] = (),
             error: BaseException | None = None) -> None:
    """Record one sync of one referral/opportunity pair: the "syncs", "failures" and "latency" metrics.

    Args:
        outcome: what happened (`SyncOutcome`: created, updated, no_change, conflict, skipped, failed).
        direction: e.g. "pc_to_sf" or "sf_to_pc".
        referral_id: the Partner Center referral id, when known.
        opportunity_id: the Salesforce Opportunity id, when known.
        duration_ms: wall time of the sync.
        request_ids: the remote services' request ids of the calls made (what support asks for).
        changed_fields: names of the fields written; never their values.
        error: why it failed. Its type is logged, its message only for the connector's own errors.
    """
    fields = sorted({str(name) for name in changed_fields})
    outcome_name = _name(outcome)
    _emit(logging.WARNING if outcome_name in FAILED_OUTCOMES else logging.INFO, "sync", {
        "outcome": outcome_name,
        "direction": scrub(_name(direction), 40) if direction else None,
        "referral_id": scrub(referral_id, 100) if referral_id else None,
        "opportunity_id": scrub(opportunity_id, 100) if opportunity_id else None,
        "duration_ms": round(float(duration_ms), 1) if duration_ms is not None else None,
        "request_ids": _joined(request_ids),
        "changed_fields": _joined(fields),
        "changed_count": len(fields),
        "error_type": type(error).__name__ if error is not None else None,
        "error": scrub(error) if isinstance(error, ConnectorError) else None,
    }, ("outcome", "direction", "referral_id", "opportunity_id", "duration_ms", "changed_count", "request_ids",
        "error_type", "error"))


def log_api_budget(api: str, *, used: int, limit: int | None) -> None:
    """Record an API budget reading (e.g. Salesforce's `Sforce-Limit-Info: api-usage=used/limit`).

    Args:
        api: which budget, e.g. "salesforce".
        used: calls used in the current window.
        limit: the window's allowance, when the service tells it.
    """
    _emit(logging.INFO, "api_budget", {
        "api": scrub(api, 40),
        "used": int(used),
        "limit": int(limit) if limit else None,
        "used_share": round(used / limit, 4) if limit else None,
    }, ("api", "used", "limit", "used_share"))


def log_dead_letter(kind: str, key: str, *, attempts: int, reason: str) -> None:
    """Record work that went to the dead letters (worth an alert on any).

    Args:
        kind: what kind of work, e.g. "referral" or "opportunity".
        key: its id.
        attempts: how often it was tried.
        reason: the last error in words a seller understands (scrubbed and shortened here).
    """
    _emit(logging.ERROR, "dead_letter", {
        "kind": scrub(kind, 40),
        "key": scrub(key, 100),
        "attempts": int(attempts),
        "reason": scrub(reason),
    }, ("kind", "key", "attempts", "reason"))


@dataclass
class Run:
    """One run of a scheduled job, as `logged_run` records it; the job sets `outcome` when it did not succeed
    without raising (e.g. "paused" when the API budget held it back)."""

    job: str
    outcome: str = "succeeded"


@contextmanager
def logged_run(job: str) -> Iterator[Run]:
    """Record one run of a timer job (`run` event: job, outcome, duration), failed when it raises.

    Why: "no successful poll or reconcile for three schedules" is the alert that notices a connector that
    stopped syncing without any error to show (infra/alerts/stale-runs.kql): it needs every run, good or not.
    """
    run, started = Run(job), time.monotonic()
    try:
        yield run
    except BaseException as exc:
        run.outcome = "failed"
        _log_run(run, started, exc)
        raise
    _log_run(run, started, None)


def _log_run(run: Run, started: float, error: BaseException | None) -> None:
    _emit(logging.WARNING if run.outcome == "failed" else logging.INFO, "run", {
        "job": scrub(run.job, 60),
        "outcome": scrub(run.outcome, 40),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "error_type": type(error).__name__ if error is not None else None,
    }, ("job", "outcome", "duration_ms", "error_type"))


def log_token(state: str, *, days_left: float | None = None) -> None:
    """Record the Partner Center refresh token's health: `refreshed` with the days left before it expires,
    `refused` (revoked, expired, MFA missing) or `unreachable` (the authority did not answer). Never the token.

    Why: a refused or expiring token stops every sync until someone re-consents with MFA; the alert
    (infra/alerts/token.kql) gives two weeks' notice.
    """
    _emit(logging.INFO if state == "refreshed" else logging.WARNING, "token", {
        "state": scrub(state, 40),
        "days_left": round(float(days_left), 1) if days_left is not None else None,
    }, ("state", "days_left"))


__all__ = [
    "API_BUDGET_DIMENSIONS",
    "DEAD_LETTER_DIMENSIONS",
    "EVENT",
    "FAILED_OUTCOMES",
    "RUN_DIMENSIONS",
    "SYNC_DIMENSIONS",
    "TOKEN_DIMENSIONS",
    "Run",
    "log_api_budget",
    "log_dead_letter",
    "log_sync",
    "log_token",
    "logged_run",
    "scrub",
]
