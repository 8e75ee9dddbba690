"""Hostile input over HTTP, through the real function_app.py on the local host.

Every case is sent to the running app as an attacker, a broken proxy or a careless caller would send it,
and must get a clear 4xx with a short reason: never a 500, never a crash of the host, nothing enqueued
(the Azurite queues, poison queues included, stay empty and no queue trigger runs) and nothing written
(no link, sync log line, dead letter, or webhook registration). A genuine control at the end proves the
receiver and the processor were working all along, so "nothing happened" means "refused", not "broken".

The app runs with Azurite of its own (so queue depths are this test's alone), both simulators, a function
key, and no webhook registered: every delivery the receiver sees is one these tests sent.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from azure.storage.queue import QueueServiceClient

from sandbox.azurite import Azurite, free_port
from sandbox.ca import SandboxCA, self_signed
from sandbox.httpsim import Request, Response, Router, SimServer
from sandbox.partner_center import PartnerCenterSim
from sandbox.salesforce import SalesforceSim
from shared.settings import APP_ROOT
from shared.store import Store
from tests.fixtures.connector import QUIET, wait_for
from tests.fixtures.host import RunningHost
from tests.fixtures.partner_center import HOST_JSON, event_body, signed_headers

KEY = "hostile-tests-function-key"
EVENTS = "partnercenter/events"
REASON_MAX = 120
"""A reason is a short sentence, never an echo of the body or a stack trace."""


@dataclass
class App:
    """The running app, its simulators and its storage."""

    host: RunningHost
    pc: PartnerCenterSim
    sf: SalesforceSim
    storage: str
    store: Store

    def call(self, method: str, route: str, *, key: bool = True, **kwargs: Any) -> requests.Response:
        headers = {**({"x-functions-key": KEY} if key else {}), **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.host.url}/api/{route}", headers=headers, timeout=60, **kwargs)

    def deliver(self, body: bytes, headers: dict[str, str]) -> requests.Response:
        return self.call("POST", EVENTS, data=body, headers=headers)

    def genuine(self, referral_id: str) -> tuple[bytes, dict[str, str]]:
        body = event_body(referral_id)
        return body, signed_headers(self.pc.signer, self.pc.cert_url, body)

    def queue_depths(self) -> dict[str, int]:
        """Every queue of the app's storage (poison queues too) -> its approximate message count, hidden
        (delayed or in-flight) messages included."""
        service = QueueServiceClient.from_connection_string(self.storage)
        return {queue.name: service.get_queue_client(queue.name).get_queue_properties().approximate_message_count
                for queue in service.list_queues()}

    def executions(self, function: str) -> list[str]:
        """The host's log lines of finished invocations of `function`."""
        return [line for line in self.host.log().splitlines() if f"Executed {function} [" in line]

    def written(self) -> dict[str, int]:
        """How many rows the tables a sync or a failure writes hold."""
        return {"links": len(list(self.store.links.list())), "synclog": len(list(self.store.synclog.iter_recent())),
                "dead_letters": len(list(self.store.dead_letters.list())), "state": len(list(self.store.state.list()))}


@pytest.fixture
def app(sandbox_ca: SandboxCA, sf_sim_factory: Callable[..., SalesforceSim],
        function_host: Callable[..., RunningHost]) -> Iterator[App]:
    with Azurite() as azurite:
        pc = PartnerCenterSim(sandbox_ca, delivery_delays=(0.3, 0.6, 1.0)).start()
        sf = sf_sim_factory(multi_currency=True, currencies=["USD", "EUR"])
        env = {**pc.settings_env(), **sf.credentials.settings_env(), "AzureWebJobsStorage": azurite.connection_string,
               "COSELL_SF_POLL_SCHEDULE": QUIET, "COSELL_PC_RECONCILE_SCHEDULE": QUIET,
               "COSELL_LOCAL_FUNCTION_KEY": KEY, "COSELL_PUBLIC_URL": "https://cosell.example",
               "COSELL_MAPPING_FILE": str(APP_ROOT / "mappings" / "salesforce.json")}
        host = function_host(env=env, host_json=HOST_JSON)
        yield App(host, pc, sf, azurite.connection_string, Store.from_connection_string(azurite.connection_string))
        host.stop()
        pc.stop()


def _nothing_happened(app: App) -> None:
    """No queue holds a message, no queue trigger ran, nothing was written, the host never answered 500."""
    assert all(depth == 0 for depth in app.queue_depths().values()), app.queue_depths()
    assert app.executions("partner_center_referral_changes") == []
    assert app.executions("salesforce_opportunity_changes") == []
    assert app.written() == {"links": 0, "synclog": 0, "dead_letters": 0, "state": 0}
    log = app.host.log()
    assert "-> 500" not in log and "Traceback" not in log, log[-3000:]


def _redirecting_server(ssl_context: Any, location: str) -> SimServer:
    """An allow-listed host (127.0.0.1) whose certificate URL answers 302 to a genuine certificate elsewhere."""
    router = Router()

    @router.route("GET", "/cert/moved.cer")
    def moved(_: Request) -> Response:
        return Response(302, None, {"Location": location})

    return SimServer(router, ssl_context=ssl_context).start()


def test_hostile_deliveries_get_a_clear_4xx_and_nothing_is_enqueued(app: App, sandbox_ca: SandboxCA,
                                                                    sf_server_context: Any) -> None:
    pc = app.pc
    now = dt.datetime.now(dt.timezone.utc)
    ms = "Microsoft Corporation"
    leaf = "pcnotifications-dispatch.microsoft.com"
    expired = sandbox_ca.issue_webhook_signer(not_before=now - dt.timedelta(days=30),
                                              not_after=now - dt.timedelta(days=1))
    not_yet = sandbox_ca.issue_webhook_signer(not_before=now + dt.timedelta(days=1),
                                              not_after=now + dt.timedelta(days=30))
    self_made = self_signed(leaf, organization=ms, ca=False)
    wrong_org = sandbox_ca.issue(leaf, organization=ms)  # Microsoft's name in the subject, not in the issuer
    urls = {"expired": pc.host_certificate("expired.pem", expired.bundle_pem),
            "not-yet": pc.host_certificate("not-yet.pem", not_yet.bundle_pem),
            "self-signed": pc.host_certificate("self-signed.cer", self_made.cert_der),
            "wrong-org": pc.host_certificate("wrong-org.cer", wrong_org.cert_der),
            "garbage": pc.host_certificate("garbage.cer", b"\x00\x01 this is not a certificate \xff" * 10),
            "huge": pc.host_certificate("huge.cer", b"-----BEGIN CERTIFICATE-----\n" + b"A" * 100_000)}
    redirector = _redirecting_server(sf_server_context, pc.cert_url)
    ids = iter(str(uuid.uuid4()) for _ in range(100))

    def signed(body: bytes, *, by: Any = None, cert_url: str | None = None) -> tuple[bytes, dict[str, str]]:
        return body, signed_headers(by or pc.signer, cert_url or pc.cert_url, body)

    def genuine_with(**header_changes: str | None) -> tuple[bytes, dict[str, str]]:
        body, headers = app.genuine(next(ids))
        for name, value in header_changes.items():
            name = name.replace("_", "-")
            headers.pop(name, None)
            if value is not None:
                headers[name] = value
        return body, headers

    body, headers = app.genuine(next(ids))
    tampered = body.replace(b"referral-updated", b"referral-created")
    ten_mb = body[:-1] + b', "Padding": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    attacker = sandbox_ca.issue(leaf, organization=ms)  # a genuine-looking certificate, but not the one at the URL
    cases: list[tuple[str, tuple[bytes, dict[str, str]], int, str]] = [
        # forged
        ("signed by another key", signed(event_body(next(ids)), by=attacker), 401, "signature does not match"),
        ("self-signed 'Microsoft' certificate", signed(event_body(next(ids)), by=self_made,
                                                      cert_url=urls["self-signed"]), 401, "does not chain"),
        ("body changed after signing", (tampered, headers), 401, "signature does not match"),
        ("no signature", (event_body(next(ids)), {"Content-Type": "application/json"}), 401, "Signature scheme"),
        ("bearer instead of signature", genuine_with(Authorization="Bearer abc"), 401, "Signature scheme"),
        ("signature not base64", genuine_with(Authorization="Signature %%%not-base64%%%"), 401, "not base64"),
        ("empty signature", genuine_with(Authorization="Signature "), 401, "signature"),
        ("sha1 algorithm", genuine_with(X_MS_Signature_Algorithm="rsa-sha1"), 401, "rsa-sha256"),
        ("no certificate URL", genuine_with(X_MS_Certificate_Url=None), 401, "X-MS-Certificate-Url is missing"),
        # truncated
        ("truncated after signing", (body[:-12], headers), 401, "signature does not match"),
        ("signed but truncated JSON", signed(event_body(next(ids))[:40]), 400, "not a Partner Center event"),
        # oversized and not JSON
        ("10 MB body", signed(ten_mb), 413, "too large"),
        ("signed non-JSON", signed(b"<xml>referral-updated</xml>"), 400, "not a Partner Center event"),
        ("signed binary", signed(bytes(range(256)) * 4), 400, "not a Partner Center event"),
        ("signed empty body", signed(b""), 400, "not a Partner Center event"),
        ("unsigned non-JSON", (b"\xff\xfe garbage", {}), 401, "Signature scheme"),
        ("signed JSON array", signed(b"[]"), 400, "not a Partner Center event"),
        ("signed event without referral", signed(json.dumps({"EventName": "referral-updated",
                                                              "ResourceUri": "https://x/other/1"}).encode()),
         400, "not a referral event"),
        ("signed event of another kind", signed(json.dumps({"EventName": "subscription-deleted",
                                                             "ResourceUri": "https://x/referrals/1"}).encode()),
         400, "not a referral event"),
        ("signed deeply nested JSON", signed(b"[" * 8000 + b"]" * 8000), 400, "not a Partner Center event"),
        # certificate URLs
        ("certificate on another host", genuine_with(X_MS_Certificate_Url="https://evil.example/" + leaf + ".cer"),
         401, "allow-list"),
        ("certificate over http", genuine_with(X_MS_Certificate_Url=pc.cert_url.replace("https:", "http:")),
         401, "must be https"),
        ("certificate URL redirects", genuine_with(X_MS_Certificate_Url=redirector.url + "/cert/moved.cer"),
         401, "answered 302"),
        ("certificate URL not found", genuine_with(X_MS_Certificate_Url=pc.url + "/cert/missing.cer"),
         401, "answered 404"),
        ("certificate host not listening", genuine_with(
            X_MS_Certificate_Url=f"https://127.0.0.1:{free_port()}/{leaf}.cer"), 401, "could not be fetched"),
        ("certificate URL not a URL", genuine_with(X_MS_Certificate_Url="https://[::1/" + leaf + ".cer"),
         401, "certificate URL"),
        ("certificate URL with a bad host", genuine_with(X_MS_Certificate_Url="https://[zz]/c.cer"), 401,
         "certificate URL"),
        ("certificate not a certificate", genuine_with(X_MS_Certificate_Url=urls["garbage"]), 401,
         "neither DER nor PEM"),
        ("certificate file too large", genuine_with(X_MS_Certificate_Url=urls["huge"]), 401, "too large"),
        ("expired certificate", signed(event_body(next(ids)), by=expired, cert_url=urls["expired"]), 401,
         "expired or not yet valid"),
        ("not yet valid certificate", signed(event_body(next(ids)), by=not_yet, cert_url=urls["not-yet"]), 401,
         "expired or not yet valid"),
        ("certificate of another organization", signed(event_body(next(ids)), by=wrong_org,
                                                        cert_url=urls["wrong-org"]), 401, "organization"),
    ]
    try:
        answers = {label: app.deliver(*request) for label, request, _, _ in cases}
    finally:
        redirector.stop()
    wrong = {label: (answers[label].status_code, answers[label].text[:200]) for label, _, status, reason in cases
             if answers[label].status_code != status or reason not in answers[label].json().get("status", "")}
    assert wrong == {}, wrong
    assert all(len(answer.json()["status"]) <= REASON_MAX for answer in answers.values())
    assert app.call("POST", EVENTS, key=False, data=app.genuine(next(ids))[0]).status_code == 401  # function key
    assert app.call("GET", EVENTS).status_code == 405
    _nothing_happened(app)

    # Control: a genuine delivery now is queued and synced, so the receiver and the processor were working.
    referral = pc.create_incoming({"name": "Control - genuine delivery"})
    assert app.deliver(*app.genuine(referral["id"])).status_code == 202
    wait_for(lambda: app.executions("partner_center_referral_changes"), what="the control delivery processed")
    assert app.store.links.get_by_referral(referral["id"]) is not None
    assert len(app.executions("partner_center_referral_changes")) == 1


def _replay_referral(app: App, name: str) -> dict[str, Any]:
    return app.pc.create_incoming({
        "name": f"{name} - Azure landing zone",
        "customerProfile": {"name": name, "team": [{"firstName": "Rita", "lastName": "Replay",
                                                   "email": f"rita@{name.lower().replace(' ', '')}.example",
                                                   "phoneNumber": None, "contactPreference": None}]}})


def _one_of_each(app: App, referral: dict[str, Any]) -> None:
    """One opportunity, account, contact and contact role for the referral; one "created" line; no failure."""
    link = app.store.links.get_by_referral(referral["id"])
    assert link is not None
    customer = referral["customerProfile"]["name"]
    email = referral["customerProfile"]["team"][0]["email"]
    opportunities = app.sf.query(f"SELECT Id FROM Opportunity WHERE Referral_Identifier__c = '{referral['id']}'")
    assert [o["Id"] for o in opportunities] == [link.opportunity_id]
    assert len(app.sf.query(f"SELECT Id FROM Account WHERE Name = '{customer}'")) == 1
    assert len(app.sf.query(f"SELECT Id FROM Contact WHERE Email = '{email}'")) == 1
    assert len(app.sf.query(f"SELECT Id FROM OpportunityContactRole WHERE OpportunityId = '{link.opportunity_id}'")) == 1
    logged = [e.outcome.value for e in app.store.synclog.iter_recent() if e.referral_id == referral["id"]]
    assert logged == ["created"], logged
    assert list(app.store.dead_letters.list()) == []


def _processed(app: App, count: int) -> bool:
    return len(app.executions("partner_center_referral_changes")) >= count and not any(app.queue_depths().values())


def test_a_replayed_delivery_is_accepted_and_syncs_once(app: App) -> None:
    """Events are hints: the same signed delivery sent again is taken (202), and the sync it triggers finds
    the pair already made and changes nothing: no second opportunity, account, contact or role."""
    referral = _replay_referral(app, "Replay Co")
    body, headers = app.genuine(referral["id"])
    answers = [app.deliver(body, headers).status_code]
    wait_for(lambda: _processed(app, 1), what="the first delivery processed")
    answers += [app.deliver(body, headers).status_code for _ in range(2)]  # the very same bytes, twice more
    wait_for(lambda: _processed(app, 3), what="the replays processed")

    assert answers == [202, 202, 202]
    _one_of_each(app, referral)
    assert all("Succeeded" in line for line in app.executions("partner_center_referral_changes"))


def test_simultaneous_replays_make_no_duplicate(app: App) -> None:
    """Two deliveries of one new referral processed at the same moment: one run creates (under a claim), the
    other waits, retries and finds the pair. Before the claim both created: a second contact, role and line."""
    referral = _replay_referral(app, "Twin Co")
    body, headers = app.genuine(referral["id"])
    answers: list[int] = []
    senders = [threading.Thread(target=lambda: answers.append(app.deliver(body, headers).status_code))
               for _ in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    wait_for(lambda: _processed(app, 2), what="both deliveries processed")

    assert answers == [202, 202]
    _one_of_each(app, referral)
