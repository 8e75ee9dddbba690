"""No secret ever leaves its place: a whole workload with a sentinel in every secret, then a search for it.

The credentials cannot simply be replaced by a sentinel (the simulators check them), so the simulators'
own secrets carry it (`secret_marker`): Partner Center's client secret and every refresh and access token it
mints, Salesforce's client secret, the users' passwords and security tokens and every session token. The
connector's other secret settings hold it directly: COSELL_LOCAL_FUNCTION_KEY and COSELL_WEBHOOK_FUNCTION_KEY.
SALESFORCE_PRIVATE_KEY cannot hold one (it must be a valid RSA key), so its base64 lines are searched for
instead, and so is the storage account key of the connection string.

The workload, through the real function_app.py on the local host (password grant: the Salesforce secrets
travel on every login): the webhook registered and viewed through the app's routes, a Microsoft referral
delivered by signed webhook and synced to Salesforce, a seller's opportunity polled and shared to Partner
Center, an edit each way, a delivery for a referral that does not exist (dead-lettered), the nudge route,
the webhook test event, the health and status routes, and refused calls (forged delivery, garbage bodies,
a wrong function key). In this process: the operator's CLI (webhook-status, status, validate-mapping
against the org with the JWT grant, and two that fail on a wrong secret).

Searched afterwards, the sentinel (and the private key and storage key lines) must appear in none of:
- the host's log file (stdout and stderr of `python -m sandbox.host --verbose`),
- the log records pytest captured from the in-process connector code, the CLI commands (every logger,
  DEBUG and up), and their stdout and stderr; records of the simulators, which play Microsoft and Salesforce
  and hold the secrets by design, are not searched,
- any HTTP response of the app (status line reason, headers, body), the failing ones included,
- any request the connector sent to Azurite, recorded by a relay in front of the table and queue services
  (every queue message, decoded, and every entity written, deleted ones included), except writes to the
  secrets table that hold exactly a Partner Center refresh token: keeping the newest one is that table's job,
  and the test asserts it is there,
- any entity in any Azurite table at the end (same single exception), any message left in any queue
  (poison queues included),
- any record the connector wrote in Salesforce (Audit__c trail, every field) or in Partner Center.
Partner Center's stored webhook registration is not searched: its URL must carry the function key (that is
how Partner Center passes the function's auth), and the test registers it so.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from sandbox.azurite import ACCOUNT_KEY, Azurite
from sandbox.ca import SandboxCA
from sandbox.partner_center import PartnerCenterSim
from sandbox.salesforce import SalesforceSim
from shared.cli import main
from shared.settings import APP_ROOT, get_settings
from tests.fixtures.connector import EVERY_SECOND, QUIET, seller_opportunity, wait_for
from tests.fixtures.host import RunningHost
from tests.fixtures.partner_center import HOST_JSON, event_body, signed_headers

SENTINEL = "SENTINEL-7f3a9c41e2"
LOCAL_KEY = f"{SENTINEL}-local-function-key"
WEBHOOK_KEY = f"{SENTINEL}-webhook-function-key"
SECRETS_TABLE = "CosellSecrets"
MISSING_REFERRAL = "0000dead-0000-4000-8000-000000000000"


class RecordingRelay:
    """A TCP relay in front of one Azurite service that keeps every byte the clients send."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.streams: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="recording-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            stream = bytearray()
            with self._lock:
                self.streams.append(stream)
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, stream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, record: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if record is not None:
                    record.extend(data)
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def requests(self) -> Iterator[tuple[str, bytes]]:
        """Every HTTP request sent through the relay: (request line, headers and body)."""
        with self._lock:
            streams = [bytes(stream) for stream in self.streams]
        for stream in streams:
            yield from _http_requests(stream)

    def stop(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


def _http_requests(stream: bytes) -> Iterator[tuple[str, bytes]]:
    position = 0
    while (end := stream.find(b"\r\n\r\n", position)) != -1:
        head = stream[position:end].decode("latin-1")
        line, *headers = head.split("\r\n")
        fields = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in headers)}
        body_start = end + 4
        if fields.get("transfer-encoding", "").lower() == "chunked":
            body, cursor = bytearray(), body_start
            while True:
                size_end = stream.index(b"\r\n", cursor)
                size = int(stream[cursor:size_end].split(b";")[0], 16)
                body += stream[size_end + 2:size_end + 2 + size]
                cursor = size_end + 2 + size + 2
                if size == 0:
                    break
            position = cursor
        else:
            length = int(fields.get("content-length") or 0)
            body, position = bytearray(stream[body_start:body_start + length]), body_start + length
        yield line, head.encode("latin-1") + b"\r\n\r\n" + bytes(body)


def _queue_texts(raw: bytes) -> list[str]:
    """The messages of a queue request, decoded as the host decodes them (base64 text)."""
    texts = []
    for encoded in re.findall(rb"<MessageText>(.*?)</MessageText>", raw, re.S):
        try:
            texts.append(base64.b64decode(encoded).decode("utf-8", "replace"))
        except ValueError:
            texts.append(encoded.decode("latin-1"))
    return texts


class Evidence:
    """Everything the workload left behind, by where it was found."""

    def __init__(self, needles: list[str]) -> None:
        self.needles = needles
        self.places: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}

    def add(self, kind: str, where: str, text: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        for needle in self.needles:
            if needle in text:
                at = text.index(needle)
                self.places.setdefault(f"{kind}: {where}", []).append(text[max(0, at - 80):at + 80])


@pytest.fixture
def responses() -> list[requests.Response]:
    return []


def _call(host: RunningHost, seen: list[requests.Response]) -> Callable[..., requests.Response]:
    def call(method: str, route: str, *, key: str | None = LOCAL_KEY, **kwargs: Any) -> requests.Response:
        headers = {**({"x-functions-key": key} if key else {}), **kwargs.pop("headers", {})}
        answer = requests.request(method, f"{host.url}/api/{route}", headers=headers, timeout=60, **kwargs)
        seen.append(answer)
        return answer
    return call


def _private_key_lines(pem: str) -> list[str]:
    """Lines of the key's base64 body: any of them in a log would be the key leaking, piece by piece."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")][1:-1]


def test_no_secret_appears_in_logs_responses_storage_or_records(
        sandbox_ca: SandboxCA, sf_sim_factory: Callable[..., SalesforceSim], function_host: Callable[..., RunningHost],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
        tmp_path: Path, responses: list[requests.Response]) -> None:
    caplog.set_level(logging.DEBUG)
    with Azurite() as azurite:
        tables, queues = RecordingRelay(azurite.table_port), RecordingRelay(azurite.queue_port)
        storage = (azurite.connection_string.replace(f":{azurite.table_port}/", f":{tables.port}/")
                   .replace(f":{azurite.queue_port}/", f":{queues.port}/"))
        pc = PartnerCenterSim(sandbox_ca, delivery_delays=(0.3, 0.6, 1.0), secret_marker=SENTINEL).start()
        sf = sf_sim_factory(multi_currency=True, currencies=["USD", "EUR"], secret_marker=SENTINEL)
        try:
            evidence, cli_out = _run_workload(pc, sf, storage, function_host, monkeypatch, capsys, caplog, tmp_path,
                                              responses)
            _search_storage(evidence, azurite.connection_string, tables, queues, pc)
        finally:
            tables.stop()
            queues.stop()
            pc.stop()
    evidence.add("CLI output", "stdout+stderr", cli_out)
    for answer in responses:
        evidence.add("HTTP response", f"{answer.request.method} {answer.request.path_url.split('?')[0]} "
                                      f"-> {answer.status_code}",
                      f"{answer.reason} {dict(answer.headers)} {answer.text}")
    for sobject in ("Opportunity", "Account", "Contact", "OpportunityContactRole", "Microsoft_Solution__c"):
        for row in sf.query(f"SELECT Id FROM {sobject}"):
            evidence.add("Salesforce record", f"{sobject} {row['Id']}", json.dumps(sf.record(sobject, row["Id"])))
    for referral_id, referral in pc.referrals.items():
        evidence.add("Partner Center referral", referral_id, json.dumps(referral))

    print("searched:", evidence.counts)
    assert evidence.places == {}, json.dumps(evidence.places, indent=1, ensure_ascii=False)[:6000]
    # The search looked at real material, not at nothing.
    assert evidence.counts["host log line"] > 50 and evidence.counts["log record"] > 20
    assert evidence.counts["HTTP response"] >= 11 and evidence.counts["queue message"] >= 4
    assert evidence.counts["table write"] > 20 and evidence.counts["Salesforce record"] >= 6
    assert evidence.counts["refresh token kept"] >= 1


def _run_workload(pc: PartnerCenterSim, sf: SalesforceSim, storage: str, function_host: Callable[..., RunningHost],
                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
                  tmp_path: Path, responses: list[requests.Response]) -> tuple[Evidence, str]:
    from shared.store import Store

    credentials = sf.credentials
    needles = [SENTINEL, ACCOUNT_KEY, *_private_key_lines(credentials.private_key_pem)]
    evidence = Evidence(needles)
    password_grant = {**credentials.settings_env(), "SALESFORCE_PRIVATE_KEY": ""}
    env = {**pc.settings_env(), **password_grant, "AzureWebJobsStorage": storage,
           "COSELL_SF_POLL_SCHEDULE": EVERY_SECOND, "COSELL_PC_RECONCILE_SCHEDULE": QUIET,
           "COSELL_MAPPING_FILE": str(APP_ROOT / "mappings" / "salesforce.json"),
           "COSELL_LOCAL_FUNCTION_KEY": LOCAL_KEY, "COSELL_WEBHOOK_FUNCTION_KEY": WEBHOOK_KEY,
           "COSELL_PUBLIC_URL": "https://cosell.example", "COSELL_MAX_ATTEMPTS": "1"}
    assert SENTINEL in env["PARTNER_CENTER_CLIENT_SECRET"] and SENTINEL in env["PARTNER_CENTER_REFRESH_TOKEN"]
    assert all(SENTINEL in env[name] for name in ("SALESFORCE_CLIENT_SECRET", "SALESFORCE_PASSWORD",
                                                   "SALESFORCE_SECURITY_TOKEN"))
    host = function_host(env=env, host_json=HOST_JSON)
    call = _call(host, responses)
    store = Store.from_connection_string(storage)

    # Registration through the app's own routes; the receiver URL carries the function key, as on Azure.
    registered = call("POST", "partnercenter/webhook", json={
        "url": f"{host.url}/api/partnercenter/events?code={LOCAL_KEY}", "overwrite": True})
    assert registered.status_code in (200, 201), registered.text
    assert call("GET", "partnercenter/webhook").status_code == 200

    # Microsoft -> Salesforce by signed webhook; seller -> Partner Center by the poll; an edit each way.
    incoming = pc.create_incoming({"name": "Leak check - incoming", "details": {"notes": "from Microsoft"}})
    link = wait_for(lambda: store.links.get_by_referral(incoming["id"]), what="the incoming referral's opportunity")
    opportunity_id = seller_opportunity(sf, name="Leak check - shared")
    shared = wait_for(lambda: next((r for r in pc.referrals.values() if r.get("externalReferenceId") == opportunity_id),
                                   None), what="the shared opportunity's referral")
    sf.update("Opportunity", opportunity_id, {"Amount": 4321})
    wait_for(lambda: pc.referrals[shared["id"]]["details"]["dealValue"] == 4321, what="the seller's edit")
    pc.update_as_microsoft(incoming["id"], {"details": {"notes": "Microsoft's edit"}})
    wait_for(lambda: sf.record("Opportunity", link.opportunity_id)["Description"] == "Microsoft's edit",
             what="Microsoft's edit")

    # A failure that dead-letters: a genuine delivery for a referral Partner Center does not have.
    pc.emit("referral-updated", MISSING_REFERRAL)
    wait_for(lambda: store.dead_letters.get(f"referral-{MISSING_REFERRAL}"), what="the dead letter")

    # The other routes, and refusals whose answers must not echo anything secret.
    assert call("POST", "salesforce/changes", json={"ids": [opportunity_id]}).status_code == 202
    assert call("POST", "salesforce/changes", data=b"{garbage").status_code == 400
    assert call("POST", "partnercenter/webhook/test").status_code == 200
    assert call("GET", "health", key=None).status_code == 200
    assert call("GET", "status").status_code == 200
    assert call("GET", "status.json").status_code == 200
    assert call("GET", "status.json", key=f"{SENTINEL}-wrong-key").status_code == 401
    forged = event_body(incoming["id"])
    assert call("POST", "partnercenter/events", data=forged,
                headers=signed_headers(pc.signer, "https://evil.example/c.cer", forged)).status_code == 401
    assert call("PUT", "partnercenter/webhook", json={"url": f"http://evil.example/?code={LOCAL_KEY}"}).status_code == 400
    wait_for(lambda: _settled(storage, pc), what="the deliveries to arrive and the queues to drain")
    assert host.stop() == 0
    for line in host.log().splitlines():
        evidence.add("host log line", line[:60], line)

    # The operator's CLI in this process: the same settings, storage through the relay too.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ["--settings", str(tmp_path / "none.json")]
    commands: list[tuple[list[str], dict[str, str]]] = [
        (["webhook-status"], {}),
        (["status"], {}),
        (["validate-mapping", "--describe-from-org"], {"SALESFORCE_PRIVATE_KEY": credentials.private_key_pem}),
        (["webhook-status"], {"PARTNER_CENTER_CLIENT_SECRET": f"{SENTINEL}-wrong-secret"}),
        (["validate-mapping", "--describe-from-org"], {"SALESFORCE_PASSWORD": f"{SENTINEL}-wrong-password"}),
    ]
    codes = []
    caplog.clear()  # from here on, every record is the CLI's (the simulators, playing Microsoft, log before)
    for argv, overrides in commands:
        with monkeypatch.context() as scoped:
            for name, value in overrides.items():
                scoped.setenv(name, value)
            get_settings.cache_clear()
            codes.append(main([*settings, *argv]))
    get_settings.cache_clear()
    for record in caplog.records:
        evidence.add("log record", record.name, record.getMessage() + str(record.exc_text or ""))
    assert codes[2] == 0 and codes[3] == 1 and codes[4] == 1, codes
    captured = capsys.readouterr()
    return evidence, captured.out + captured.err


def _settled(storage: str, pc: PartnerCenterSim) -> bool:
    service = QueueServiceClient.from_connection_string(storage)
    depths = [service.get_queue_client(q.name).get_queue_properties().approximate_message_count
              for q in service.list_queues() if not q.name.endswith("-poison")]
    return not pc.pending_deliveries() and not any(depths)


def _search_storage(evidence: Evidence, direct: str, tables: RecordingRelay, queues: RecordingRelay,
                    pc: PartnerCenterSim) -> None:
    refresh_tokens = sorted(pc.refresh_tokens, key=len, reverse=True)

    def without_kept_tokens(text: str) -> str:
        for token in refresh_tokens:
            if token in text:
                evidence.counts["refresh token kept"] = evidence.counts.get("refresh token kept", 0) + 1
                text = text.replace(token, "<refresh token>")
        return text

    for line, raw in tables.requests():
        text = raw.decode("utf-8", "replace")
        method, path = (line.split(" ") + ["", ""])[:2]
        table = path.split("/")[2].split("(")[0] if path.count("/") >= 2 else ""
        if method in ("POST", "PUT", "MERGE", "PATCH", "DELETE"):
            kept = table == SECRETS_TABLE and method in ("PUT", "POST", "MERGE", "PATCH")
            evidence.add("table write", line[:80], without_kept_tokens(text) if kept else text)
    for line, raw in queues.requests():
        if line.startswith("POST") and "/messages" in line:
            for message in _queue_texts(raw):
                evidence.add("queue message", line[:80], message)
    service = TableServiceClient.from_connection_string(direct)
    for table in service.list_tables():
        for entity in service.get_table_client(table.name).list_entities():
            text = json.dumps(dict(entity), default=str, ensure_ascii=False)
            evidence.add("table entity", f"{table.name} {entity.get('RowKey')}",
                         without_kept_tokens(text) if table.name == SECRETS_TABLE else text)
    stored = TableServiceClient.from_connection_string(direct).get_table_client(SECRETS_TABLE)
    assert any(SENTINEL in str(entity.get("value", "")) for entity in stored.list_entities()), \
        "the rotated refresh token is not in the secrets table"
    queue_service = QueueServiceClient.from_connection_string(direct)
    for queue in queue_service.list_queues():
        for message in queue_service.get_queue_client(queue.name).peek_messages(max_messages=32):
            evidence.add("queue message left", queue.name, str(message.content))
