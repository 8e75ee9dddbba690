"""The Partner Center functions through the real function_app.py on the local host, with Azurite and the simulator.

Covers the contract's routes end to end: a genuine signed webhook is enqueued once and processed; every
forged or malformed delivery is refused with nothing enqueued; the registration routes keep the overwrite
rule; the test event reaches the receiver.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from sandbox.ca import SandboxCA, self_signed
from sandbox.partner_center import PartnerCenterSim
from shared.partner_center.registration import DEFAULT_EVENTS
from shared.store.queues import REFERRAL_QUEUE
from tests.fixtures.partner_center import HOST_JSON, HOST_KEY, QUIET_TIMERS, clear_queues, queues_drained
from tests.fixtures.partner_center import event_body as _event
from tests.fixtures.partner_center import signed_headers as _signed

def _synclog_for(azurite: str, referral_ids: set[str]) -> list[Any]:
    from shared.store import Store

    return [e for e in Store.from_connection_string(azurite).synclog.iter_recent() if e.referral_id in referral_ids]


def _wait(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)
    return result


@pytest.fixture
def pc_host(function_host, pc_sim: PartnerCenterSim, sf_sim):  # type: ignore[no-untyped-def]
    """The real app on the local host, configured for `pc_sim` (and `sf_sim`, where referrals sync to);
    returns a starter taking extra settings."""

    def start(**extra: str):  # type: ignore[no-untyped-def]
        env = {**pc_sim.settings_env(), **sf_sim.credentials.settings_env(), **QUIET_TIMERS,
               "COSELL_LOCAL_FUNCTION_KEY": HOST_KEY, **extra}
        return function_host(env=env, host_json=HOST_JSON)

    return start


def test_genuine_webhook_is_enqueued_once_and_processed(pc_host, pc_sim: PartnerCenterSim,  # type: ignore[no-untyped-def]
                                                        azurite: str) -> None:
    clear_queues(azurite, REFERRAL_QUEUE)
    host = pc_host()
    receiver = f"{host.url}/api/partnercenter/events?code={HOST_KEY}"
    answer = requests.post(f"{host.url}/api/partnercenter/webhook", params={"code": HOST_KEY},
                           json={"url": receiver}, timeout=30)
    assert answer.status_code == 201, answer.text
    assert answer.json()["url"].endswith("/api/partnercenter/events?code=***")

    referral_id = pc_sim.create_incoming({"name": "Fabrikam - Dynamics upgrade"})["id"]
    deliveries = pc_sim.wait_for_deliveries(lambda log: any(d["status"] == 202 for d in log))
    assert [d["status"] for d in deliveries] == [202]
    _wait(lambda: _synclog_for(azurite, {referral_id}) and queues_drained(azurite, REFERRAL_QUEUE))
    entries = _synclog_for(azurite, {referral_id})  # every message was settled: a second one would show here
    assert len(entries) == 1 and entries[0].outcome.value == "created", entries
    assert entries[0].request_ids  # Partner Center's request-id is kept for support

    test = requests.post(f"{host.url}/api/partnercenter/webhook/test", params={"code": HOST_KEY}, timeout=30)
    assert test.status_code == 200, test.text
    assert test.json()["delivered"] is True and test.json()["results"][0]["responseCode"] == "OK"


def test_forged_and_malformed_deliveries_are_refused_with_nothing_enqueued(
        pc_host, pc_sim: PartnerCenterSim, sandbox_ca: SandboxCA, azurite: str) -> None:  # type: ignore[no-untyped-def]
    host = pc_host()
    url = f"{host.url}/api/partnercenter/events"
    now = dt.datetime.now(dt.timezone.utc)
    expired = sandbox_ca.issue_webhook_signer(not_before=now - dt.timedelta(days=30),
                                              not_after=now - dt.timedelta(days=1))
    wrong_org = sandbox_ca.issue("pcnotifications-dispatch.microsoft.com", organization="Microsoft Corporation")
    forged = self_signed("pcnotifications-dispatch.microsoft.com", organization="Microsoft Corporation", ca=False)
    expired_url = pc_sim.host_certificate("expired.pem", expired.bundle_pem)
    wrong_org_url = pc_sim.host_certificate("wrong-org.cer", wrong_org.cert_der)
    forged_url = pc_sim.host_certificate("forged.cer", forged.cert_der)
    ids = {name: str(uuid.uuid4()) for name in ("bad-sig", "host", "http", "expired", "self-signed", "org")}

    def genuine(referral_id: str) -> tuple[bytes, dict[str, str]]:
        body = _event(referral_id)
        return body, _signed(pc_sim.signer, pc_sim.cert_url, body)

    body, headers = genuine(ids["bad-sig"])
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("bad signature", _event(ids["bad-sig"]).replace(b"referral-updated", b"referral-created"), headers, 401),
        ("unknown cert host", *_swap(genuine(ids["host"]), "X-MS-Certificate-Url", "https://evil.example/c.cer"), 401),
        ("http cert URL", *_swap(genuine(ids["http"]), "X-MS-Certificate-Url",
                                 pc_sim.cert_url.replace("https", "http")), 401),
        ("expired cert", _event(ids["expired"]), _signed(expired, expired_url, _event(ids["expired"])), 401),
        ("self-signed cert", _event(ids["self-signed"]), _signed(forged, forged_url, _event(ids["self-signed"])), 401),
        ("wrong organization", _event(ids["org"]), _signed(wrong_org, wrong_org_url, _event(ids["org"])), 401),
        ("no signature at all", _event(ids["org"]), {"Content-Type": "application/json"}, 401),
    ]
    not_json = b"<xml>not a Partner Center event</xml>"
    cases.append(("non-JSON body", not_json, _signed(pc_sim.signer, pc_sim.cert_url, not_json), 400))
    other = json.dumps({"EventName": "subscription-updated", "ResourceUri": "https://x/subscriptions/1"}).encode()
    cases.append(("not a referral event", other, _signed(pc_sim.signer, pc_sim.cert_url, other), 400))
    huge = _event(str(uuid.uuid4()))[:-1] + b', "Padding": "' + b"x" * 20000 + b'"}'
    cases.append(("oversize body", huge, _signed(pc_sim.signer, pc_sim.cert_url, huge), 413))

    for label, payload, sent_headers, expected in cases:
        answer = requests.post(url, params={"code": HOST_KEY}, data=payload, headers=sent_headers, timeout=30)
        assert answer.status_code == expected, f"{label}: {answer.status_code} {answer.text}"
        assert answer.json()["status"], label  # a short reason

    # Control: a genuine event sent now is processed, so the processor was running all along.
    control = str(uuid.uuid4())
    payload, sent_headers = genuine(control)
    assert requests.post(url, params={"code": HOST_KEY}, data=payload, headers=sent_headers, timeout=30).status_code == 202
    _wait(lambda: _synclog_for(azurite, {control}))
    assert _synclog_for(azurite, set(ids.values())) == []


def _swap(signed: tuple[bytes, dict[str, str]], header: str, value: str) -> tuple[bytes, dict[str, str]]:
    body, headers = signed
    return body, {**headers, header: value}


def test_registration_routes_keep_the_overwrite_rule(pc_host, pc_sim: PartnerCenterSim) -> None:  # type: ignore[no-untyped-def]
    host = pc_host(COSELL_PUBLIC_URL="https://cosell.example", COSELL_WEBHOOK_FUNCTION_KEY="events-key")
    route = f"{host.url}/api/partnercenter/webhook"
    key = {"code": HOST_KEY}
    view = requests.get(route, params=key, timeout=30).json()
    assert view == {"registered": False, "url": None, "events": [], "points_here": False,
                    "receiver_url": "https://cosell.example/api/partnercenter/events?code=***"}

    pc_sim.registration = {"SubscriberId": "s", "WebhookUrl": "https://staging.example/hook?code=staging-secret",
                           "WebhookEvents": ["referral-created"]}
    refused = requests.post(route, params=key, json={}, timeout=30)
    assert refused.status_code == 409
    assert "https://staging.example/hook?code=***" in refused.json()["error"]
    assert "staging-secret" not in refused.text and "overwrite" in refused.json()["error"]
    assert pc_sim.registration["WebhookUrl"].startswith("https://staging.example")

    replaced = requests.post(route, params=key, json={"overwrite": True}, timeout=30)
    assert replaced.status_code == 200 and replaced.json()["action"] == "replaced", replaced.text
    assert replaced.json()["previous_url"] == "https://staging.example/hook?code=***"
    assert pc_sim.registration == {"SubscriberId": "s", "WebhookEvents": DEFAULT_EVENTS,
                                   "WebhookUrl": "https://cosell.example/api/partnercenter/events?code=events-key"}
    again = requests.post(route, params=key, json={}, timeout=30)
    assert again.status_code == 200 and again.json()["points_here"] is True

    updated = requests.put(route, params=key, json={"events": ["referral-updated", "test-created"]}, timeout=30)
    assert updated.status_code == 200, updated.text
    assert pc_sim.registration["WebhookEvents"] == ["referral-updated", "test-created"]
    assert pc_sim.registration["WebhookUrl"].endswith("?code=events-key")

    assert requests.post(route, params=key, json={"url": "http://evil.example/x"}, timeout=30).status_code == 400
    assert requests.post(route, params=key, data=b"{not json", timeout=30).status_code == 400
    assert requests.get(route, timeout=30).status_code == 401  # function auth level


def test_test_event_is_rate_limited_by_partner_center(pc_host, pc_sim: PartnerCenterSim) -> None:  # type: ignore[no-untyped-def]
    host = pc_host()
    key = {"code": HOST_KEY}
    receiver = f"{host.url}/api/partnercenter/events?code={HOST_KEY}"
    requests.post(f"{host.url}/api/partnercenter/webhook", params=key, json={"url": receiver}, timeout=30)
    for _ in range(2):
        assert requests.post(f"{host.url}/api/partnercenter/webhook/test", params=key, timeout=30).status_code == 200
    third = requests.post(f"{host.url}/api/partnercenter/webhook/test", params=key, timeout=30)
    assert third.status_code == 429 and int(third.headers["Retry-After"]) > 30


class SwitchableRelay:
    """A TCP relay in front of Azurite's queue service that can be switched off: while off, every connection
    is closed at once, as when the storage account cannot be reached."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.up = True
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="switchable-relay", daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(2)
        except OSError:
            pass

    def stop(self) -> None:
        self._listener.close()


def test_a_delivery_while_the_queue_is_unreachable_is_answered_503_and_its_retry_processed_once(
        pc_host, pc_sim: PartnerCenterSim) -> None:  # type: ignore[no-untyped-def]
    from sandbox.azurite import Azurite

    with Azurite() as azurite:  # storage of its own: the simulators' ids restart in every test
        relay, host = SwitchableRelay(azurite.queue_port), None
        try:
            storage = azurite.connection_string.replace(f"127.0.0.1:{azurite.queue_port}/",
                                                        f"127.0.0.1:{relay.port}/")
            host = pc_host(AzureWebJobsStorage=storage)
            registered = requests.post(f"{host.url}/api/partnercenter/webhook", params={"code": HOST_KEY}, timeout=30,
                                       json={"url": f"{host.url}/api/partnercenter/events?code={HOST_KEY}"})
            assert registered.status_code == 201, registered.text
            relay.up = False

            referral_id = pc_sim.create_incoming({"name": "Delivered while the queue was down"})["id"]
            refused = pc_sim.wait_for_deliveries(lambda log: any(d["status"] == 503 for d in log), timeout=30)
            assert {d["status"] for d in refused} == {503}  # Partner Center will deliver it again
            relay.up = True

            deliveries = pc_sim.wait_for_deliveries(lambda log: any(d["status"] == 202 for d in log), timeout=30)
            direct = azurite.connection_string
            _wait(lambda: _synclog_for(direct, {referral_id}) and queues_drained(direct, REFERRAL_QUEUE), timeout=30)
            entries = _synclog_for(direct, {referral_id})
            assert [d["status"] for d in deliveries if d["status"] != 503] == [202]
            assert len(entries) == 1 and entries[0].outcome.value == "created", entries
        finally:
            if host is not None:
                host.stop()  # before its storage goes
            relay.stop()
