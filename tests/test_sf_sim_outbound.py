"""The Salesforce simulator sends outbound messages as a real org does, from the project's own Flows.

A small HTTP listener stands in for the app: it records every SOAP call and acknowledges it or not. The
org's changes are made in-process (as the seller), so only the outbound side goes over the wire.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sandbox.salesforce import SalesforceSim
from shared.salesforce.outbound import ack, parse_outbound
from tests.fixtures.connector import seller_opportunity, wait_for


class Listener:
    """Records outbound calls; refuses (500, no Ack) the first `refuse` of them."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.refuse = 0
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                listener.calls.append(body)
                refused = listener.refuse > 0
                listener.refuse -= refused
                answer = b"busy" if refused else ack()
                self.send_response(500 if refused else 200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/salesforce/outbound"

    def notifications(self) -> list[tuple[str, str, str]]:
        """(notification id, sObject type, record id) of every call received, in order."""
        return [(n.notification_id, n.sobject, n.record_id) for body in self.calls
                for n in parse_outbound(body).notifications]


@pytest.fixture
def pushing(sf_sim_factory: Callable[..., SalesforceSim]) -> Iterator[tuple[SalesforceSim, Listener]]:
    listener = Listener()
    sim = sf_sim_factory(outbound_endpoint=listener.url)
    sim.outbox.first_backoff = 0.05
    yield sim, listener
    listener.server.shutdown()


def _quiet(sim: SalesforceSim) -> None:
    wait_for(lambda: sim.outbox.state()["pending"] == 0, what="the outbox to empty")


def test_a_synced_opportunitys_save_is_pushed_and_an_unsynced_ones_is_not(pushing) -> None:  # noqa: ANN001
    sim, listener = pushing
    synced = seller_opportunity(sim, with_contact=False, with_solution=False)
    unsynced = seller_opportunity(sim, name="Other - not co-sold", opt_in=False, with_contact=False,
                                  with_solution=False)
    sim.update("Opportunity", unsynced, {"Amount": 1})
    _quiet(sim)
    assert [(kind, record) for _, kind, record in listener.notifications()] == [("Opportunity", synced)]
    assert parse_outbound(listener.calls[0]).organization_id == sim.org.org_id

    sim.update("Opportunity", unsynced, {"Referral_Identifier__c": "a-linked-referral"}, as_user="integration")
    _quiet(sim)
    assert listener.notifications()[-1][2] == unsynced  # linked now: selected by the Flow's second filter


def test_a_solution_row_is_pushed_with_its_parent_field(pushing) -> None:  # noqa: ANN001
    sim, listener = pushing
    opportunity = seller_opportunity(sim, with_contact=False)
    _quiet(sim)
    solution = [n for n in listener.notifications() if n[1] == "Microsoft_Solution__c"]
    assert len(solution) == 1
    body = listener.calls[-1].decode()
    assert f"<sf:Opportunity__c>{opportunity}</sf:Opportunity__c>" in body


def test_an_unacknowledged_message_is_retried_with_the_same_notification_id(pushing) -> None:  # noqa: ANN001
    sim, listener = pushing
    listener.refuse = 2
    opportunity = seller_opportunity(sim, with_contact=False, with_solution=False)
    _quiet(sim)
    notifications = listener.notifications()
    assert len(notifications) == 3 and len({n[0] for n in notifications}) == 1
    assert {n[2] for n in notifications} == {opportunity}
    attempts = [d["attempt"] for d in sim.outbox.state()["deliveries"]]
    assert attempts == [1, 2, 3]


def test_a_rolled_back_write_sends_nothing(pushing) -> None:  # noqa: ANN001
    sim, listener = pushing
    opportunity = seller_opportunity(sim, with_contact=False, with_solution=False)
    _quiet(sim)
    before = len(listener.notifications())
    obj = sim.org.schema.objects["Opportunity"]
    with sim.org.lock, sim.org.transaction():
        mark = sim.org.savepoint()
        sim.org.update(obj, opportunity, {"Amount": 5.0}, sim.seller)
        sim.org.rollback(mark)
    time.sleep(0.3)
    assert len(listener.notifications()) == before


def test_faults_drop_delay_and_duplicate_notifications(pushing) -> None:  # noqa: ANN001
    sim, listener = pushing
    sim.outbox.add_fault("drop")
    sim.outbox.add_fault("duplicate")
    sim.outbox.add_fault("delay", delay=0.6)
    dropped = seller_opportunity(sim, name="A - dropped", with_contact=False, with_solution=False)
    doubled = seller_opportunity(sim, name="B - doubled", with_contact=False, with_solution=False)
    started = time.monotonic()
    delayed = seller_opportunity(sim, name="C - delayed", with_contact=False, with_solution=False)
    wait_for(lambda: any(n[2] == delayed for n in listener.notifications()), what="the delayed notification")
    assert time.monotonic() - started >= 0.6
    _quiet(sim)
    records = [n[2] for n in listener.notifications()]
    assert dropped not in records and records.count(doubled) == 2 and records.count(delayed) == 1
    assert len({n[0] for n in listener.notifications() if n[2] == doubled}) == 1  # one notification, twice


def test_a_burst_goes_out_in_calls_of_at_most_100(pushing) -> None:  # noqa: ANN001
    sim, listener = pushing
    listener.refuse = 1  # hold the first call back so the burst queues up behind it
    account = sim.create("Account", {"Name": "Burst Ltd"})
    ids = [sim.create("Opportunity", {"Name": f"Burst {i}", "AccountId": account, "StageName": "Qualification",
                                      "CloseDate": "2027-01-31", "Sync_with_Partner_Center__c": True})
           for i in range(150)]
    _quiet(sim)
    sizes = [len(ET.fromstring(body).findall(".//{http://soap.sforce.com/2005/09/outbound}Notification"))
             for body in listener.calls]
    assert max(sizes) <= 100 and len(sizes) < 150
    assert {n[2] for n in listener.notifications()} == set(ids)
