"""The simulated org's Outbound Messages: what the project's Flows make a real org send, sent the same way.

A real org gets push from the metadata an admin deploys: a record-triggered Flow
(`flows/*.flow-meta.xml`: object, create/update trigger, entry filters) whose `outboundMessage` action names
a `WorkflowOutboundMessage` (`workflows/<Object>.workflow-meta.xml`: fields to send). The simulator reads
the same files, so the metadata and the simulator cannot drift apart: a Flow that selects nothing, or names
a message that does not exist, behaves (or fails to load) here as it would in the org.

Delivery follows Salesforce's documented behaviour: after each committed change a notification is queued;
a background sender posts up to 100 notifications per SOAP `notifications` call to the endpoint, and
retries whatever was not acknowledged (`<Ack>true</Ack>`) with growing intervals (here seconds, capped by
`max_backoff`; Salesforce: up to 2 hours, for 24 hours), keeping each notification's id on every retry. The
record's fields are read at send time (a later change is what gets delivered; a deleted record sends only
its Id). Faults for tests and the sandbox: drop, delay or duplicate the next notifications.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import requests

from sandbox.sf_model import Schema, SchemaError
from sandbox.sf_org import Change, Org, Record
from sandbox.sf_schema import NS, DEFAULT_METADATA_DIR
from sandbox.sf_values import format_value, make_id

_Q = "{" + NS + "}"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
BATCH = 100
"""Notifications per SOAP call (the WSDL's maxOccurs)."""
GIVE_UP = dt.timedelta(hours=24)


@dataclass(frozen=True)
class OutboundMessageDef:
    """A `WorkflowOutboundMessage`: which object, which fields, and its id (the envelope's ActionId)."""

    full_name: str
    sobject: str
    fields: tuple[str, ...]
    action_id: str


@dataclass(frozen=True)
class FlowFilter:
    field: str
    operator: str
    value: Any

    def matches(self, record: Record) -> bool:
        actual = record.get(self.field)
        if self.operator == "EqualTo":
            return actual == self.value
        if self.operator == "NotEqualTo":
            return actual != self.value
        if self.operator == "IsNull":
            return (actual in (None, "")) == bool(self.value)
        raise SchemaError(f"flow filter operator {self.operator} is not simulated")


@dataclass(frozen=True)
class RecordTrigger:
    """A record-triggered, after-save Flow whose action sends an outbound message."""

    flow: str
    sobject: str
    on_create: bool
    on_update: bool
    filters: tuple[FlowFilter, ...]
    any_filter: bool
    message: OutboundMessageDef

    def selects(self, change: Change) -> bool:
        previous, record = change
        if record.get("IsDeleted"):
            return False  # after-save flows do not run on delete
        if not (self.on_create if previous is None else self.on_update):
            return False
        if not self.filters:
            return True
        results = (f.matches(record) for f in self.filters)
        return any(results) if self.any_filter else all(results)


def _text(element: ET.Element, tag: str) -> str | None:
    child = element.find(_Q + tag)
    return child.text.strip() if child is not None and child.text else None


def _value(element: ET.Element | None) -> Any:
    if element is None:
        return None
    for child in element:
        tag = child.tag.removeprefix(_Q)
        if tag == "booleanValue":
            return (child.text or "").strip() == "true"
        if tag == "numberValue":
            return float(child.text or 0)
        return child.text
    return None


def load_triggers(schema: Schema, metadata_dir: Path | str = DEFAULT_METADATA_DIR) -> list[RecordTrigger]:
    """The active record-triggered flows with an outbound message action, from the DX source.

    Raises:
        SchemaError: a flow or message Salesforce would refuse to deploy (unknown object, field or message).
    """
    default = Path(metadata_dir) / "main" / "default"
    messages: dict[str, OutboundMessageDef] = {}
    counter = itertools.count(1)
    for path in sorted((default / "workflows").glob("*.workflow-meta.xml")):
        sobject = path.name.removesuffix(".workflow-meta.xml")
        obj = schema.object(sobject)
        if obj is None:
            raise SchemaError(f"{path}: no object {sobject}")
        for element in ET.parse(path).getroot().findall(_Q + "outboundMessages"):
            name = _text(element, "fullName") or ""
            fields = tuple(f.text.strip() for f in element.findall(_Q + "fields") if f.text)
            missing = [f for f in fields if obj.field(f) is None]
            if missing or "Id" not in fields:
                raise SchemaError(f"{path}: outbound message {name}: fields must include Id and exist "
                                  f"(unknown: {', '.join(missing) or '-'})")
            messages[f"{sobject}.{name}"] = OutboundMessageDef(name, sobject, fields, make_id("04k", next(counter)))
    triggers = []
    for path in sorted((default / "flows").glob("*.flow-meta.xml")):
        root = ET.parse(path).getroot()
        start = root.find(_Q + "start")
        if _text(root, "status") != "Active" or start is None or _text(start, "triggerType") != "RecordAfterSave":
            continue
        sobject = _text(start, "object") or ""
        obj = schema.object(sobject)
        if obj is None:
            raise SchemaError(f"{path}: no object {sobject}")
        filters = []
        for element in start.findall(_Q + "filters"):
            name = _text(element, "field") or ""
            if obj.field(name) is None:
                raise SchemaError(f"{path}: filter on unknown field {sobject}.{name}")
            filters.append(FlowFilter(name, _text(element, "operator") or "", _value(element.find(_Q + "value"))))
        logic = (_text(start, "filterLogic") or "and").lower()
        if logic not in ("and", "or"):
            raise SchemaError(f"{path}: filterLogic {logic} is not simulated (and / or only)")
        kind = _text(start, "recordTriggerType") or ""
        for call in root.findall(_Q + "actionCalls"):
            if _text(call, "actionType") != "outboundMessage":
                continue
            action = _text(call, "actionName") or ""
            if action not in messages or messages[action].sobject != sobject:
                raise SchemaError(f"{path}: action {action} is not an outbound message on {sobject}")
            triggers.append(RecordTrigger(path.name.removesuffix(".flow-meta.xml"), sobject,
                                          kind in ("Create", "CreateAndUpdate"), kind in ("Update", "CreateAndUpdate"),
                                          tuple(filters), logic == "or", messages[action]))
    return triggers


def envelope(*, org_id: str, action_id: str, base_url: str,
             notifications: list[tuple[str, str, dict[str, str | None]]]) -> bytes:
    """A SOAP `notifications` call as Salesforce sends it (Outbound Messaging WSDL).

    Args:
        notifications: (notification id, sObject type, field name -> value in its XML form).
    """
    items = []
    for notification_id, sobject, values in notifications:
        fields = "".join(f"<sf:{name} xsi:nil=\"true\"/>" if value is None else f"<sf:{name}>{escape(value)}</sf:{name}>"
                         for name, value in values.items())
        items.append(f"<Notification><Id>{notification_id}</Id>"
                     f"<sObject xsi:type=\"sf:{sobject}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">"
                     f"{fields}</sObject></Notification>")
    url = f"{base_url}/services/Soap"
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f'<soapenv:Body><notifications xmlns="{OUTBOUND_NS}">'
            f"<OrganizationId>{org_id}</OrganizationId><ActionId>{action_id}</ActionId>"
            '<SessionId xsi:nil="true"/>'
            f"<EnterpriseUrl>{url}/c/64.0/{org_id[:15]}</EnterpriseUrl><PartnerUrl>{url}/u/64.0/{org_id[:15]}</PartnerUrl>"
            f"{''.join(items)}</notifications></soapenv:Body></soapenv:Envelope>").encode("utf-8")


def acknowledged(response: requests.Response) -> bool:
    """Whether the answer is a 2xx `notificationsResponse` with `Ack` true (what Salesforce requires)."""
    if not 200 <= response.status_code < 300:
        return False
    try:
        root = ET.fromstring(response.content)
    except ET.ParseError:
        return False
    ack = root.find(f".//{{{OUTBOUND_NS}}}notificationsResponse/{{{OUTBOUND_NS}}}Ack")
    return ack is not None and (ack.text or "").strip().lower() == "true"


@dataclass
class _Pending:
    notification_id: str
    trigger: RecordTrigger
    record_id: str
    queued_at: float
    due: float
    attempts: int = 0


@dataclass
class _Fault:
    kind: str
    remaining: int | None
    delay: float = 0.0


@dataclass
class Outbox:
    """The org's outbound message queue and its sender thread.

    Args:
        org: the org whose commits are watched.
        triggers: from `load_triggers`.
        base_url: the simulator's URL (EnterpriseUrl/PartnerUrl of the envelopes).
        endpoint: where messages go (the endpoint URL an admin sets per environment); None: nothing sent.
        verify: CA bundle for HTTPS endpoints.
        first_backoff / max_backoff: retry intervals (doubling).
    """

    org: Org
    triggers: list[RecordTrigger]
    base_url: Callable[[], str]
    endpoint: str | None = None
    verify: str | bool = True
    first_backoff: float = 0.5
    max_backoff: float = 30.0
    pending: list[_Pending] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    acknowledged: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._stopping = False
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="sf-sim-outbound", daemon=True)
        self.org.commit_listeners.append(self.on_commit)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()

    # -- queueing (called under the org's lock: no I/O here)

    def on_commit(self, changes: list[Change]) -> None:
        now = time.monotonic()
        with self._lock:
            if self.endpoint is None:
                return
            for change in changes:
                record = change[1]
                for trigger in self.triggers:
                    if record.get("_type") != trigger.sobject or not trigger.selects(change):
                        continue
                    notification = _Pending(make_id("04l", next(self._ids)), trigger, record["Id"], now, now)
                    for copy in self._apply_faults(notification):
                        self.pending.append(copy)
            del self.log[:-1000]
            self._lock.notify_all()

    def _apply_faults(self, notification: _Pending) -> list[_Pending]:
        if not self.faults:
            return [notification]
        fault = self.faults[0]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.faults.pop(0)
        if fault.kind == "drop":
            self.log.append({"notification": notification.notification_id, "record": notification.record_id,
                             "status": "dropped"})
            return []
        if fault.kind == "delay":
            notification.due += fault.delay
            return [notification]
        twin = _Pending(notification.notification_id, notification.trigger, notification.record_id,
                        notification.queued_at, notification.due + 0.05)
        return [notification, twin]

    def add_fault(self, kind: str, *, count: int | None = 1, delay: float = 0.0) -> None:
        """`drop`, `delay` (by `delay` s) or `duplicate` the next `count` notifications (None: all, until cleared)."""
        if kind not in ("drop", "delay", "duplicate") or (count is not None and count < 1) or delay < 0:
            raise ValueError("kind is drop, delay or duplicate; count >= 1 or null (all); delay >= 0")
        with self._lock:
            self.faults.append(_Fault(kind, count, delay))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"endpoint": self.endpoint.split("?")[0] if self.endpoint else None,
                    "pending": len(self.pending), "acknowledged": self.acknowledged,
                    "faults": [{"kind": f.kind, "remaining": f.remaining, "delay": f.delay} for f in self.faults],
                    "deliveries": list(self.log[-50:])}

    # -- sending

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping:
                    now = time.monotonic()
                    due = [p for p in self.pending if p.due <= now]
                    if due:
                        break
                    wake = min((p.due for p in self.pending), default=None)
                    self._lock.wait(timeout=None if wake is None else max(0.01, wake - now))
                if self._stopping:
                    return
                batch = self._batch(due)
            self._send(batch)

    def _batch(self, due: list[_Pending]) -> list[_Pending]:
        """Up to 100 due notifications of one outbound message, oldest first, one per notification id."""
        message = min(due, key=lambda p: p.due).trigger.message
        batch: list[_Pending] = []
        seen: set[str] = set()
        for pending in sorted(due, key=lambda p: p.due):
            if pending.trigger.message == message and pending.notification_id not in seen and len(batch) < BATCH:
                batch.append(pending)
                seen.add(pending.notification_id)
        return batch

    def _send(self, batch: list[_Pending]) -> None:
        message = batch[0].trigger.message
        with self.org.lock:
            notifications = [(p.notification_id, message.sobject, self._values(message, p.record_id)) for p in batch]
        body = envelope(org_id=self.org.org_id, action_id=message.action_id, base_url=self.base_url(),
                        notifications=notifications)
        endpoint = self.endpoint
        try:
            response = self._session.post(endpoint or "", data=body, timeout=(3, 60), allow_redirects=False,
                                          verify=self.verify, headers={"Content-Type": "text/xml; charset=utf-8",
                                                                       "SOAPAction": '""'})
            ok, status = acknowledged(response), response.status_code
        except requests.RequestException as exc:
            ok, status = False, type(exc).__name__
        now = time.monotonic()
        with self._lock:
            for pending in batch:
                pending.attempts += 1
                self.log.append({"notification": pending.notification_id, "record": pending.record_id,
                                 "attempt": pending.attempts, "status": status, "acknowledged": ok,
                                 "latency": round(now - pending.queued_at, 3)})
                if ok or now - pending.queued_at > GIVE_UP.total_seconds():
                    self.pending = [p for p in self.pending if p is not pending]
                    self.acknowledged += ok
                else:
                    pending.due = now + min(self.max_backoff, self.first_backoff * 2 ** (pending.attempts - 1))
            del self.log[:-1000]

    def _values(self, message: OutboundMessageDef, record_id: str) -> dict[str, str | None]:
        record = self.org.find(record_id)
        obj = self.org.schema.objects[message.sobject]
        if record is None or record.get("IsDeleted"):
            return {"Id": record_id}
        values: dict[str, str | None] = {}
        for name in message.fields:
            value = format_value(obj.fields[name], record.get(name))
            values[name] = None if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        return values


__all__ = ["BATCH", "FlowFilter", "OutboundMessageDef", "Outbox", "RecordTrigger", "acknowledged", "envelope",
           "load_triggers"]
