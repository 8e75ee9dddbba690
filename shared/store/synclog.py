"""The sync log: an append-only, newest-first list of what the connector did.

Row keys count down from a far-future time, so the natural (ascending) order of a table query is newest
first and "the last 50" is one cheap query.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from itertools import islice

from shared.models.records import SyncLogEntry
from shared.store.tables import Table, pack, unpack

PARTITION = "log"
_FAR_FUTURE_US = 10**17


def _row_key(entry: SyncLogEntry) -> str:
    micros = int(entry.at.timestamp() * 1_000_000)
    return f"{_FAR_FUTURE_US - micros:018d}-{uuid.uuid4().hex[:8]}"


class SyncLogStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    def append(self, entry: SyncLogEntry) -> None:
        self.table.insert({"PartitionKey": PARTITION, "RowKey": _row_key(entry),
                           **pack(entry.model_dump(mode="json"))})

    def iter_recent(self) -> Iterator[SyncLogEntry]:
        """Entries newest first, lazily."""
        for entity in self.table.query("PartitionKey eq @pk", {"pk": PARTITION}, page_size=100):
            yield SyncLogEntry.model_validate(unpack(entity))

    def recent(self, limit: int = 50) -> list[SyncLogEntry]:
        return list(islice(self.iter_recent(), limit))
