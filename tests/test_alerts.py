"""The Azure Monitor alerts (infra/alerts/*.kql, deployed by infra/modules/monitoring.bicep) fire on the
telemetry the real code writes, and stay quiet when all is well.

Each test captures the log records a real code path writes, turns them into Application Insights rows
(`traces`: extra fields as string customDimensions) and runs the very query text Bicep deploys over them
(tests/fixtures/kql.py). Renaming an event or a dimension in shared/telemetry.py fails here.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions.timer as func_timer
import pytest
import requests
from pycep import BicepParser

from shared.errors import ConnectorError
from shared.models.records import StatusDoc
from shared.partner_center import RefreshTokenCredential
from shared.partner_center.token import REFRESH_TOKEN_SECRET, TOKEN_STATUS
from shared.store import Store
from shared.sync.processor import keep_dead_letter
from shared.telemetry import logged_run
from tests.fixtures.kql import Query, Row, trace_of

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "infra" / "alerts"
NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)


def app_functions() -> dict[str, Any]:
    """The real app's functions by name (a fresh FunctionApp: the library lets get_functions() run once)."""
    import azure.functions as func

    import function_app

    app = func.FunctionApp()
    for blueprint in function_app.BLUEPRINTS:
        app.register_functions(blueprint)
    return {f.get_function_name(): f for f in app.get_functions()}


def query(name: str) -> Query:
    return Query((ALERTS / f"{name}.kql").read_text(encoding="utf-8"))


def traces(caplog: pytest.LogCaptureFixture) -> list[Row]:
    return [trace_of(record) for record in caplog.records]


@pytest.fixture
def telemetry(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="shared.telemetry")
    return caplog


def test_bicep_deploys_one_rule_per_query_file_with_the_thresholds_asked_for() -> None:
    monitoring = BicepParser().parse(file_path=ROOT / "infra" / "modules" / "monitoring.bicep")
    alerts = {a["name"]: a for a in monitoring["variables"]["alerts"]["value"]}
    loaded = {a["query"]["function"]["parameters"]["file_path"] for a in alerts.values()}
    assert loaded == {f"../alerts/{p.name}" for p in ALERTS.glob("*.kql")}
    assert set(alerts) == {"dead-letters", "token", "stale-runs", "no-runs", "receiver-5xx"}
    # stale-runs looks back a day; no-runs takes over where that day holds no run at all.
    assert alerts["stale-runs"]["window"] == alerts["no-runs"]["window"] == "P1D"
    rule = monitoring["resources"]["alertRules"]
    assert rule["type"] == "Microsoft.Insights/scheduledQueryRules"
    criterion = rule["config"]["config"]["properties"]["criteria"]["allOf"][0]
    # A rule fires as soon as its query returns one row.
    assert (criterion["timeAggregation"], criterion["operator"], criterion["threshold"]) == ("Count", "GreaterThan", 0)
    main = BicepParser().parse(file_path=ROOT / "infra" / "main.bicep")
    assert main["modules"]["monitoring"]["config"]["params"]["alertEmail"] == "alertEmail"


def test_a_dead_letter_fires_the_dead_letter_alert(telemetry: pytest.LogCaptureFixture, pc_store: Store) -> None:
    assert query("dead-letters").run({"traces": []}, now=NOW) == []
    keep_dead_letter(pc_store, "referral", "ref-1", {"referral_id": "ref-1"}, "Partner Center refused: 400", attempts=5)

    rows = query("dead-letters").run({"traces": traces(telemetry)}, now=NOW)

    assert [(r["kind"], r["key"]) for r in rows] == [("referral", "referral-ref-1")]


class _Authority:
    """An MSAL stand-in that redeems the refresh token without rotating it (so the token ages)."""

    def acquire_token_by_refresh_token(self, refresh_token: str, scopes: list[str]) -> dict[str, object]:
        return {"access_token": "at", "expires_in": 3600}


def _token_after(store: Store, days_old: float) -> None:
    obtained = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days_old)
    store.status.put(StatusDoc(name=TOKEN_STATUS, data={"refresh_token_obtained_at": obtained.isoformat()}))
    store.secrets.put(REFRESH_TOKEN_SECRET, "rt-stored")
    RefreshTokenCredential(lambda: _Authority(), secrets=store.secrets, status=store.status,
                           seed_refresh_token=None).token()


@pytest.mark.parametrize(("days_old", "fires"), [(10, False), (75, False), (77, True), (89, True)])
def test_the_token_alert_fires_two_weeks_before_the_refresh_token_expires(
        telemetry: pytest.LogCaptureFixture, pc_store: Store, days_old: float, fires: bool) -> None:
    _token_after(pc_store, days_old)
    rows = query("token").run({"traces": traces(telemetry)}, now=NOW)
    assert bool(rows) is fires
    assert all(0 < row["days_left"] <= 14 for row in rows)


def test_a_refused_token_fires_the_token_alert(telemetry: pytest.LogCaptureFixture, pc_store: Store) -> None:
    credential = RefreshTokenCredential(lambda: _Authority(), secrets=pc_store.secrets, status=pc_store.status,
                                        seed_refresh_token="rt")
    credential._record_failure("AADSTS700082: the refresh token has expired")  # what a refused redemption records

    rows = query("token").run({"traces": traces(telemetry)}, now=NOW)

    assert [row["state"] for row in rows] == ["refused"]


class _AnsweringAuthority:
    """Microsoft Entra's answer to a refresh-token redemption, or the network failing before one."""

    def __init__(self, answer: dict[str, object] | Exception) -> None:
        self.answer = answer

    def acquire_token_by_refresh_token(self, refresh_token: str, scopes: list[str]) -> dict[str, object]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(("answer", "state", "fires"), [
    ({"error": "invalid_grant", "error_description": "AADSTS700082: The refresh token has expired due to inactivity"},
     "refused", True),
    ({"error": "temporarily_unavailable", "error_description": "AADSTS50196: busy"}, "unreachable", False),
    (requests.ConnectionError("connection reset"), "unreachable", False),
])
def test_only_a_refusal_not_an_unreachable_authority_fires_the_token_alert(
        telemetry: pytest.LogCaptureFixture, pc_store: Store, answer: dict[str, object] | Exception, state: str,
        fires: bool) -> None:
    """A network blip or a busy authority is retried and must not page anyone with a severity-1 alert."""
    pc_store.secrets.put(REFRESH_TOKEN_SECRET, "rt-stored")
    credential = RefreshTokenCredential(lambda: _AnsweringAuthority(answer), secrets=pc_store.secrets,
                                        status=pc_store.status, seed_refresh_token=None)
    with pytest.raises(ConnectorError):
        credential.token()

    recorded = traces(telemetry)
    assert [row["customDimensions"]["state"] for row in recorded
            if row["customDimensions"].get("cosell_event") == "token"] == [state]
    assert bool(query("token").run({"traces": recorded}, now=NOW)) is fires
    assert "rt-stored" not in telemetry.text


def _runs(telemetry: pytest.LogCaptureFixture, outcomes: list[str], *, every: dt.timedelta,
          last: dt.datetime) -> list[Row]:
    """Runs of the poll through `logged_run`, as the timer makes them, stamped `every` apart up to `last`."""
    for outcome in outcomes:
        try:
            with logged_run("salesforce_poll") as run:
                if outcome == "failed":
                    raise ConnectionError("Salesforce did not answer")
                if outcome == "paused":
                    run.outcome = outcome  # as the poll's timer says when the API budget held it back
        except ConnectionError:
            pass
    rows = traces(telemetry)
    for index, row in enumerate(rows):
        row["timestamp"] = last - every * (len(rows) - 1 - index)
    return rows


@pytest.mark.parametrize(("outcomes", "minutes_since_last", "fires"), [
    (["succeeded"] * 5, 1, False),                     # polling every minute, all well
    (["succeeded"] * 5, 3, False),                     # the last success three schedules ago: not yet
    (["succeeded"] * 5, 4, True),                      # the timer stopped: more than three schedules
    (["succeeded"] * 3 + ["failed"] * 3, 0, False),    # failing for three schedules: not more
    (["succeeded"] * 3 + ["failed"] * 4, 0, True),     # failing for four
    (["succeeded"] * 2 + ["paused"] * 5, 0, True),     # held back by the API budget
    (["failed"] * 3, 0, True),                         # never succeeded
])
def test_the_stale_run_alert_fires_after_three_schedules_without_success(
        telemetry: pytest.LogCaptureFixture, outcomes: list[str], minutes_since_last: int, fires: bool) -> None:
    rows = _runs(telemetry, outcomes, every=dt.timedelta(minutes=1),
                 last=NOW - dt.timedelta(minutes=minutes_since_last))
    found = query("stale-runs").run({"traces": rows}, now=NOW)
    assert bool(found) is fires, found
    assert all(row["job"] == "salesforce_poll" for row in found)


def _timer_runs(telemetry: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> list[Row]:
    """One run of each real timer function (the poll paused by the budget, the reconcile failing), as traces."""
    import shared.runtime
    import shared.salesforce.polling
    import shared.sync.reconcile

    functions = {name: f.get_user_function() for name, f in app_functions().items()}

    monkeypatch.setattr(shared.runtime, "services", lambda: object())
    monkeypatch.setattr(shared.salesforce.polling, "poll_changes", lambda services: None)  # paused by the budget

    def refused(services: Any) -> None:
        raise ConnectionError("Partner Center did not answer")

    monkeypatch.setattr(shared.sync.reconcile, "reconcile", refused)
    timer = func_timer.TimerRequest(past_due=False)
    functions["salesforce_poll"](timer)
    with pytest.raises(ConnectionError):
        functions["partner_center_reconcile"](timer)
    return traces(telemetry)


def test_the_timers_record_their_runs_under_the_names_the_alert_groups_by(
        telemetry: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _timer_runs(telemetry, monkeypatch)

    runs = [r["customDimensions"] for r in rows if r["customDimensions"].get("cosell_event") == "run"]
    assert [(r["job"], r["outcome"]) for r in runs] == [("salesforce_poll", "paused"),
                                                       ("partner_center_reconcile", "failed")]
    assert runs[1]["error_type"] == "ConnectionError"


def test_the_no_runs_alert_fires_on_silence_and_not_once_both_timers_ran(
        telemetry: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # An app whose host never started writes nothing at all: the alert must fire on no record.
    [silent] = query("no-runs").run({"traces": []}, now=NOW)
    assert (silent["poll_runs"], silent["reconcile_runs"]) == (0, 0)

    rows = _timer_runs(telemetry, monkeypatch)
    poll_only = [r for r in rows if r["customDimensions"].get("job") != "partner_center_reconcile"]

    assert query("no-runs").run({"traces": poll_only}, now=NOW) == [{"poll_runs": 1, "reconcile_runs": 0}]
    # Failed or paused, a run is a sign of life (stale-runs judges success); both timers ran: quiet.
    assert query("no-runs").run({"traces": rows}, now=NOW) == []


RECEIVER_ROUTES = {"partnercenter/events", "salesforce/outbound", "salesforce/changes"}
"""Where Partner Center and Salesforce deliver to: a 5xx there is a delivery the sender has to retry."""


def test_the_receiver_alert_watches_every_route_partner_center_and_salesforce_deliver_to() -> None:
    text = (ALERTS / "receiver-5xx.kql").read_text(encoding="utf-8")
    names = re.findall(r'"(\w+)"', re.search(r"name in \(([^)]*)\)", text).group(1))
    functions = app_functions()
    assert set(names) <= set(functions), set(names) - set(functions)  # what the host writes as `requests.name`
    assert {functions[name].get_trigger().route for name in names} == RECEIVER_ROUTES


def test_the_receiver_alert_fires_on_their_5xx_only() -> None:
    requests_rows = [{"name": "partner_center_events", "resultCode": "503", "operation_Id": "a"},
                     {"name": "partner_center_events", "resultCode": "202", "operation_Id": "b"},
                     {"name": "partner_center_events", "resultCode": "401", "operation_Id": "c"},
                     {"name": "status", "resultCode": "500", "operation_Id": "d"},
                     {"name": "salesforce_outbound", "resultCode": "503", "operation_Id": "e"},
                     {"name": "salesforce_outbound", "resultCode": "200", "operation_Id": "f"}]

    rows = query("receiver-5xx").run({"requests": [{**r, "timestamp": NOW} for r in requests_rows]}, now=NOW)

    assert [row["operation_Id"] for row in rows] == ["a", "e"]


def test_a_real_5xx_of_the_nudge_route_fires_the_receiver_alert(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nudge route answers 503 when queue storage is down: the request row the host writes for it fires."""
    import azure.functions as func

    import shared.runtime
    from shared.errors import Unavailable

    class Queues:
        down = False

        def send(self, *args: Any, **kwargs: Any) -> None:
            if self.down:
                raise Unavailable("queue storage did not answer")

    queues = Queues()
    monkeypatch.setattr(shared.runtime, "services", lambda: SimpleNamespace(queues=queues))
    function = app_functions()["salesforce_changes"]
    request = func.HttpRequest("POST", "/api/salesforce/changes", body=b'{"ids": ["006000000000001AAA"]}',
                               headers={"content-type": "application/json"})
    requests_rows = []
    for down in (False, True):
        queues.down = down
        response = function.get_user_function()(request)
        requests_rows.append({"name": function.get_function_name(), "resultCode": str(response.status_code),
                              "operation_Id": f"down={down}", "timestamp": NOW})

    rows = query("receiver-5xx").run({"requests": requests_rows}, now=NOW)

    assert [(row["operation_Id"], row["resultCode"]) for row in rows] == [("down=True", "503")]
