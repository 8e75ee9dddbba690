"""A steady-state Salesforce poll with nothing changed: what it reads, and that it writes nothing.

The poll runs here, in this process (`poll_changes`, the timer's own function), while the host's timer is
off, against the app's storage and the simulators, after every pair has synced and gone quiet. Counted:

- Salesforce writes: records whose SystemModstamp moved, or that appeared or went, in the whole org;
  Salesforce calls: the org's API usage.
- Partner Center writes: referrals whose eTag moved.
- Table Storage: every request of this process's table client, by kind (a hook on the SDK's pipeline);
  writes by table and row.
- Queue messages sent (opportunities handed on to the sync).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from bench.world import BenchWorld

TABLE_WRITES = frozenset({"POST", "PUT", "PATCH", "MERGE", "DELETE"})


@dataclass
class SteadyPoll:
    """Totals over `polls` polls."""

    polls: int
    sf_writes: int
    sf_calls: int
    pc_writes: int
    queue_messages: int
    table_requests: Counter[str] = field(default_factory=Counter)
    table_writes_by_table: Counter[str] = field(default_factory=Counter)

    @property
    def table_writes(self) -> int:
        return sum(n for method, n in self.table_requests.items() if method in TABLE_WRITES)

    @property
    def table_reads(self) -> int:
        return sum(n for method, n in self.table_requests.items() if method not in TABLE_WRITES)


def _org_stamps(world: BenchWorld) -> dict[str, Any]:
    org = world.salesforce.org
    with org.lock:
        org.commit_due()
        return {row["Id"]: (row["SystemModstamp"], row["IsDeleted"])
                for name in org.schema.objects for row in org.rows(name, include_deleted=True)}


def measure(world: BenchWorld, polls: int) -> SteadyPoll:
    """Take in what the pairs' syncs wrote (a poll, then quiet), reach the steady state (one quiet poll,
    which records that the poll is quiet), then count `polls` polls."""
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.runtime import Services
    from shared.salesforce.polling import poll_changes
    from shared.settings import get_settings
    from shared.store import QueueSender, Store

    requests: Counter[str] = Counter()
    writes_by_table: Counter[str] = Counter()
    sent = Counter[str]()

    def on_table(response: Any) -> None:
        request = response.http_request
        requests[request.method] += 1
        if request.method in TABLE_WRITES:
            path = unquote(request.url.split("?")[0].rsplit("/", 1)[-1])
            row = re.search(r"RowKey='([^']*)'", path)
            writes_by_table[path.split("(")[0] + (f"/{row.group(1)}" if row else "")] += 1

    def on_queue(response: Any) -> None:
        if response.http_request.method == "POST":
            sent["messages"] += 1

    get_settings.cache_clear()
    services = Services()
    connection = world.azurite.connection_string
    services.__dict__.update(
        store=Store(TableServiceClient.from_connection_string(connection, raw_response_hook=on_table)),
        queues=QueueSender(QueueServiceClient.from_connection_string(connection, raw_response_hook=on_queue)))
    poll_changes(services)  # the first poll of this cursor hands on every opportunity once
    world.wait_quiet(quiet_for=2.0)
    poll_changes(services)  # the first quiet poll records that the poll is quiet: from here on, steady state
    requests.clear()
    writes_by_table.clear()
    sent.clear()
    stamps, etags = _org_stamps(world), {i: r["eTag"] for i, r in world.partner_center.referrals.items()}
    api_before = world.salesforce.org.api.used
    for _ in range(polls):
        poll_changes(services)
        time.sleep(1.0)  # as the timer would: one poll a second
    after = _org_stamps(world)
    return SteadyPoll(
        polls=polls,
        sf_writes=sum(1 for key in stamps.keys() | after.keys() if stamps.get(key) != after.get(key)),
        sf_calls=world.salesforce.org.api.used - api_before,
        pc_writes=sum(1 for i, r in world.partner_center.referrals.items() if etags.get(i) != r["eTag"]),
        queue_messages=sent["messages"], table_requests=requests, table_writes_by_table=writes_by_table)


__all__ = ["SteadyPoll", "measure"]
