"""The simulated org's state and its DML rules: records, users, timestamps, API usage, write faults.

Why a separate module from the HTTP routes: the rules of a write (which fields a user may set, required
fields, restricted picklists, unique external ids, the server-set `SystemModstamp`/`LastModifiedById` that
change on every update, cascade deletes) are the same whether the write arrives as a single REST call, a
Collections call, a composite subrequest, or a seller's edit through `/_sandbox/`. Tests may also call
these methods directly.

Everything here runs under one lock (`org.lock`): the REST layer holds it for a whole request, so an
all-or-none request is atomic and `rollback()` restores exactly what it changed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sandbox.sf_model import MINIMUM_ACCESS, Access, FieldDef, FieldType, ObjectDef, Schema
from sandbox.sf_values import (
    FieldValueError,
    ValueParseError,
    check_value,
    make_id,
    normalize_id,
    now_utc,
    parse_input,
)

Record = dict[str, Any]
Change = tuple["Record | None", Record]
"""A committed write: the record before (None when created) and after (IsDeleted true when deleted)."""
TYPE_KEY = "_type"
"""The key under which a stored record keeps its object name (never a field name: those have no underscore prefix)."""


class RequestError(Exception):
    """The whole request fails (HTTP status + Salesforce errorCode), e.g. JSON_PARSER_ERROR, INVALID_FIELD."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []

    def body(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            entry["fields"] = self.fields
        return [entry]


class RecordError(Exception):
    """One record fails (a per-record result in Collections; a 400 for a single-record call)."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or []
        self.status = status

    def result_error(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}

    def as_request_error(self) -> RequestError:
        return RequestError(self.status, self.code, self.message, self.fields)


@dataclass
class SimUser:
    """A user of the org; `permission_set` limits what the user sees (None: everything, like an admin)."""

    id: str
    username: str
    first_name: str
    last_name: str
    email: str
    password: str
    security_token: str
    permission_set: str | None = None
    restricted: bool = False
    """Without a permission set: True is an integration profile with minimum access (no custom object or
    field), False an admin who sees everything."""

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


@dataclass
class _Pending:
    """A write that is done but not yet committed: invisible to readers until `commit_at`."""

    commit_at: dt.datetime
    record: Record


@dataclass
class ApiUsage:
    """The org's daily API request count, shared by every caller (Sforce-Limit-Info)."""

    limit: int
    used: int = 0
    window_start: dt.datetime = field(default_factory=now_utc)
    window: dt.timedelta = dt.timedelta(hours=24)
    concurrent_refusals: int = 0
    """The next calls refused with REQUEST_LIMIT_EXCEEDED as if 25 long requests already ran (not charged)."""

    def header(self) -> str:
        return f"api-usage={self.used}/{self.limit}"


class Org:
    """One simulated org: schema, users, records and the knobs of its fault injection.

    Args:
        schema: from `sf_schema.build_schema()`.
        api_limit: the daily API request limit.
        clock: the time source (tests may pass a fake).

    Users are added with `add_user` (a User record plus a login). `lock_faults` and `late_commits` are the
    knobs of the write faults: the next `lock_faults` record writes fail with UNABLE_TO_LOCK_ROW; each
    entry of `late_commits` (seconds) delays the visibility of one upcoming record write.
    """

    def __init__(self, schema: Schema, *, api_limit: int = 100_000,
                 clock: Callable[[], dt.datetime] = now_utc) -> None:
        self.schema = schema
        self.clock = clock
        self.lock = threading.RLock()
        self.org_id = make_id("00D", 1)
        self.api = ApiUsage(api_limit)
        self.users: dict[str, SimUser] = {}
        self._records: dict[str, Record] = {}
        self._by_object: dict[str, list[str]] = {name: [] for name in schema.objects}
        self._pending: dict[str, _Pending] = {}
        self._counter = itertools.count(1)
        self._journal: list[tuple[str, Record | None, bool]] | None = None
        self._keys: dict[tuple[str, str], dict[Any, dict[str, None]]] = {}
        """(object, field) -> unique key -> the ids of the stored records holding it, for unique and external id
        fields: an upsert or a uniqueness check looks its key up instead of reading every record of the
        object (a scan made each write O(n), so a bulk load of n records cost O(n²))."""
        self._key_fields: dict[str, list[FieldDef]] = {
            name: [d for d in obj.fields.values() if d.unique or d.external_id] for name, obj in schema.objects.items()}
        self.lock_faults = 0
        self.late_commits: list[float] = []
        self.commit_listeners: list[Callable[[list[Change]], None]] = []
        """Called (under the lock; they must not block) with the changes of each commit: what a
        record-triggered Flow runs after. A rolled-back change is never passed on."""
        self._uncommitted: list[tuple[int, Change]] = []

    # -- users

    def add_user(self, username: str, *, first_name: str, last_name: str, password: str, security_token: str,
                 permission_set: str | None = None) -> SimUser:
        """Create a user record (visible through SOQL on User) and its login."""
        if permission_set is not None and permission_set not in self.schema.permission_sets:
            raise ValueError(f"no permission set {permission_set!r} in the metadata")
        user = SimUser(self.new_id("User"), username, first_name, last_name, username, password, security_token,
                       permission_set)
        stamp = self._stamp(None)
        record = self._blank(self.schema.objects["User"])
        record.update(Id=user.id, Username=username, FirstName=first_name, LastName=last_name, Name=user.name,
                      Email=username, IsActive=True, Alias=(first_name[:1] + last_name)[:8].lower(),
                      CreatedDate=stamp, LastModifiedDate=stamp, SystemModstamp=stamp, IsDeleted=False)
        record["CreatedById"] = record["LastModifiedById"] = user.id
        self._records[user.id] = record
        self._by_object["User"].append(user.id)
        self._reindex(None, record)
        self.users[username] = user
        if permission_set is not None:
            self.assign_permission_set(user, permission_set)
        return user

    def access(self, user: SimUser) -> Access:
        if user.permission_set:
            return Access(self.schema, self.schema.permission_sets.get(user.permission_set))
        return Access(self.schema, MINIMUM_ACCESS if user.restricted else None)

    def _system_record(self, object_name: str, **values: Any) -> str:
        """A setup record (permission sets and their assignments), stamped and visible to SOQL at once."""
        obj = self.schema.objects[object_name]
        record = self._blank(obj)
        stamp = self._stamp(None)
        record_id = self.new_id(object_name)
        record.update(Id=record_id, IsDeleted=False, CreatedDate=stamp, LastModifiedDate=stamp, SystemModstamp=stamp,
                      **values)
        self._records[record_id] = record
        self._by_object[object_name].append(record_id)
        return record_id

    def _permission_set_id(self, name: str) -> str:
        found = next((r["Id"] for r in self.rows("PermissionSet", include_deleted=False) if r["Name"] == name), None)
        if found is not None:
            return found
        label = self.schema.permission_sets[name].label
        return self._system_record("PermissionSet", Name=name, Label=label, IsOwnedByProfile=False)

    def assign_permission_set(self, user: SimUser, name: str | None) -> None:
        """Give `user` the metadata's permission set `name`, or take it away (None): the assignment record that
        SOQL on PermissionSetAssignment shows and the access that follows from it change together. A user who
        loses the set keeps the integration profile's minimum access, not an admin's."""
        if name is not None and name not in self.schema.permission_sets:
            raise ValueError(f"no permission set {name!r} in the metadata")
        for record in list(self.rows("PermissionSetAssignment", include_deleted=False)):
            if record["AssigneeId"] == user.id:
                self._records.pop(record["Id"], None)
                self._by_object["PermissionSetAssignment"].remove(record["Id"])
        if name is None:
            user.permission_set, user.restricted = None, True
            return
        user.permission_set = name
        self._system_record("PermissionSetAssignment", AssigneeId=user.id, PermissionSetId=self._permission_set_id(name),
                            CreatedById=user.id, LastModifiedById=user.id)

    # -- ids and time

    def new_id(self, object_name: str) -> str:
        return make_id(self.schema.objects[object_name].key_prefix, next(self._counter))

    def _stamp(self, previous: dt.datetime | None) -> dt.datetime:
        """Now, to the millisecond; strictly after `previous` so every write moves a record's stamp."""
        now = self.clock().astimezone(dt.timezone.utc)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if previous is not None and now <= previous:
            now = previous + dt.timedelta(milliseconds=1)
        return now

    # -- reading (the RecordSource of the SOQL evaluator)

    def rows(self, object_name: str, *, include_deleted: bool) -> Iterator[Record]:
        for record_id in self._by_object.get(object_name, []):
            record = self._records[record_id]
            if include_deleted or not record["IsDeleted"]:
                yield record

    def get(self, record_id: str) -> Record | None:
        record = self._records.get(record_id)
        return None if record is None or record["IsDeleted"] else record

    def find(self, record_id: str) -> Record | None:
        """A record by Id including deleted ones (for ENTITY_IS_DELETED)."""
        return self._records.get(record_id)

    def object_of(self, record_id: str) -> ObjectDef | None:
        return self.schema.by_prefix.get(record_id[:3])

    def count(self, object_name: str) -> int:
        return sum(1 for _ in self.rows(object_name, include_deleted=False))

    # -- late commits and locks

    def commit_due(self) -> None:
        """Make visible every pending write whose commit time has come (called before each request)."""
        now = self.clock()
        for record_id, pending in list(self._pending.items()):
            if pending.commit_at <= now:
                del self._pending[record_id]
                self._store(pending.record)

    def pending_count(self) -> int:
        return len(self._pending)

    # -- transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Journal every change so `rollback()` can undo them; nested use joins the outer transaction."""
        if self._journal is not None:
            yield
            return
        self._journal = []
        try:
            yield
        finally:
            self._journal = None
            changes, self._uncommitted = [change for _, change in self._uncommitted], []
            self._committed(changes)

    def savepoint(self) -> int:
        """A mark in the current transaction's journal to roll back to."""
        return len(self._journal) if self._journal is not None else 0

    def rollback(self, savepoint: int = 0) -> None:
        """Undo the current transaction's changes made after `savepoint` (all-or-none requests)."""
        if self._journal is None:
            return
        self._uncommitted = [(mark, change) for mark, change in self._uncommitted if mark < savepoint]
        while len(self._journal) > savepoint:
            record_id, previous, was_pending = self._journal.pop()
            if was_pending:
                self._pending.pop(record_id, None)
            elif previous is None:
                record = self._records.pop(record_id)
                self._by_object[record[TYPE_KEY]].remove(record_id)
                self._reindex(record, None)
            else:
                self._reindex(self._records[record_id], previous)
                self._records[record_id] = previous

    def _store(self, record: Record) -> None:
        record_id = record["Id"]
        previous = self._records.get(record_id)
        change: Change = (dict(previous) if previous is not None else None, record)
        if self._journal is not None:
            self._uncommitted.append((len(self._journal), change))
            self._journal.append((record_id, change[0], False))
        if previous is None:
            self._by_object[record[TYPE_KEY]].append(record_id)
        self._reindex(previous, record)
        self._records[record_id] = record
        if self._journal is None:
            self._committed([change])

    def _committed(self, changes: list[Change]) -> None:
        if changes:
            for listener in self.commit_listeners:
                listener(changes)

    def _reindex(self, old: Record | None, new: Record | None) -> None:
        """Move a record's unique and external id keys in `_keys` from its `old` values to its `new` ones."""
        record = new if new is not None else old
        assert record is not None
        for definition in self._key_fields.get(record[TYPE_KEY], ()):
            before = None if old is None else old.get(definition.name)
            after = None if new is None else new.get(definition.name)
            if old is not None and new is not None and before == after:
                continue
            index = self._keys.setdefault((record[TYPE_KEY], definition.name), {})
            if before is not None:
                key = _unique_key(definition, before)
                holders = index.get(key, {})
                holders.pop(record["Id"], None)
                if not holders:
                    index.pop(key, None)
            if after is not None:
                index.setdefault(_unique_key(definition, after), {})[record["Id"]] = None

    def _holding(self, obj: ObjectDef, definition: FieldDef, value: Any) -> list[Record]:
        """The visible or pending records of `obj` whose `definition` field has `value` (as unique keys compare)."""
        key = _unique_key(definition, value)
        pending = {rid: p.record for rid, p in self._pending.items() if p.record[TYPE_KEY] == obj.name}
        if any(d.name == definition.name for d in self._key_fields.get(obj.name, ())):
            stored = (self._records[rid] for rid in self._keys.get((obj.name, definition.name), {}).get(key, {}))
            found = [r for r in stored if r["Id"] not in pending and not r["IsDeleted"]]
            return found + [r for r in pending.values() if not r["IsDeleted"] and r.get(definition.name) is not None
                            and _unique_key(definition, r[definition.name]) == key]
        return [r for r in self._visible_or_pending(obj)
                if r.get(definition.name) is not None and _unique_key(definition, r[definition.name]) == key]

    # -- parsing a request body (request-level errors)

    def parse_fields(self, obj: ObjectDef, raw: Mapping[str, Any], access: Access) -> dict[str, Any]:
        """JSON field values → stored values; unknown fields and ill-typed JSON fail the whole request."""
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name == "attributes":
                continue
            definition = obj.field(name)
            if definition is None or not access.can_read(obj, definition):
                raise RequestError(400, "INVALID_FIELD",
                                   f"No such column '{name}' on sobject of type {obj.name}", [name])
            try:
                values[definition.name] = parse_input(definition, value)
            except ValueParseError as exc:
                raise RequestError(400, "JSON_PARSER_ERROR", str(exc), [definition.name]) from None
        return values

    # -- DML

    def insert(self, obj: ObjectDef, values: Mapping[str, Any], user: SimUser) -> str:
        """Create one record; returns its Id. Raises RecordError."""
        access = self.access(user)
        if not access.object(obj).create:
            raise RecordError("INSUFFICIENT_ACCESS_OR_READONLY", f"insufficient access rights on {obj.name}")
        if "Id" in values:
            raise RecordError("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"])
        self._check_writable(obj, values, access, insert=True)
        record = self._blank(obj)
        for definition in obj.fields.values():
            if definition.defaulted_on_create and definition.default is not None:
                record[definition.name] = definition.default
        record.update(self._checked(obj, values))
        if "OwnerId" in obj.fields and record.get("OwnerId") is None:
            record["OwnerId"] = user.id
        self._require(obj, record)
        record_id = self.new_id(obj.name)
        record["Id"] = record_id
        self._check_unique(obj, record, values)
        self._take_lock(record_id)
        stamp = self._stamp(None)
        record.update(CreatedDate=stamp, CreatedById=user.id, IsDeleted=False)
        self._finish(obj, record, values, user, stamp)
        return record_id

    def update(self, obj: ObjectDef, record_id: str, values: Mapping[str, Any], user: SimUser) -> None:
        """Update one record (even with no change: the stamps still move). Raises RecordError."""
        access = self.access(user)
        current = self._existing(obj, record_id)
        if not access.object(obj).edit:
            raise RecordError("INSUFFICIENT_ACCESS_OR_READONLY", f"insufficient access rights on {obj.name}")
        values = {k: v for k, v in values.items() if k != "Id"}
        self._check_writable(obj, values, access, insert=False)
        record = dict(current)
        record.update(self._checked(obj, values))
        self._require(obj, record)
        self._check_unique(obj, record, values)
        self._take_lock(record_id)
        self._finish(obj, record, values, user, self._stamp(current["SystemModstamp"]))

    def upsert(self, obj: ObjectDef, key_field: FieldDef, key: Any, values: Mapping[str, Any],
               user: SimUser) -> tuple[str, bool]:
        """Update the record whose `key_field` equals `key`, or create it; returns (Id, created)."""
        if key_field.name == "Id":
            record_id = normalize_id(key)
            if record_id is None or self.get(record_id) is None:
                raise RecordError("NOT_FOUND", "Provided external ID field does not exist or is not accessible: "
                                  f"{key}", status=404)
            self.update(obj, record_id, values, user)
            return record_id, False
        if key is None or key == "":
            raise RecordError("MISSING_ARGUMENT", f"{key_field.name} not specified", [key_field.name])
        given = values.get(key_field.name)
        if given is not None and _unique_key(key_field, given) != _unique_key(key_field, key):
            raise RecordError("INVALID_FIELD", f"The value of {key_field.name} in the body does not match the "
                                               "external id in the URL", [key_field.name])
        matches = self._holding(obj, key_field, key)
        if len(matches) > 1:
            raise RecordError("MULTIPLE_CHOICES", f"more than one {obj.name} has {key_field.name} = {key}",
                              status=300)
        if matches:
            self.update(obj, matches[0]["Id"], values, user)
            return matches[0]["Id"], False
        return self.insert(obj, {**values, key_field.name: key}, user), True

    def delete(self, obj: ObjectDef, record_id: str, user: SimUser) -> None:
        """Delete a record and, like Salesforce, its cascade-delete children; lookups to it become null."""
        access = self.access(user)
        self._existing(obj, record_id)
        if not access.object(obj).delete or not obj.deletable:
            raise RecordError("INSUFFICIENT_ACCESS_OR_READONLY", f"insufficient access rights on {obj.name}")
        self._take_lock(record_id)
        self._delete_tree(obj, record_id, user)

    def _delete_tree(self, obj: ObjectDef, record_id: str, user: SimUser) -> None:
        record = dict(self._records[record_id])
        record.update(IsDeleted=True, LastModifiedById=user.id)
        record["LastModifiedDate"] = record["SystemModstamp"] = self._stamp(record["SystemModstamp"])
        self._store(record)
        for other in self.schema.objects.values():
            for definition in other.fields.values():
                if definition.type != FieldType.REFERENCE or obj.name not in definition.reference_to:
                    continue
                if definition.name in ("CreatedById", "LastModifiedById", "OwnerId"):
                    continue
                for child in list(self.rows(other.name, include_deleted=False)):
                    if child.get(definition.name) != record_id:
                        continue
                    if definition.cascade_delete:
                        self._delete_tree(other, child["Id"], user)
                    else:
                        cleared = dict(child)
                        cleared[definition.name] = None
                        cleared["SystemModstamp"] = self._stamp(child["SystemModstamp"])
                        self._store(cleared)

    # -- the steps of a write

    def _existing(self, obj: ObjectDef, record_id: str) -> Record:
        record = self._records.get(record_id)
        if record is None or record[TYPE_KEY] != obj.name:
            raise RecordError("NOT_FOUND", "The requested resource does not exist", status=404)
        if record["IsDeleted"]:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", status=404)
        return record

    def _blank(self, obj: ObjectDef) -> Record:
        record: Record = {name: None for name in obj.fields}
        record[TYPE_KEY] = obj.name
        return record

    def _check_writable(self, obj: ObjectDef, values: Mapping[str, Any], access: Access, *, insert: bool) -> None:
        refused = [name for name in values
                   if not (obj.fields[name].createable if insert else obj.fields[name].updateable)
                   or not access.can_edit(obj, obj.fields[name])]
        if refused:
            raise RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to {'create' if insert else 'update'} fields: {', '.join(refused)}. Please check the "
                "security settings of this field and verify that it is read/write for your profile or "
                "permission set.", refused)

    def _checked(self, obj: ObjectDef, values: Mapping[str, Any]) -> dict[str, Any]:
        checked: dict[str, Any] = {}
        for name, value in values.items():
            definition = obj.fields[name]
            try:
                value = check_value(definition, value)
            except FieldValueError as exc:
                raise RecordError(exc.code, exc.message, [exc.field_name]) from None
            if definition.type == FieldType.REFERENCE and value is not None:
                value = self._check_reference(definition, value)
            checked[name] = value
        return checked

    def _check_reference(self, definition: FieldDef, value: Any) -> str:
        record_id = normalize_id(value)
        if record_id is None:
            raise RecordError("MALFORMED_ID", f"{definition.label}: id value of incorrect type: {value}",
                              [definition.name])
        target = self.object_of(record_id)
        if target is None or target.name not in definition.reference_to:
            raise RecordError("FIELD_INTEGRITY_EXCEPTION", f"{definition.label}: id value of incorrect type: {value}",
                              [definition.name])
        found = self._records.get(record_id)
        if found is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}",
                              [definition.name])
        if found["IsDeleted"]:
            raise RecordError("ENTITY_IS_DELETED", f"entity is deleted: {value}", [definition.name])
        return record_id

    def _require(self, obj: ObjectDef, record: Record) -> None:
        missing = [d.name for d in obj.fields.values() if d.required and record.get(d.name) in (None, "")]
        if missing:
            raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                              missing)

    def _visible_or_pending(self, obj: ObjectDef) -> Iterable[Record]:
        pending = {rid: p.record for rid, p in self._pending.items() if p.record[TYPE_KEY] == obj.name}
        for record in self.rows(obj.name, include_deleted=False):
            if record["Id"] not in pending:
                yield record
        yield from (r for r in pending.values() if not r["IsDeleted"])

    def _check_unique(self, obj: ObjectDef, record: Record, values: Mapping[str, Any]) -> None:
        for name in values:
            definition = obj.fields[name]
            value = record.get(name)
            if not definition.unique or value in (None, ""):
                continue
            for other in self._holding(obj, definition, value):
                if other["Id"] != record["Id"]:
                    raise RecordError("DUPLICATE_VALUE", f"duplicate value found: {name} duplicates value on record "
                                                         f"with id: {other['Id']}", [name])

    def _take_lock(self, record_id: str) -> None:
        if record_id in self._pending or self.lock_faults > 0:
            if record_id not in self._pending:
                self.lock_faults -= 1
            raise RecordError("UNABLE_TO_LOCK_ROW",
                              f"unable to obtain exclusive access to this record or 1 records: {record_id}")

    def _finish(self, obj: ObjectDef, record: Record, values: Mapping[str, Any], user: SimUser,
                stamp: dt.datetime) -> None:
        """Derive the computed fields, set the server's stamps, then store (now or as a late commit)."""
        self._derive(obj, record, values)
        record.update(LastModifiedDate=stamp, LastModifiedById=user.id, SystemModstamp=stamp)
        if self.late_commits:
            delay = self.late_commits.pop(0)
            self._pending[record["Id"]] = _Pending(self.clock() + dt.timedelta(seconds=delay), record)
            if self._journal is not None:
                self._journal.append((record["Id"], None, True))
            return
        self._store(record)

    def _derive(self, obj: ObjectDef, record: Record, values: Mapping[str, Any]) -> None:
        if obj.name == "Opportunity" and "StageName" in values and record.get("StageName") in self.schema.stages:
            stage = self.schema.stages[record["StageName"]]
            record.update(IsClosed=stage.closed, IsWon=stage.won)
            if "Probability" not in values:
                record["Probability"] = float(stage.probability)
            if "ForecastCategoryName" not in values:
                record["ForecastCategoryName"] = stage.forecast
        if obj.name == "Contact":
            record["Name"] = " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p)
        if obj.name == "OpportunityTeamMember" and record.get("UserId"):
            record["Name"] = self._records[record["UserId"]]["Name"]
        for definition in obj.fields.values():
            if definition.formula is not None:
                record[definition.name] = definition.formula.evaluate(record)


def _unique_key(definition: FieldDef, value: Any) -> Any:
    if isinstance(value, str) and not definition.case_sensitive:
        return value.lower()
    return value


__all__ = ["TYPE_KEY", "ApiUsage", "Change", "Org", "Record", "RecordError", "RequestError", "SimUser"]
