"""Secrets the connector must keep between runs, such as the newest Partner Center refresh token.

Kept apart from every other table so the status page and logs, which read those, never see them.
"""

from __future__ import annotations

from shared.store.tables import Table

PARTITION = "secret"


class SecretStore:
    def __init__(self, table: Table) -> None:
        self.table = table

    def get(self, name: str) -> str | None:
        entity = self.table.get(PARTITION, name)
        return None if entity is None else str(entity.get("value", ""))

    def put(self, name: str, value: str) -> None:
        self.table.upsert({"PartitionKey": PARTITION, "RowKey": name, "value": value})
