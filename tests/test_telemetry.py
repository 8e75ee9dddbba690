"""The telemetry records: their custom dimensions (what OpenTelemetry exports as customDimensions), their
message words (what KQL parses without it), and that no secret gets through either."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from shared.errors import Unavailable
from shared.models.records import SyncOutcome
from shared.telemetry import (
    API_BUDGET_DIMENSIONS,
    DEAD_LETTER_DIMENSIONS,
    SYNC_DIMENSIONS,
    log_api_budget,
    log_dead_letter,
    log_sync,
    scrub,
)

ROOT = Path(__file__).resolve().parent.parent
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwiYXVkIjoieCJ9.c2lnbmF0dXJlLXBhcnQ"
# What LogRecord carries by itself; everything else on a record is what the OpenTelemetry logging handler
# exports as attributes, i.e. Application Insights customDimensions.
STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def dimensions(record: logging.LogRecord) -> dict[str, object]:
    return {name: value for name, value in record.__dict__.items() if name not in STANDARD}


def words(record: logging.LogRecord) -> dict[str, str]:
    """The fallback: `key=value` words of the message (free text last, to the end of the line)."""
    text = record.getMessage()
    found = dict(re.findall(r"(\w+)=(\S+)", text.split(" error=")[0].split(" reason=")[0]))
    for tail in ("error", "reason"):
        if f" {tail}=" in text:
            found[tail] = text.split(f" {tail}=", 1)[1]
    return found


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="shared.telemetry")
    return caplog


def test_a_sync_carries_its_ids_outcome_and_latency_as_dimensions(logs: pytest.LogCaptureFixture) -> None:
    log_sync(SyncOutcome.UPDATED, direction="pc_to_sf", referral_id="e1b7c3a0-ref", opportunity_id="006Qy00000AbCdE",
             duration_ms=123.456, request_ids=["pc-req-1", "sf-req-2"], changed_fields=["dealValue", "closingDate"])

    (record,) = logs.records
    assert record.levelno == logging.INFO
    assert dimensions(record) == {
        "cosell_event": "sync", "outcome": "updated", "direction": "pc_to_sf", "referral_id": "e1b7c3a0-ref",
        "opportunity_id": "006Qy00000AbCdE", "duration_ms": 123.5, "request_ids": "pc-req-1,sf-req-2",
        "changed_fields": "closingDate,dealValue", "changed_count": 2,
    }
    assert set(dimensions(record)) <= set(SYNC_DIMENSIONS)


def test_every_dimension_is_a_type_opentelemetry_exports(logs: pytest.LogCaptureFixture) -> None:
    log_sync("failed", referral_id="r-1", error=Unavailable("Partner Center answered 503"))
    log_api_budget("salesforce", used=1200, limit=15000)
    log_dead_letter("referral", "r-1", attempts=5, reason="Partner Center answered 503")

    for record in logs.records:
        for name, value in dimensions(record).items():
            assert type(value) in (str, int, float, bool), (name, value)


def test_the_message_words_say_the_same_when_opentelemetry_is_off(logs: pytest.LogCaptureFixture) -> None:
    log_sync("no_change", direction="sf_to_pc", referral_id="r-9", opportunity_id="006A", duration_ms=8,
             request_ids=["q-1"])
    log_sync("failed", referral_id="r-9", error=Unavailable("Partner Center did not answer in 30 s"))
    log_api_budget("salesforce", used=14000, limit=15000)
    log_dead_letter("opportunity", "006A", attempts=5, reason="Salesforce refused the stage: Closed Won")

    for record in logs.records:
        dims = {name: str(value) for name, value in dimensions(record).items() if name not in
                ("cosell_event", "changed_fields")}
        assert words(record) == dims
        assert record.getMessage().startswith(f"cosell {record.cosell_event} ")


def test_a_failed_sync_is_a_warning_with_the_connectors_own_message(logs: pytest.LogCaptureFixture) -> None:
    log_sync("failed", referral_id="r-1", error=Unavailable("Partner Center answered 503", request_id="req-77"))

    (record,) = logs.records
    assert record.levelno == logging.WARNING
    assert dimensions(record)["error_type"] == "Unavailable"
    assert dimensions(record)["error"] == "Partner Center answered 503 (request-id req-77)"


def test_a_foreign_errors_message_is_not_logged_only_its_type(logs: pytest.LogCaptureFixture) -> None:
    # A library error may quote a whole request: URL with a function key, a body with a token.
    foreign = RuntimeError("POST https://app/api/partnercenter/events?code=host-key-123 body={'refresh_token': 'x'}")
    log_sync("failed", referral_id="r-1", error=foreign)

    (record,) = logs.records
    assert dimensions(record)["error_type"] == "RuntimeError"
    assert "error" not in dimensions(record)
    assert "host-key-123" not in record.getMessage()


@pytest.mark.parametrize(("text", "secret"), [
    (f"token {JWT} refused", JWT.split(".")[1]),
    ("Authorization: Bearer abcdefghijklmnop0123", "abcdefghijklmnop0123"),
    ("https://cosell.azurewebsites.net/api/partnercenter/events?code=FUNCTIONKEY123", "FUNCTIONKEY123"),
    ("DefaultEndpointsProtocol=https;AccountName=st;AccountKey=c2VjcmV0a2V5PT0=;EndpointSuffix=core.windows.net",
     "c2VjcmV0a2V5"),
    ("grant_type=refresh_token&client_secret=s3cr3t-value&refresh_token=0.AAAA-refresh", "s3cr3t-value"),
    ("grant_type=refresh_token&client_secret=s3cr3t-value&refresh_token=0.AAAA-refresh", "0.AAAA-refresh"),
    ("login failed: password=hunter2-and-more", "hunter2-and-more"),
])
def test_credential_shaped_text_never_leaves(logs: pytest.LogCaptureFixture, text: str, secret: str) -> None:
    log_sync("failed", referral_id="r-1", request_ids=[text], error=Unavailable(f"call failed: {text}"))
    log_dead_letter("referral", "r-1", attempts=3, reason=f"gave up: {text}")

    assert len(logs.records) == 2
    for record in logs.records:
        assert secret not in record.getMessage()
        assert all(secret not in str(value) for value in dimensions(record).values())


def test_changed_fields_are_names_only_even_when_given_the_changes(logs: pytest.LogCaptureFixture) -> None:
    # The sync engine keeps `changes` as {field: new value}; iterating it yields the names.
    changes = {"description": "Customer's private notes", "dealValue": 250000}
    log_sync("updated", referral_id="r-1", changed_fields=changes)

    (record,) = logs.records
    assert dimensions(record)["changed_fields"] == "dealValue,description"
    assert "private notes" not in record.getMessage() and "250000" not in record.getMessage()


def test_api_budget_reports_the_share_used(logs: pytest.LogCaptureFixture) -> None:
    log_api_budget("salesforce", used=12000, limit=15000)
    log_api_budget("partner_center", used=40, limit=None)

    first, second = logs.records
    assert dimensions(first) == {"cosell_event": "api_budget", "api": "salesforce", "used": 12000,
                                 "limit": 15000, "used_share": 0.8}
    assert dimensions(second) == {"cosell_event": "api_budget", "api": "partner_center", "used": 40}
    assert set(dimensions(first)) <= set(API_BUDGET_DIMENSIONS)


def test_a_dead_letter_is_an_error_with_a_short_reason(logs: pytest.LogCaptureFixture) -> None:
    log_dead_letter("referral", "r-1", attempts=5, reason="Salesforce said: " + "x" * 1000)

    (record,) = logs.records
    assert record.levelno == logging.ERROR
    assert set(dimensions(record)) == set(DEAD_LETTER_DIMENSIONS)
    assert len(str(dimensions(record)["reason"])) <= 300


def test_scrub_keeps_ordinary_words() -> None:
    assert scrub("Opportunity 006A  closed\nwon") == "Opportunity 006A closed won"


def test_the_readmes_queries_use_only_dimensions_the_code_emits() -> None:
    readme = (ROOT / "infra" / "README.md").read_text(encoding="utf-8")
    used = set(re.findall(r"customDimensions\.(\w+)", readme))
    emitted = set(SYNC_DIMENSIONS) | set(API_BUDGET_DIMENSIONS) | set(DEAD_LETTER_DIMENSIONS)
    assert used, "infra/README.md shows no query over customDimensions"
    assert used <= emitted, used - emitted
    events = set(re.findall(r'cosell_event\s*==\s*"(\w+)"', readme))
    assert events <= {"sync", "api_budget", "dead_letter"} and events
