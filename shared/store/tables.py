"""Table Storage plumbing: one place that maps SDK errors to ours, creates tables, and packs records.

Why a codec: Table Storage keeps flat properties of at most 64 KiB each, but a sync base can hold 32 KB of
notes in emoji. Nested values are stored as JSON split over `name`, `name__1`, ... so any record fits
(up to the 1 MiB entity limit), and loading gives back exactly what was stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from shared.errors import AlreadyExists, Conflict, ConnectorError, NotFound, Unavailable
from shared.models.records import Record

CHUNK = 15_000
"""Characters per stored string chunk: 64 KiB holds 32,768 UTF-16 units, and a character may need two."""
TRANSACTION_ENTITIES = 100
TRANSACTION_BYTES = 3_500_000
"""A transaction holds at most 100 entities of one partition and 4 MiB; this leaves room for the envelope."""

_SYSTEM = {"PartitionKey", "RowKey", "Timestamp", "etag"}
_NOT_IN_KEYS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
"""Characters Table Storage forbids in PartitionKey and RowKey."""

R = TypeVar("R", bound=Record)


def pack(values: dict[str, Any]) -> dict[str, Any]:
    """Turn a record's JSON-ready values into flat Table properties (None is left out)."""
    entity: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (dict, list)) or (isinstance(value, str) and len(value) > CHUNK):
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            chunks = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
            entity[f"{name}__json"] = len(chunks)
            for index, chunk in enumerate(chunks):
                entity[name if index == 0 else f"{name}__{index}"] = chunk
        else:
            entity[name] = value
    return entity


def unpack(entity: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `pack`: reassemble JSON chunks, drop Table system properties."""
    values: dict[str, Any] = {}
    for name, value in entity.items():
        if name in _SYSTEM or "__" in name:
            continue
        count = entity.get(f"{name}__json")
        if count:
            text = "".join([value] + [entity[f"{name}__{i}"] for i in range(1, int(count))])
            values[name] = json.loads(text)
        else:
            values[name] = value
    return values


def _error_code(exc: HttpResponseError) -> str | None:
    """The service's error code; some SDK paths fill `error_code`, all keep the response header."""
    response = getattr(exc, "response", None)
    header = response.headers.get("x-ms-error-code") if response is not None else None
    return header or (str(exc.error_code) if getattr(exc, "error_code", None) else None)


def etag_of(entity: Any) -> str | None:
    metadata = getattr(entity, "metadata", None) or {}
    return metadata.get("etag") or (entity.get("etag") if isinstance(entity, dict) else None)


class Table:
    """One Azure Table, created on first use, with errors mapped to the connector's.

    Args:
        service: the account's TableServiceClient.
        name: the table name (letters and digits only).
    """

    def __init__(self, service: TableServiceClient, name: str) -> None:
        self.name = name
        self._client: TableClient = service.get_table_client(name)
        self._endpoint = service.url

    def _call(self, operation: Callable[[], Any], *, what: str) -> Any:
        """Run an SDK call; create the table once if it does not exist yet; translate errors."""
        for first in (True, False):
            try:
                return operation()
            except ResourceNotFoundError as exc:
                if first and _error_code(exc) == "TableNotFound":
                    try:
                        self._client.create_table()
                    except ResourceExistsError:
                        pass
                    continue
                raise NotFound(f"{what}: not found in table {self.name}") from None
            except ResourceModifiedError:
                raise Conflict(f"{what}: changed by someone else since it was read (table {self.name})") from None
            except ResourceExistsError:
                raise AlreadyExists(f"{what}: already exists in table {self.name}") from None
            except TableTransactionError as exc:
                if exc.error_code == "EntityAlreadyExists":
                    raise AlreadyExists(f"{what}: already exists in table {self.name}") from None
                if exc.error_code == "UpdateConditionNotSatisfied":
                    raise Conflict(f"{what}: changed by someone else since it was read (table {self.name})") from None
                if exc.error_code == "TableNotFound" and first:
                    self._client.create_table()
                    continue
                raise ConnectorError(f"{what}: table transaction failed ({exc.error_code})") from None
            except (ServiceRequestError, ServiceResponseError):
                raise Unavailable(
                    f"Table Storage is not reachable at {self._endpoint}: start Azurite (`make run` does) "
                    "or check the COSELL_STORAGE / AzureWebJobsStorage setting"
                ) from None
            except HttpResponseError as exc:
                if exc.status_code == 412:
                    raise Conflict(f"{what}: changed by someone else since it was read") from None
                if exc.status_code and exc.status_code >= 500:
                    raise Unavailable(f"{what}: Table Storage answered {exc.status_code}") from None
                raise ConnectorError(f"{what}: Table Storage refused ({exc.status_code} {exc.error_code})") from None
        raise AssertionError("unreachable")

    def get(self, partition: str, row: str) -> dict[str, Any] | None:
        if _NOT_IN_KEYS.search(partition) or _NOT_IN_KEYS.search(row):
            return None  # no row can have this key; asking fails (Azurite answers 500) instead of finding nothing
        try:
            entity = self._call(lambda: self._client.get_entity(partition, row), what=f"{partition}/{row}")
        except NotFound:
            return None
        return {**entity, "etag": etag_of(entity)}

    def insert(self, entity: dict[str, Any]) -> str:
        result = self._call(lambda: self._client.create_entity(entity), what=self._key(entity))
        return result["etag"]

    def replace(self, entity: dict[str, Any], etag: str) -> str:
        result = self._call(
            lambda: self._client.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            ),
            what=self._key(entity),
        )
        return result["etag"]

    def upsert(self, entity: dict[str, Any]) -> str:
        result = self._call(lambda: self._client.upsert_entity(entity, mode=UpdateMode.REPLACE),
                            what=self._key(entity))
        return result["etag"]

    def delete(self, partition: str, row: str, etag: str | None = None) -> None:
        """Delete a row; with an ETag only if unchanged. A row already gone is not an error."""
        if etag:
            operation = lambda: self._client.delete_entity(  # noqa: E731 - one-off closure
                partition, row, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        else:
            operation = lambda: self._client.delete_entity(partition, row)  # noqa: E731
        try:
            self._call(operation, what=f"{partition}/{row}")
        except NotFound:
            return

    def transaction(self, operations: list[tuple[str, dict[str, Any]]], *, what: str) -> None:
        """Submit up to 100 operations on one partition, all or nothing."""
        self._call(lambda: self._client.submit_transaction(operations), what=what)

    def query(self, query_filter: str, parameters: dict[str, Any] | None = None,
              *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Matching rows, lazily, page by page."""
        pages = self._call(
            lambda: self._client.query_entities(query_filter, parameters=parameters,
                                                results_per_page=page_size),
            what=f"query {query_filter}",
        )
        iterator = iter(pages)
        while True:
            try:
                entity = self._call(lambda: next(iterator), what=f"query {query_filter}")
            except StopIteration:
                return
            except NotFound:
                return
            yield {**entity, "etag": etag_of(entity)}

    @staticmethod
    def _key(entity: dict[str, Any]) -> str:
        return f"{entity.get('PartitionKey')}/{entity.get('RowKey')}"


class RecordTable(Generic[R]):
    """Typed records in one partition of a table, keyed by one of their fields, written with If-Match.

    Args:
        table: where the rows live.
        model: the record class.
        partition: the PartitionKey all rows share (small tables: one partition keeps listing cheap).
        key: the record field used as RowKey.
    """

    def __init__(self, table: Table, model: type[R], *, partition: str, key: str) -> None:
        self.table, self.model, self.partition, self.key = table, model, partition, key

    def _load(self, entity: dict[str, Any]) -> R:
        record = self.model.model_validate(unpack(entity))
        record.etag = entity.get("etag")
        return record

    def get(self, key: str) -> R | None:
        entity = self.table.get(self.partition, key)
        return None if entity is None else self._load(entity)

    def put(self, record: R) -> R:
        """Create the record (no ETag yet) or replace it If-Match its ETag.

        Raises:
            Conflict: another writer created or changed it first: re-read and decide again.
        """
        row = str(getattr(record, self.key))
        entity = {"PartitionKey": self.partition, "RowKey": row, **pack(record.model_dump(mode="json"))}
        if record.etag is None:
            try:
                etag = self.table.insert(entity)
            except AlreadyExists:
                raise Conflict(f"{self.table.name} {row}: created concurrently by another writer") from None
        else:
            etag = self.table.replace(entity, record.etag)
        stored = record.model_copy()
        stored.etag = etag
        return stored

    def create_many(self, records: Sequence[R]) -> list[str]:
        """Create many new records, up to 100 (and under 4 MiB) to a transaction, never overwriting one.

        A transaction refused because one of its rows already exists is written again row by row.

        Returns:
            The keys that already existed (those records were left as they were).
        """
        existing: list[str] = []
        batch: list[dict[str, Any]] = []
        size = 0

        def flush() -> None:
            if not batch:
                return
            try:
                self.table.transaction([("create", entity) for entity in batch], what=f"{len(batch)} records")
            except AlreadyExists:
                for entity in batch:
                    try:
                        self.table.insert(entity)
                    except AlreadyExists:
                        existing.append(entity["RowKey"])
            batch.clear()

        for record in records:
            entity = {"PartitionKey": self.partition, "RowKey": str(getattr(record, self.key)),
                      **pack(record.model_dump(mode="json"))}
            weight = len(json.dumps(entity)) + 1024  # ASCII-escaped JSON bounds its UTF-8 bytes; + the envelope
            if len(batch) == TRANSACTION_ENTITIES or size + weight > TRANSACTION_BYTES:
                flush()
                size = 0
            batch.append(entity)
            size += weight
        flush()
        return existing

    def delete(self, record: R) -> None:
        self.table.delete(self.partition, str(getattr(record, self.key)), record.etag)

    def list(self, query_filter: str = "", parameters: dict[str, Any] | None = None) -> Iterator[R]:
        condition = "PartitionKey eq @pk" + (f" and ( {query_filter} )" if query_filter else "")  # spaces: the SDK finds @names by splitting on them
        for entity in self.table.query(condition, {"pk": self.partition, **(parameters or {})}):
            yield self._load(entity)


__all__ = ["CHUNK", "RecordTable", "Table", "etag_of", "pack", "unpack"]
