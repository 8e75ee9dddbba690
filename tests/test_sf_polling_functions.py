"""The Salesforce blueprint on the local Functions host: the timer polls, the nudge route enqueues, health reports."""

from __future__ import annotations

import time
from collections.abc import Iterator

import azure.functions as func
import pytest
import requests

from sandbox.host import FunctionHost
from sandbox.salesforce import SalesforceSim
from shared.functions import health, salesforce
from shared.runtime import services
from shared.salesforce.polling import POLL_DOC
from shared.store import OPPORTUNITY_QUEUE, Store
from tests.test_sf_polling_sim import RecordingQueues

KEY = "salesforce-test-key"
HOST_JSON = {"version": "2.0", "extensions": {"http": {"routePrefix": "api"}}}


@pytest.fixture
def host(sf_sim: SalesforceSim, azurite: str, table_prefix: str,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FunctionHost, RecordingQueues, Store]]:
    """The blueprint on an in-process host, polling every second; queues recorded, tables under a test prefix."""
    for name, value in {**sf_sim.credentials.settings_env(), "COSELL_STORAGE": azurite,
                        "COSELL_SF_POLL_SCHEDULE": "*/1 * * * * *", "COSELL_LOCAL_FUNCTION_KEY": KEY}.items():
        monkeypatch.setenv(name, value)
    services.cache_clear()
    queues, store = RecordingQueues(), Store.from_connection_string(azurite, prefix=table_prefix)
    services().queues, services().store = queues, store  # type: ignore[misc]
    app = func.FunctionApp()
    for blueprint in (salesforce.bp, health.bp):
        app.register_functions(blueprint)
    running = FunctionHost(app, host_json=HOST_JSON).start()
    yield running, queues, store
    running.stop()
    services.cache_clear()


def wait_for(condition, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
    return result


def test_nudge_route_enqueues_valid_ids_and_refuses_bad_bodies(host: tuple[FunctionHost, RecordingQueues, Store]) -> None:
    running, queues, _ = host
    url = f"{running.url}/api/salesforce/changes"
    queues.sent.clear()
    answer = requests.post(url, params={"code": KEY}, json={"ids": ["006Hs0000000003IAA", "006Hs0000000003IAA"]},
                           timeout=10)
    assert answer.status_code == 202 and answer.json() == {"accepted": 1}
    nudged = [p for q, p in queues.sent if q == OPPORTUNITY_QUEUE and p["source"] == "nudge"]
    assert nudged == [{"opportunity_id": "006Hs0000000003IAA", "source": "nudge", "modstamp": None, "urgent": True}]
    queues.sent.clear()
    for body in ({"ids": ["001Hs0000000003IAA"]}, {"id": "006Hs0000000003IAA"}, {"ids": []}):
        answer = requests.post(url, params={"code": KEY}, json=body, timeout=10)
        assert answer.status_code == 400 and "error" in answer.json()
    assert requests.post(url, params={"code": KEY}, data=b"{", timeout=10).status_code == 400
    assert requests.post(url, json={"ids": ["006Hs0000000003IAA"]}, timeout=10).status_code == 401  # no key
    assert [p for q, p in queues.sent if p["source"] == "nudge"] == []


def test_the_timer_polls_and_health_reports_the_last_poll(host: tuple[FunctionHost, RecordingQueues, Store],
                                                          sf_sim: SalesforceSim) -> None:
    running, queues, store = host
    opted = sf_sim.create("Opportunity", {"Name": "Opted in", "StageName": "Prospecting", "CloseDate": "2027-03-15",
                                          "Sync_with_Partner_Center__c": True})
    wait_for(lambda: any(p["opportunity_id"] == opted for _, p in queues.sent))
    doc = wait_for(lambda: store.status.get(POLL_DOC))
    assert doc.data["last_success"]
    report = requests.get(f"{running.url}/api/health", timeout=10).json()
    assert report["storage"] == "ok" and report["last_salesforce_poll"]
