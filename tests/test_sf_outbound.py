"""Salesforce Outbound Messages, parsed and decided without I/O: the envelope, hostile XML, the org check.

Envelopes come from the simulator's builder (the shape of Salesforce's Outbound Messaging WSDL) and from a
literal copy of that shape, so the parser and the simulator cannot agree on something Salesforce never sends.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sandbox.sf_outbound import envelope
from shared.errors import InvalidInput
from shared.salesforce.outbound import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    Refused,
    accept,
    ack,
    parse_outbound,
    record_push,
    same_org,
)
from shared.salesforce.push import MISSED_AFTER

ORG = "00DHs0000000001IAA"
OPP = "006Hs00000000AAIAQ"
SOLUTION = "a00Hs00000000AAIAQ"

WSDL_SHAPED = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{ORG}</OrganizationId>
   <ActionId>04kHs0000000001IAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/64.0/00DHs0000000001</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/64.0/00DHs0000000001</PartnerUrl>
   <Notification>
    <Id>04lHs00000000AAIAQ</Id>
    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>{OPP}</sf:Id>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>""".encode()


def _message(count: int, *, sobject: str = "Opportunity", org: str = ORG) -> bytes:
    return envelope(org_id=org, action_id="04kHs0000000001IAA", base_url="https://sim", notifications=[
        (f"04lHs{i:010d}IAQ", sobject, {"Id": f"006Hs{i:010d}IAQ"}) for i in range(count)])


def _accept(body: bytes, org_id: str | None = ORG):  # noqa: ANN202 - the Accepted of the module
    return accept(parse_outbound(body), org_id=org_id, opportunity_object="Opportunity",
                  solution_object="Microsoft_Solution__c")


def test_the_wsdl_shaped_message_gives_its_ids() -> None:
    message = parse_outbound(WSDL_SHAPED)
    assert message.organization_id == ORG
    assert [(n.notification_id, n.sobject, n.record_id) for n in message.notifications] == [
        ("04lHs00000000AAIAQ", "Opportunity", OPP)]
    assert _accept(WSDL_SHAPED).opportunity_ids == [OPP]


def test_a_hundred_notifications_are_taken_and_repeats_collapse() -> None:
    accepted = _accept(_message(100))
    assert len(accepted.opportunity_ids) == 100
    twice = envelope(org_id=ORG, action_id="04kHs0000000001IAA", base_url="https://sim", notifications=[
        ("04lHs0000000001IAQ", "Opportunity", {"Id": OPP}), ("04lHs0000000002IAQ", "Opportunity", {"Id": OPP})])
    assert _accept(twice).opportunity_ids == [OPP]


def test_solution_rows_are_kept_apart_for_a_fresh_read_of_their_parent() -> None:
    body = envelope(org_id=ORG, action_id="04kHs0000000001IAA", base_url="https://sim", notifications=[
        ("04lHs0000000001IAQ", "Microsoft_Solution__c", {"Id": SOLUTION, "Opportunity__c": "006Hs0000000ZZZIAQ"})])
    accepted = _accept(body)
    assert accepted.opportunity_ids == [] and accepted.solution_ids == [SOLUTION]  # the parent is not trusted


def test_more_than_a_hundred_notifications_is_refused() -> None:
    with pytest.raises(InvalidInput, match="at most 100"):
        parse_outbound(_message(101))


@pytest.mark.parametrize(("configured", "reason"), [
    ("00DHs0000000999IAA", "not the configured org"),
    (None, "SALESFORCE_ORG_ID is not set"),
    ("", "SALESFORCE_ORG_ID is not set"),
])
def test_another_org_or_no_configured_org_is_refused(configured: str | None, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        _accept(_message(1), configured)


def test_the_org_id_matches_in_its_15_and_18_character_forms_and_case_matters() -> None:
    assert same_org(ORG, ORG[:15]) and same_org(ORG[:15], ORG)
    assert not same_org(ORG, ORG.lower())


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>&lol3;</OrganizationId>
</notifications></soapenv:Body></soapenv:Envelope>"""
EXTERNAL_ENTITY = WSDL_SHAPED.replace(
    b'<?xml version="1.0" encoding="UTF-8"?>',
    b'<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>').replace(
    b"<ActionId>04kHs0000000001IAA</ActionId>", b"<ActionId>&ext;</ActionId>")


@pytest.mark.parametrize(("body", "reason"), [
    (BILLION_LAUGHS, "DTD or entities"),
    (EXTERNAL_ENTITY, "DTD or entities"),
    (b"<soapenv:Envelope", "not well-formed"),
    (b"", "empty"),
    (b"\xff\xfe<x/>", "not well-formed"),
    (b'{"ids": ["006Hs00000000AAIAQ"]}', "not well-formed"),
    (b"<Envelope/>", "SOAP 1.1 Envelope"),
    (WSDL_SHAPED.replace(b"2005/09/outbound", b"2005/09/elsewhere"), "Body/notifications"),
    (WSDL_SHAPED.replace(ORG.encode(), b"00D' OR 1=1 --xx"), "OrganizationId"),
    (WSDL_SHAPED.replace(OPP.encode(), b"006' OR Id != '"), "no valid Id"),
    (WSDL_SHAPED.replace(b' xsi:type="sf:Opportunity"', b""), "xsi:type"),
    (_message(0), "no Notification"),
])
def test_hostile_or_malformed_bodies_are_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse_outbound(body)


def test_a_ten_megabyte_body_is_refused_before_parsing() -> None:
    body = WSDL_SHAPED + b" " * (10 * 1024 * 1024)
    with pytest.raises(BodyTooLarge):
        parse_outbound(body)
    assert len(_message(100)) < MAX_BODY_BYTES // 10  # the largest real message is far below the limit


def test_notifications_of_an_object_that_is_not_synced_are_refused() -> None:
    with pytest.raises(InvalidInput, match="Account"):
        _accept(_message(1, sobject="Account"))
    with pytest.raises(InvalidInput, match="not Opportunity ids"):
        _accept(envelope(org_id=ORG, action_id="04kHs0000000001IAA", base_url="https://sim", notifications=[
            ("04lHs0000000001IAQ", "Opportunity", {"Id": "001Hs00000000AAIAQ"})]))


def test_the_ack_is_what_the_wsdl_asks_for() -> None:
    from sandbox.sf_outbound import acknowledged

    class Answer:
        status_code, content = 200, ack()

    assert acknowledged(Answer())  # type: ignore[arg-type]
    assert b"<Ack>true</Ack>" in ack()


def test_push_health_counts_receipts_refusals_and_misses() -> None:
    at = dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc)
    data = record_push({}, at=at, received=3)
    data = record_push(data, at=at + MISSED_AFTER, refused="OrganizationId 00D... is not the configured org")
    data = record_push(data, at=at + 2 * MISSED_AFTER, missed=OPP)
    assert data["last_batch"] == 3 and data["last_received_at"] == at.isoformat()
    assert data["refused"] == 1 and "configured org" in data["last_refused_reason"]
    assert data["missed"] == 1 and data["last_missed_opportunity"] == OPP


def _poll_message(saved: dt.datetime) -> dict:
    return {"opportunity_id": OPP, "source": "salesforce-opportunities",
            "modstamp": saved.strftime("%Y-%m-%dT%H:%M:%S.000Z")}


def test_a_change_only_the_poll_delivered_long_after_the_save_counts_as_missed_by_push() -> None:
    from shared.models.records import SyncOutcome
    from shared.salesforce.push import push_missed

    now = dt.datetime(2026, 12, 3, 12, tzinfo=dt.timezone.utc)
    old, fresh = _poll_message(now - MISSED_AFTER - dt.timedelta(seconds=1)), _poll_message(now - dt.timedelta(seconds=5))
    assert push_missed(old, SyncOutcome.UPDATED, push_configured=True, now=now)
    assert not push_missed(old, SyncOutcome.NO_CHANGE, push_configured=True, now=now)  # push got there first
    assert not push_missed(old, SyncOutcome.UPDATED, push_configured=False, now=now)  # no push to miss
    assert not push_missed(fresh, SyncOutcome.UPDATED, push_configured=True, now=now)  # the poll was just quicker
    assert not push_missed({**old, "source": "outbound"}, SyncOutcome.UPDATED, push_configured=True, now=now)


def test_the_status_page_tells_push_health_in_words() -> None:
    from shared.models.records import StatusDoc
    from shared.status.report import ERROR, OK, UNKNOWN, WARNING, push_health

    now = dt.datetime(2026, 12, 3, 12, tzinfo=dt.timezone.utc)
    assert push_health(None, now, configured=False)["state"] == UNKNOWN
    received = record_push({}, at=now - dt.timedelta(minutes=2), received=4)
    health = push_health(StatusDoc(name="p", data=received), now, configured=True)
    assert health["state"] == OK and "2 min ago (a call of 4 notifications)" in health["summary"]
    refused = record_push(received, at=now - dt.timedelta(minutes=1),
                          refused="OrganizationId 00DXX is not the configured org ?code=secret")
    health = push_health(StatusDoc(name="p", data=refused), now, configured=True)
    assert health["state"] == ERROR and "configured org" in health["summary"] and "secret" not in health["summary"]
    missed = record_push(received, at=now - dt.timedelta(minutes=1), missed=OPP)
    health = push_health(StatusDoc(name="p", data=missed), now, configured=True)
    assert health["state"] == WARNING and OPP in health["summary"]


class _Queues:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict] = []
        self.fail = fail

    def send(self, queue: str, payload: dict, **_: object) -> None:
        from shared.errors import Unavailable

        if self.fail:
            raise Unavailable("Queue storage is not reachable")
        self.sent.append(payload)


class _Salesforce:
    def __init__(self, rows: list[dict]) -> None:
        self.rows, self.queries = rows, []

    def urgent(self):  # noqa: ANN201 - a context manager, as SalesforceClient.urgent()
        import contextlib

        return contextlib.nullcontext()

    def query(self, soql: str, *, include_deleted: bool = False):  # noqa: ANN201
        self.queries.append((soql, include_deleted))
        return iter(self.rows)


class _Status:
    def get(self, name: str) -> None:
        return None

    def put(self, doc: object) -> None:
        pass


def _services(queues: _Queues, salesforce: _Salesforce | None = None):  # noqa: ANN202 - a stand-in for Services
    from types import SimpleNamespace

    from shared.mapping import Mapping
    from shared.settings import APP_ROOT

    return SimpleNamespace(settings=SimpleNamespace(salesforce_org_id=ORG), queues=queues,
                           salesforce=salesforce or _Salesforce([]), store=SimpleNamespace(status=_Status()),
                           mapping=Mapping.load(APP_ROOT / "mappings" / "salesforce.json"))


def test_the_ack_comes_only_after_every_id_is_queued_else_a_5xx_without_ack() -> None:
    from shared.salesforce.push import receive

    queues = _Queues()
    answer = receive(_services(queues), _message(3))
    assert answer.status == 200 and b"<Ack>true</Ack>" in answer.body
    assert [m["opportunity_id"] for m in queues.sent] == [f"006Hs{i:010d}IAQ" for i in range(3)]
    assert all(m["urgent"] and m["source"] == "outbound" for m in queues.sent)

    failing = receive(_services(_Queues(fail=True)), _message(3))
    assert failing.status == 503 and b"<Ack>" not in failing.body and b"not reachable" in failing.body


def test_a_solution_rows_parent_is_read_fresh_deleted_rows_included() -> None:
    from shared.salesforce.push import receive

    queues, salesforce = _Queues(), _Salesforce([{"Id": SOLUTION, "Opportunity__c": OPP}])
    body = envelope(org_id=ORG, action_id="04kHs0000000001IAA", base_url="https://sim", notifications=[
        ("04lHs0000000001IAQ", "Microsoft_Solution__c", {"Id": SOLUTION, "Opportunity__c": "006Hs0000000ZZZIAQ"})])
    assert receive(_services(queues, salesforce), body).status == 200
    assert [m["opportunity_id"] for m in queues.sent] == [OPP]  # the org's answer, not the message's field
    soql, include_deleted = salesforce.queries[0]
    assert include_deleted and f"Id IN ('{SOLUTION}')" in soql and "Sync_with_Partner_Center__c = true" in soql


def test_a_connector_that_cannot_load_its_mapping_answers_503_so_salesforce_retries() -> None:
    from shared.errors import ConfigError
    from shared.salesforce.push import receive

    class Unconfigured:
        settings = _services(_Queues()).settings
        store = _services(_Queues()).store

        @property
        def mapping(self) -> None:
            raise ConfigError("mapping mappings/salesforce.json has 1 problem(s)")

    answer = receive(Unconfigured(), _message(1))  # type: ignore[arg-type]
    assert answer.status == 503 and b"<Ack>" not in answer.body and b"mapping" in answer.body
