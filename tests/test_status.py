"""The status report, page and terminal text as plain functions, against the real Azurite.

What matters to a person looking at the page: each side's health is judged right, the lists stay bounded,
user text (HTML, quotes, emoji) is shown as text and never runs, and no function key ever appears.
"""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser
from typing import Any

import pytest

from shared.errors import ConfigError, Unavailable
from shared.models.records import Link, StatusDoc, SyncLogEntry, SyncOutcome, SyncState
from shared.models.webhooks import WebhookRegistration
from shared.status import collect, content_security_policy, redact, render_page, render_text
from shared.status import report as status_report
from shared.status.report import ago, budget_health, poll_health, token_health
from shared.store import Store
from tests.fixtures.status import HOSTILE, SECRET, seed

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
OWN = "https://cosell.example/api/partnercenter/events"


def _registered() -> WebhookRegistration:
    return WebhookRegistration(webhook_url=f"{OWN}?code={SECRET}", webhook_events=["referral-created", "referral-updated"])


@pytest.fixture
def store(azurite: str, table_prefix: str) -> Store:
    return Store.from_connection_string(azurite, prefix=table_prefix)


class _Tags(HTMLParser):
    """Every start tag with its attributes, to check what a browser would build from the page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def test_collect_reports_every_side_counts_and_lists(store: Store) -> None:
    names = seed(store, now=NOW)

    report = collect(store, webhook=_registered, own_url=OWN, now=NOW)

    health = report["health"]
    assert {key: item["state"] for key, item in health.items()} == {
        "salesforce_poll": "ok", "partner_center_reconcile": "ok", "partner_center_token": "ok",
        "webhook": "ok", "salesforce_budget": "ok", "salesforce_push": "unknown"}
    assert health["salesforce_push"]["summary"].startswith("not configured: the poll delivers")
    assert health["salesforce_poll"]["summary"] == "last success 1 min ago; 3 rows read, 3 opportunities queued"
    assert health["partner_center_reconcile"]["summary"] == "last run 9 min ago: 12 referrals listed, 3 items queued"
    assert health["partner_center_token"]["summary"] == (
        "refreshed 20 min ago; refresh token 12 days old, expires around 2027-02-05")
    assert health["webhook"]["url"] == f"{OWN}?code=***" and health["webhook"]["points_here"] is True
    assert health["salesforce_budget"]["summary"].startswith("1830 of 15000 daily calls used (12.2%)")
    assert report["counts"] == {"links": 3, "links_more": False, "open_intents": 1, "dead_letters": 2,
                                "dead_letters_more": False, "sync_log_window": 5,
                                "sync_log_outcomes": {"conflict": 1, "created": 1, "failed": 1, "skipped": 1,
                                                      "updated": 1}}
    # Newest first; changes as rows; conflicts and account candidates apart from the field changes.
    assert [e["outcome"] for e in report["sync_log"]] == ["skipped", "failed", "conflict", "updated", "created"]
    conflict = report["sync_log"][2]
    assert conflict["changes"] == [{"field": "dealValue", "before": 100, "after": 200, "to": "salesforce"}]
    assert conflict["conflicts"] == [{"field": "closingDate", "partner_center": "2027-02-01",
                                      "salesforce": "2027-03-01", "winner": "salesforce"}]
    created = report["sync_log"][4]
    assert [c["id"] for c in created["account_candidates"]] == ["001A", "001B"]
    notes = report["sync_log"][3]["changes"][1]
    assert notes["field"] == "notes" and notes["after"].endswith("… (497 characters)") and len(notes["after"]) < 330
    # Dead letters newest first, with what they are about; a relay shows only its masked URL.
    letters = {d["key"]: d for d in report["dead_letters"]}
    assert [d["key"] for d in report["dead_letters"]] == [names["referral_letter"], names["relay_letter"]]
    assert letters[names["referral_letter"]]["subject"] == "referral ref-ccc"
    assert letters[names["relay_letter"]]["subject"] == "relay to https://relay.example/hook?code=***"
    assert all(d["replayable"] for d in report["dead_letters"])
    # Links carry the deal's name and stage from their sync state (no Salesforce call), newest first.
    assert [(link["referral_id"], link["name"]) for link in report["links"]][0] == ("ref-aaa", "Contoso – Azure migration 🚀")
    assert report["links"][2]["last_error"] == "timeout calling https://relay.example/hook?code=***"
    assert report["intents"] == [{"opportunity_id": "006INTENT0000001",
                                  "attempted_at": (NOW - dt.timedelta(minutes=3)).isoformat()}]
    assert SECRET not in json.dumps(report, ensure_ascii=False)


def test_lists_are_bounded_and_an_exact_id_finds_any_link(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_report, "LOG_LIMIT", 4)
    monkeypatch.setattr(status_report, "LINK_LIMIT", 3)
    monkeypatch.setattr(status_report, "COUNT_CAP", 6)
    for i in range(8):
        store.links.create(Link(referral_id=f"r{i}", opportunity_id=f"006{i:015d}"))
        store.state.put(SyncState(referral_id=f"r{i}", opportunity_id=f"006{i:015d}", base={"name": f"Deal {i}"}))
    for i in range(6):
        store.synclog.append(SyncLogEntry(at=NOW - dt.timedelta(minutes=i), direction="both",
                                          outcome=SyncOutcome.UPDATED, referral_id=f"r{i}"))

    report = collect(store, webhook=lambda: None, now=NOW)
    assert [e["referral_id"] for e in report["sync_log"]] == ["r0", "r1", "r2", "r3"]
    assert report["counts"]["links"] == 6 and report["counts"]["links_more"] is True
    assert sorted(link["referral_id"] for link in report["links"]) == ["r0", "r1", "r2"]
    assert all(link["name"] == f"Deal {link['referral_id'][1:]}" for link in report["links"])

    found = collect(store, webhook=lambda: None, now=NOW, search="006000000000000007")
    assert len(found["links"]) == 4 and found["links"][0]["referral_id"] == "r7"
    assert found["links"][0]["name"] == "Deal 7" and found["search"] == "006000000000000007"
    assert len(collect(store, webhook=lambda: None, now=NOW, search="r1")["links"]) == 3  # already listed


def test_webhook_failure_is_a_line_on_the_page_not_a_failed_page(store: Store) -> None:
    def refused() -> WebhookRegistration:
        raise Unavailable(f"Partner Center answered 503 at https://api.example/registration?code={SECRET}")

    def broken() -> WebhookRegistration:
        raise RuntimeError("a bug")

    def unconfigured() -> WebhookRegistration:
        raise ConfigError("setting PARTNER_CENTER_TENANT_ID is not set")

    webhook = collect(store, webhook=refused, own_url=OWN, now=NOW)["health"]["webhook"]
    assert webhook["state"] == "error" and webhook["summary"] == (
        "could not be read: Partner Center answered 503 at https://api.example/registration?code=***")
    assert collect(store, webhook=broken, now=NOW)["health"]["webhook"]["summary"] == (
        "could not be read: unexpected RuntimeError; see the function logs")
    assert "PARTNER_CENTER_TENANT_ID" in collect(store, webhook=unconfigured, now=NOW)["health"]["webhook"]["summary"]

    nothing = collect(store, webhook=lambda: None, own_url=OWN, now=NOW)["health"]["webhook"]
    assert nothing["state"] == "error" and nothing["summary"] == "not registered: Partner Center sends no events"
    elsewhere = collect(store, webhook=lambda: WebhookRegistration(webhook_url="https://other.example/hook",
                                                                   webhook_events=["referral-created"]),
                        own_url=OWN, now=NOW)["health"]["webhook"]
    assert elsewhere["state"] == "warning" and elsewhere["summary"] == "registered to https://other.example/hook, not to this app"
    unknown = collect(store, webhook=_registered, own_url=None, now=NOW)["health"]["webhook"]
    assert unknown["state"] == "ok" and unknown["points_here"] is None and "public URL is not set" in unknown["summary"]


def test_health_judgements() -> None:
    def doc(name: str, **data: Any) -> StatusDoc:
        return StatusDoc(name=name, data=data)

    minutes = lambda n: (NOW - dt.timedelta(minutes=n)).isoformat()  # noqa: E731
    assert poll_health(None, NOW)["state"] == "unknown"
    assert poll_health(doc("p", last_success=minutes(30)), NOW) == {
        "state": "warning", "summary": "last success 30 min ago", "last_success": minutes(30), "last_error": None,
        "last_error_at": None, "read": None, "handed_on": None}
    failing = poll_health(doc("p", last_success=minutes(30), last_error=f"login refused at https://x/?code={SECRET}",
                              last_error_at=minutes(1)), NOW)
    assert failing["state"] == "error" and failing["summary"] == "failing (1 min ago): login refused at https://x/?code=***"

    assert token_health(doc("t", last_error="AADSTS50076 MFA", mfa_required=True, last_error_at=minutes(2)),
                        NOW)["state"] == "error"
    old = token_health(doc("t", last_refresh_at=minutes(5), warning="the refresh token is 61 days old"), NOW)
    assert old["state"] == "warning" and old["summary"] == "the refresh token is 61 days old"

    reserved = budget_health(doc("b", used=13000, limit=15000, budget_share=0.8, state="reserved",
                                 observed_at=minutes(1)), NOW)
    assert reserved["state"] == "warning" and reserved["summary"] == (
        "13000 of 15000 daily calls used (86.7%); background work pauses at 80% (seen 1 min ago)")
    assert budget_health(doc("b", used=15000, limit=15000, state="exhausted"), NOW)["state"] == "error"
    assert budget_health(doc("b", used=1, limit=100000, state="ok"), NOW)["summary"].startswith(
        "1 of 100000 daily calls used (under 0.1%)")
    assert poll_health(doc("p", last_success=minutes(0), read=1), NOW)["summary"] == "last success just now; 1 row read"

    assert [ago(NOW - dt.timedelta(seconds=s), NOW) for s in (1, 42, 300, 7200, 3 * 86400)] == [
        "just now", "42 s ago", "5 min ago", "2 h ago", "3 days ago"]
    assert ago(None, NOW) == "never"


def test_status_document_names_match_their_writers() -> None:
    from shared.partner_center.token import TOKEN_STATUS
    from shared.salesforce.budget import BUDGET_DOC
    from shared.salesforce.polling import POLL_DOC
    from shared.sync.reconcile import STATUS_DOC

    assert (status_report.POLL_DOC, status_report.RECONCILE_DOC, status_report.TOKEN_DOC, status_report.BUDGET_DOC) == (
        POLL_DOC, STATUS_DOC, TOKEN_STATUS, BUDGET_DOC)


def test_redact_masks_secret_query_values_only() -> None:
    assert redact("see https://a.example/x?code=abc&name=joe and ?sig=xyz%2B1") == (
        "see https://a.example/x?code=***&name=joe and ?sig=***")
    assert redact(None) == ""


def test_page_shows_hostile_text_as_text_and_runs_only_its_own_script(store: Store) -> None:
    seed(store, now=NOW)
    report = collect(store, webhook=_registered, own_url=OWN, now=NOW)
    page = render_page(report, nonce="n0nce", replay_path="/api/status/replay")
    parsed = _parse(page)

    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert scripts == [{"nonce": "n0nce"}]
    assert [attrs for tag, attrs in parsed.tags if tag == "style"] == [{"nonce": "n0nce"}]
    assert not [tag for tag, _ in parsed.tags if tag in ("img", "iframe", "link", "object", "embed", "form")]
    assert not [(tag, name) for tag, attrs in parsed.tags for name in attrs if name.startswith("on") or name == "style"]
    # Offline: nothing is loaded from anywhere; the page's own links are relative.
    assert not [attrs for _, attrs in parsed.tags if "src" in attrs]
    assert {attrs["href"] for tag, attrs in parsed.tags if tag == "a"} == {
        "status.json", "#health", "#dead-letters", "#sync-log", "#links"}
    text = "".join(parsed.text)
    assert HOSTILE in text  # shown to people exactly as typed...
    assert "Contoso – Azure migration 🚀" in text and "Ünïcødé GmbH · 数据平台" in text
    assert '<script>alert("pwned")' not in page  # ...and escaped in the markup
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    assert SECRET not in page
    # The dead letters can be replayed from the page; the link search covers name and both ids.
    assert [attrs["data-replay-key"] for tag, attrs in parsed.tags if "data-replay-key" in attrs] == [
        "referral-ref-ccc", "msg-relay-1"]
    searches = [attrs["data-search"] for tag, attrs in parsed.tags if "data-search" in attrs]
    assert searches[0] == "contoso – azure migration 🚀 ref-aaa 006000000000000001"
    body = next(attrs for tag, attrs in parsed.tags if tag == "body")
    assert body["data-replay"] == "/api/status/replay"
    assert "Worth a look: 2 dead letters" in text
    policy = content_security_policy("n0nce")
    assert "script-src 'nonce-n0nce'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy


def test_page_of_an_empty_store_says_so(store: Store) -> None:
    report = collect(store, webhook=lambda: None, now=NOW)
    text = "".join(_parse(render_page(report, nonce="n")).text)
    for line in ("Nothing synced yet.", "No dead letters: nothing is waiting for a person.", "No links yet.",
                 "Needs attention: Webhook registration", "has not run yet"):
        assert line in text


def test_dry_run_is_shown_everywhere(store: Store) -> None:
    report = collect(store, webhook=lambda: None, dry_run=True, now=NOW)
    assert "DRY RUN: nothing is written" in render_page(report, nonce="n")
    assert "[DRY RUN: nothing is written]" in render_text(report).splitlines()[0]


def test_terminal_text_tells_the_same_story_without_escape_sequences(store: Store) -> None:
    seed(store, now=NOW)
    store.synclog.append(SyncLogEntry(at=NOW, direction="both", outcome=SyncOutcome.UPDATED, referral_id="r-x",
                                      changes={"name": ["Old", "New\x1b]0;owned\x07 name\nline two", "partner_center"]}))
    text = render_text(collect(store, webhook=_registered, own_url=OWN, now=NOW), log_limit=3)

    lines = text.splitlines()
    assert "  ✔ Webhook registration      OK         points here, 2 event(s)" in lines
    assert "  links 3 · open create intents 1 · dead letters 2" in lines
    assert "  msg-relay-1  relay to https://relay.example/hook?code=***  5 tries, last failed 6 min ago" in lines
    assert "      name: Old → New\\x1b]0;owned\\x07 name↵line two  (to PC)" in lines
    assert "Recent syncs (newest first, 3 of the last 6)" in lines
    assert "\x1b" not in text and SECRET not in text


def test_the_page_says_when_salesforce_is_retiring_the_configured_login(store: Store,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The username-password flow stops working for connected apps on 20 Feb 2027 (Salesforce Help 005461976)."""
    from shared.settings import get_settings
    from shared.status.report import login_health

    for name, value in {"SALESFORCE_CLIENT_ID": "app", "SALESFORCE_CLIENT_SECRET": "s3cret",
                        "SALESFORCE_USERNAME": "integration@example.com", "SALESFORCE_PASSWORD": "pw"}.items():
        monkeypatch.setenv(name, value)
    password = login_health(get_settings())
    assert password["state"] == "warning" and password["grant"] == "password"
    assert "retiring" in password["summary"] and "2027-02-20" in password["summary"]
    report = collect(store, webhook=lambda: None, now=NOW, salesforce_login=password)
    text = "".join(_parse(render_page(report, nonce="n")).text)
    assert "Salesforce login" in text and "switch to the JWT bearer flow" in text
    assert "Needs attention:" in text and "Salesforce login" in text.split("Needs attention:", 1)[1]
    assert "s3cret" not in text and "pw" not in render_text(report).split()

    monkeypatch.delenv("SALESFORCE_PASSWORD")
    get_settings.cache_clear()
    assert login_health(get_settings()) == {"state": "error", "grant": None, "summary": (
        "setting SALESFORCE_LOGIN_URL: the client credentials flow (SALESFORCE_CLIENT_SECRET) is refused by "
        "Salesforce on login.salesforce.com: set the org's My Domain URL (https://MyCompany.my.salesforce.com, "
        "or https://MyCompany--Sandbox.sandbox.my.salesforce.com)")}
    monkeypatch.setenv("SALESFORCE_LOGIN_URL", "https://acme.my.salesforce.com")
    get_settings.cache_clear()
    mine = login_health(get_settings())
    assert (mine["state"], mine["summary"]) == ("ok", "client credentials login at acme.my.salesforce.com")


LEAKS = {
    "access_token": "https://login.example/cb#access_token=AT-leak-1&expires_in=3599",
    "refresh_token": "token request failed: grant_type=refresh_token&refresh_token=RT-leak-2&scope=x",
    "client_secret": 'Entra said {"client_secret": "CS-leak-3", "error": "invalid_client"}',
    "key": "relay to https://relay.example/hook?key=KEY-leak-4 refused",
    "authorization": "request headers: Authorization: Bearer AUTH-leak-5.eyJ; x-functions-key: FK-leak-6",
    "signature": '{"Authorization": "Signature SIG-leak-7=="}',
    "session": "Salesforce answered 401 for session 00D5g000004XyZa!AQ4AQSF-leak-8.Zz_x",
}
"""Texts carrying every kind of secret a remote service may echo into an error, each value marked `leak`."""


def test_no_secret_in_any_text_the_page_status_json_and_terminal_show(store: Store) -> None:
    from shared.models.records import DeadLetter

    seed(store, now=NOW)
    for index, (name, text) in enumerate(LEAKS.items()):
        store.dead_letters.put(DeadLetter(kind="referral", key=f"referral-leak-{name}", reason=text, attempts=5,
                                          payload={"referral_id": f"r-{name}"}))
        store.synclog.append(SyncLogEntry(at=NOW - dt.timedelta(seconds=index), direction="both",
                                          outcome=SyncOutcome.FAILED, referral_id=f"r-{name}", message=text))
        store.links.create(Link(referral_id=f"r-{name}", opportunity_id=f"006LEAK{index:011d}"))
        store.state.put(SyncState(referral_id=f"r-{name}", opportunity_id=f"006LEAK{index:011d}", last_error=text))
    everything = " | ".join(LEAKS.values())
    for name in ("salesforce-poll", "partner-center-token"):
        doc = store.status.get(name)
        doc.data = {**doc.data, "last_error": everything, "last_error_at": NOW.isoformat()}
        store.status.put(doc)

    def failing_registration() -> WebhookRegistration:
        raise Unavailable(everything)

    report = collect(store, webhook=failing_registration, own_url=OWN, now=NOW)
    shown = {"page": render_page(report, nonce="n0nce"), "status.json": json.dumps(report, ensure_ascii=False),
             "terminal": render_text(report)}

    for where, text in shown.items():
        leaked = [value for value in ("AT-leak-1", "RT-leak-2", "CS-leak-3", "KEY-leak-4", "AUTH-leak-5", "FK-leak-6",
                                      "SIG-leak-7", "AQ4AQSF-leak-8") if value in text]
        assert leaked == [], where
    letters = {d["key"]: d["reason"] for d in report["dead_letters"]}
    assert letters["referral-leak-authorization"] == "request headers: Authorization: Bearer ***; x-functions-key: ***"
    assert letters["referral-leak-session"] == "Salesforce answered 401 for session 00D5g000004XyZa!***"
    assert letters["referral-leak-refresh_token"] == ("token request failed: grant_type=refresh_token&refresh_token=***"
                                                      "&scope=x")
