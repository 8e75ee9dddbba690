"""Salesforce Outbound Messages: read the SOAP `notifications` envelope, answer the `Ack`.

Salesforce pushes a change as a SOAP POST (Outbound Messaging WSDL): `Envelope/Body/notifications` with the
sending org's `OrganizationId`, the outbound message's `ActionId`, and 1-100 `Notification`s, each a
notification `Id` (the same on every retry) and an `sObject` carrying the fields the message definition
chose. Messages are not signed, so nothing in them is trusted beyond ids: the sync reads every record
fresh. Parsing is plain data in, data out (no I/O) so every hostile shape is tested without a server.

The parser is defusedxml with DTDs forbidden: a SOAP message never carries a document type declaration
(SOAP 1.1, section 3), so refusing any DTD stops entity expansion ("billion laughs") and external entities
before they start. The body size is checked before parsing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from shared.errors import ConnectorError, InvalidInput

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
MAX_NOTIFICATIONS = 100
"""The WSDL's `maxOccurs` of `Notification`."""
MAX_BODY_BYTES = 1_000_000
"""100 notifications of a few fields are tens of KB; anything near a megabyte is not Salesforce's."""
PUSH_DOC = "salesforce-push"
"""Status document of push health (last notification received, refusals, changes push missed)."""


class BodyTooLarge(InvalidInput):
    """The body is larger than any outbound message Salesforce sends (answered 413)."""


class Refused(ConnectorError):
    """A well-formed message this app must not act on (another org, or no org configured): answered 403."""


@dataclass(frozen=True)
class Notification:
    """One record change: the notification's id (stable across retries), the object type and record id."""

    notification_id: str
    sobject: str
    record_id: str


@dataclass(frozen=True)
class OutboundMessage:
    """A parsed `notifications` call."""

    organization_id: str
    action_id: str
    notifications: list[Notification] = field(default_factory=list)

    def ids_of(self, sobject: str) -> list[str]:
        """Record ids of one object type, in order, without repeats."""
        return list(dict.fromkeys(n.record_id for n in self.notifications if n.sobject == sobject))


def is_salesforce_id(value: str | None, prefix: str = "") -> bool:
    """A 15- or 18-character Salesforce id (letters and digits), optionally with a key prefix."""
    return (value is not None and len(value) in (15, 18) and value.isascii() and value.isalnum()
            and value.startswith(prefix))


def same_org(given: str, configured: str) -> bool:
    """Whether two org ids name the same org: the first 15 characters are the case-sensitive id."""
    return given[:15] == configured.strip()[:15]


def _child(parent: Element, namespace: str, name: str) -> Element | None:
    return parent.find(f"{{{namespace}}}{name}")


def _text(parent: Element, namespace: str, name: str) -> str | None:
    element = _child(parent, namespace, name)
    return element.text.strip() if element is not None and element.text else None


def parse_outbound(body: bytes) -> OutboundMessage:
    """The `notifications` of an outbound message body.

    Raises:
        BodyTooLarge: more than MAX_BODY_BYTES.
        InvalidInput: not well-formed XML, a DTD or entity of any kind, not a SOAP `notifications`
            envelope, no or more than 100 notifications, an id that is not a Salesforce id.
    """
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"the body is {len(body):,} bytes; an outbound message is at most "
                           f"{MAX_BODY_BYTES:,}")
    if not body.strip():
        raise InvalidInput("the body is empty: expected a SOAP notifications envelope")
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise InvalidInput(f"refused: the XML declares a DTD or entities ({type(exc).__name__}); "
                           "a SOAP message never does") from None
    except (ParseError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"the body is not well-formed XML ({str(exc)[:80]})") from None
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise InvalidInput("expected a SOAP 1.1 Envelope")
    envelope_body = _child(root, SOAP_NS, "Body")
    notifications = _child(envelope_body, OUTBOUND_NS, "notifications") if envelope_body is not None else None
    if notifications is None:
        raise InvalidInput(f"expected Body/notifications in namespace {OUTBOUND_NS}")
    organization_id = _text(notifications, OUTBOUND_NS, "OrganizationId")
    if not is_salesforce_id(organization_id, "00D"):
        raise InvalidInput("OrganizationId is missing or not an org id (00D...)")
    action_id = _text(notifications, OUTBOUND_NS, "ActionId") or ""
    items = notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
    if not items:
        raise InvalidInput("no Notification in the message")
    if len(items) > MAX_NOTIFICATIONS:
        raise InvalidInput(f"{len(items)} notifications; Salesforce sends at most {MAX_NOTIFICATIONS}")
    return OutboundMessage(organization_id or "", action_id[:18], [_notification(item) for item in items])


def _notification(item: Element) -> Notification:
    notification_id = _text(item, OUTBOUND_NS, "Id")
    sobject = _child(item, OUTBOUND_NS, "sObject")
    if not is_salesforce_id(notification_id):
        raise InvalidInput("a Notification has no valid Id")
    if sobject is None:
        raise InvalidInput(f"notification {notification_id} has no sObject")
    kind = (sobject.get(XSI_TYPE) or "").rpartition(":")[2]
    record_id = _text(sobject, SOBJECT_NS, "Id")
    if not kind or not kind.replace("_", "").isalnum():
        raise InvalidInput(f"notification {notification_id}: the sObject has no xsi:type")
    if not is_salesforce_id(record_id):
        raise InvalidInput(f"notification {notification_id}: the sObject has no valid Id")
    return Notification(str(notification_id), kind, str(record_id))


@dataclass(frozen=True)
class Accepted:
    """What to do with a message from the right org: opportunities to enqueue, solutions rows to resolve."""

    opportunity_ids: list[str]
    solution_ids: list[str]


def accept(message: OutboundMessage, *, org_id: str | None, opportunity_object: str,
           solution_object: str) -> Accepted:
    """Decide whether a parsed message is acted on, and on which records.

    Args:
        message: the parsed message.
        org_id: `SALESFORCE_ORG_ID` (None or empty: push not configured, every message refused).
        opportunity_object / solution_object: the mapping's object names.

    Raises:
        Refused: no org configured, or another org's message.
        InvalidInput: a notification of an object this connector does not watch (a misconfigured flow).
    """
    if not org_id:
        raise Refused("SALESFORCE_ORG_ID is not set: outbound messages are refused until it names your org")
    if not same_org(message.organization_id, org_id):
        raise Refused(f"OrganizationId {message.organization_id} is not the configured org")
    unknown = sorted({n.sobject for n in message.notifications} - {opportunity_object, solution_object})
    if unknown:
        raise InvalidInput(f"notifications of {', '.join(unknown)}: only {opportunity_object} and "
                           f"{solution_object} are synced")
    opportunities = message.ids_of(opportunity_object)
    bad = [i for i in opportunities if not i.startswith("006")]
    if bad:
        raise InvalidInput(f"not Opportunity ids: {', '.join(bad[:5])}")
    return Accepted(opportunities, message.ids_of(solution_object))


def ack() -> bytes:
    """The `notificationsResponse` that tells Salesforce every notification of the call was received."""
    return (b'<?xml version="1.0" encoding="UTF-8"?>'
            b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
            b'<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
            b'<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>')


def fault(reason: str, *, client: bool = True) -> bytes:
    """A SOAP Fault naming the reason (no Ack: Salesforce keeps the message and retries)."""
    from xml.sax.saxutils import escape

    code = "soapenv:Client" if client else "soapenv:Server"
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
            f'<soapenv:Fault><faultcode>{code}</faultcode><faultstring>{escape(reason)}</faultstring>'
            '</soapenv:Fault></soapenv:Body></soapenv:Envelope>').encode()


def record_push(data: dict[str, Any], *, at: dt.datetime, received: int = 0, refused: str | None = None,
                missed: str | None = None) -> dict[str, Any]:
    """The push status document after one event: a batch received (its size), a refusal (why), or a change
    the poll found that push should have delivered (which opportunity). Refusals and misses are counted;
    receipts are not (a busy stream records its time only now and then); times are ISO strings."""
    updated = dict(data)
    when = at.isoformat()
    if received:
        updated.update(last_received_at=when, last_batch=received)
    if refused is not None:
        updated.update(last_refused_at=when, last_refused_reason=refused[:300],
                       refused=int(updated.get("refused", 0)) + 1)
    if missed is not None:
        updated.update(last_missed_at=when, last_missed_opportunity=missed,
                       missed=int(updated.get("missed", 0)) + 1)
    return updated


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_NOTIFICATIONS",
    "PUSH_DOC",
    "Accepted",
    "BodyTooLarge",
    "Notification",
    "OutboundMessage",
    "Refused",
    "accept",
    "ack",
    "fault",
    "is_salesforce_id",
    "parse_outbound",
    "record_push",
    "same_org",
]
