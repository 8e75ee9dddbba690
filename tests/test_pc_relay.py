"""The event relay: verified events reach every forward URL once, unchanged and verifiable, despite outages."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator

import azure.functions.queue as func_queue
import pytest
import requests
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from sandbox.ca import SandboxCA
from sandbox.partner_center import PartnerCenterSim
from shared.partner_center.receiver import RelayFailed, receive
from shared.partner_center.signature import WebhookVerifier, trusted_roots
from shared.store import FORWARD_QUEUE, REFERRAL_QUEUE, QueueSender
from tests.fixtures.partner_center import HOST_JSON, HOST_KEY, QUIET_TIMERS, Downstream, queues_drained
from tests.fixtures.partner_center import event_body as _event
from tests.fixtures.partner_center import signed_headers as _signed


@pytest.fixture
def downstreams() -> Iterator[tuple[Downstream, Downstream]]:
    pair = (Downstream(), Downstream())
    yield pair
    for downstream in pair:
        downstream.server.stop()


def _clear(azurite: str, *queues: str) -> None:
    for name in queues:
        client = QueueClient.from_connection_string(azurite, name)
        try:
            client.clear_messages()
        except Exception:  # noqa: BLE001 - the queue may not exist yet, which is as good as empty
            pass


def test_every_event_reaches_both_receivers_once_with_one_down_for_a_while(
        function_host, pc_sim: PartnerCenterSim, sandbox_ca: SandboxCA, azurite: str,  # type: ignore[no-untyped-def]
        downstreams: tuple[Downstream, Downstream]) -> None:
    up, flaky = downstreams
    _clear(azurite, REFERRAL_QUEUE, FORWARD_QUEUE)
    host = function_host(env={**pc_sim.settings_env(), **QUIET_TIMERS, "COSELL_LOCAL_FUNCTION_KEY": HOST_KEY,
                              "COSELL_WEBHOOK_FORWARD_URLS": f"{up.url}, {flaky.url}"}, host_json=HOST_JSON)
    registered = requests.post(f"{host.url}/api/partnercenter/webhook", params={"code": HOST_KEY},
                               json={"url": f"{host.url}/api/partnercenter/events?code={HOST_KEY}"}, timeout=30)
    assert registered.status_code == 201, registered.text
    flaky.down_until = time.monotonic() + 2.5

    referral_ids = [pc_sim.create_incoming({"name": f"Relay {i}"})["id"] for i in range(3)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (len(up.received) >= 3 and len(flaky.received) >= 3
                                               and queues_drained(azurite, REFERRAL_QUEUE, FORWARD_QUEUE)):
        time.sleep(0.2)  # until every relay message was settled: anything sent twice has arrived by then

    assert flaky.refused >= 1  # it really was down when the first events came
    verifier = WebhookVerifier(allowed_hosts=["127.0.0.1"], roots=trusted_roots(str(sandbox_ca.ca_pem_path)))
    for downstream in (up, flaky):
        got = sorted(json.loads(body)["ResourceUri"].rsplit("/", 1)[1] for body, _ in downstream.received)
        assert got == sorted(referral_ids)
        for body, headers in downstream.received:
            verifier.verify(body, headers)  # raw body and signature headers arrive unchanged
    sent = {d["event"]["ResourceUri"].rsplit("/", 1)[1] for d in pc_sim.deliveries if d["status"] == 202}
    assert sent == set(referral_ids)


def test_receive_enqueues_one_small_message_and_one_forward_per_url(
        pc_sim: PartnerCenterSim, sandbox_ca: SandboxCA, azurite: str) -> None:
    _clear(azurite, REFERRAL_QUEUE, FORWARD_QUEUE)
    verifier = WebhookVerifier(allowed_hosts=["127.0.0.1"], roots=trusted_roots(str(sandbox_ca.ca_pem_path)))
    referral_id = str(uuid.uuid4())
    body = _event(referral_id)
    headers = _signed(pc_sim.signer, pc_sim.cert_url, body)
    receipt = receive(body, headers, verifier=verifier, queues=QueueSender.from_connection_string(azurite),
                      forward_urls=["https://a.example/hook", "https://b.example/hook?code=k"])
    assert (receipt.status, receipt.referral_id) == (202, referral_id)

    def messages(queue: str) -> list[dict]:
        client = QueueClient.from_connection_string(azurite, queue, message_decode_policy=TextBase64DecodePolicy())
        return [json.loads(m.content) for m in client.peek_messages(max_messages=32)]

    [work] = messages(REFERRAL_QUEUE)
    assert work["referral_id"] == referral_id and work["event"] == "referral-updated"
    forwards = messages(FORWARD_QUEUE)
    assert sorted(f["url"] for f in forwards) == ["https://a.example/hook", "https://b.example/hook?code=k"]
    for forward in forwards:
        assert base64.b64decode(forward["body"]) == body
        assert forward["headers"] == {k: v for k, v in headers.items() if k != "Content-Type"}

    test_body = json.dumps({"EventName": "test-created", "ResourceUri": "https://x/validationEvents/1"}).encode()
    test_receipt = receive(test_body, _signed(pc_sim.signer, pc_sim.cert_url, test_body), verifier=verifier,
                           queues=QueueSender.from_connection_string(azurite), forward_urls=["https://a.example/h"])
    assert test_receipt.status == 202 and len(messages(REFERRAL_QUEUE)) == 1 and len(messages(FORWARD_QUEUE)) == 2
    _clear(azurite, REFERRAL_QUEUE, FORWARD_QUEUE)


def test_relay_gives_up_into_a_dead_letter_on_the_last_try(azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.functions.partner_center import partner_center_relay
    from shared.runtime import services
    from shared.store import Store

    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    services.cache_clear()
    message = {"url": "http://127.0.0.1:9/hook?code=downstream-secret", "referral_id": "r-1",
               "body": base64.b64encode(_event("r-1")).decode(), "headers": {}}
    for dequeue_count, dead in ((1, False), (5, True)):
        message_id = str(uuid.uuid4())
        queued = func_queue.QueueMessage(id=message_id, body=json.dumps(message).encode(), dequeue_count=dequeue_count)
        with pytest.raises(RelayFailed):
            partner_center_relay(queued)
        letter = Store.from_connection_string(azurite).dead_letters.get(message_id)
        assert (letter is not None) is dead
    assert letter.kind == "webhook-forward" and letter.attempts == 5
    assert "http://127.0.0.1:9/hook?code=***" in letter.reason and "downstream-secret" not in letter.reason
    services.cache_clear()
