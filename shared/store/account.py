"""`Store`: every table the connector keeps, reached through one storage account."""

from __future__ import annotations

from typing import TYPE_CHECKING

from azure.data.tables import TableServiceClient

from shared.models.records import CreateClaim, CreateIntent, Cursor, DeadLetter, IntentStatus, StatusDoc, SyncState
from shared.store.connection import storage_credential, storage_target, transport_options
from shared.store.links import LinkStore
from shared.store.secrets import SecretStore
from shared.store.synclog import SyncLogStore
from shared.store.tables import RecordTable, Table

if TYPE_CHECKING:
    from shared.settings import Settings

# A storage call that cannot connect should fail in seconds with a clear message, not retry for minutes.
_CLIENT_OPTIONS = {"retry_total": 3, "retry_backoff_factor": 0.5, "connection_timeout": 5, "read_timeout": 30}


class IntentStore(RecordTable[CreateIntent]):
    def list_open(self) -> list[CreateIntent]:
        return list(self.list("status eq @status", {"status": IntentStatus.PENDING.value}))


class Store:
    """The connector's tables. Tables are created on first use.

    Args:
        service: the account's TableServiceClient.
        prefix: put before every table name; tests use a unique one to get empty tables.
    """

    def __init__(self, service: TableServiceClient, *, prefix: str = "") -> None:
        def table(name: str) -> Table:
            return Table(service, f"{prefix}{name}")

        self.links = LinkStore(table("CosellLinks"))
        self.state = RecordTable(table("CosellSyncState"), SyncState, partition="state", key="referral_id")
        self.cursors = RecordTable(table("CosellCursors"), Cursor, partition="cursor", key="name")
        self.intents = IntentStore(table("CosellCreateIntents"), CreateIntent, partition="intent",
                                   key="opportunity_id")
        self.create_claims = RecordTable(table("CosellCreateIntents"), CreateClaim, partition="claim", key="referral_id")
        self.synclog = SyncLogStore(table("CosellSyncLog"))
        self.dead_letters = RecordTable(table("CosellDeadLetters"), DeadLetter, partition="dead", key="key")
        self.status = RecordTable(table("CosellStatus"), StatusDoc, partition="status", key="name")
        self.secrets = SecretStore(table("CosellSecrets"))

    @classmethod
    def from_connection_string(cls, connection_string: str, *, prefix: str = "") -> Store:
        endpoint = TableServiceClient.from_connection_string(connection_string).url  # parsed: no request made
        return cls(TableServiceClient.from_connection_string(connection_string, **_CLIENT_OPTIONS,
                                                             **transport_options(endpoint)), prefix=prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """A connection string, or the Table endpoint with the app's managed identity (see `storage_target`)."""
        target = storage_target(settings)
        if target.connection_string is not None:
            return cls.from_connection_string(target.connection_string)
        return cls(TableServiceClient(endpoint=target.table_url, credential=storage_credential(), **_CLIENT_OPTIONS,
                                      **transport_options(target.table_url)))
