"""What Salesforce writes answer, per record and per composite subrequest, and how to ask for the latter.

Why per record: Collections with `allOrNone: false` succeed or fail record by record, so one bad
opportunity in a batch of 200 must not hide the other 199 outcomes, nor fail them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ConnectorError
from shared.salesforce.errors import HALTED, LOCK_ERROR, error_for


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RecordError(_Model):
    status_code: str = Field(default="UNKNOWN", alias="statusCode")
    message: str = ""
    fields: list[str] = Field(default_factory=list)


class RecordResult(_Model):
    """The outcome for one record of a Collections call, in the order the records were given.

    Attributes:
        id: the record's Id (None when a create failed).
        success: whether this record was written.
        created: for upserts, whether it was new.
        errors: Salesforce's reasons when it was not.
        skipped: an update with nothing to change, not sent at all.
    """

    id: str | None = None
    success: bool = False
    created: bool | None = None
    errors: list[RecordError] = Field(default_factory=list)
    skipped: bool = False

    @property
    def locked(self) -> bool:
        return not self.success and any(e.status_code == LOCK_ERROR for e in self.errors)

    def error(self, what: str) -> ConnectorError | None:
        """The connector error for a failed record (None when it succeeded), e.g. to raise or log."""
        if self.success:
            return None
        return error_for(400, [e.model_dump(by_alias=True) for e in self.errors], what=what)


class SubRequest(_Model):
    """One composite subrequest. `path` is relative to the versioned REST base (`sobjects/Contact`).

    Later subrequests may refer to earlier results as `@{referenceId.id}`, in `path` or `body`; the client
    keeps that working when a long list is split into several composite calls.
    """

    method: str
    path: str
    reference_id: str
    body: dict[str, Any] | None = None

    @classmethod
    def create(cls, sobject: str, fields: Mapping[str, Any], *, ref: str) -> SubRequest:
        return cls(method="POST", path=f"sobjects/{sobject}", reference_id=ref, body=dict(fields))

    @classmethod
    def update(cls, sobject: str, record_id: str, fields: Mapping[str, Any], *, ref: str) -> SubRequest:
        return cls(method="PATCH", path=f"sobjects/{sobject}/{record_id}", reference_id=ref, body=dict(fields))

    @classmethod
    def upsert(cls, sobject: str, external_id_field: str, value: str, fields: Mapping[str, Any], *,
               ref: str) -> SubRequest:
        return cls(method="PATCH", path=f"sobjects/{sobject}/{external_id_field}/{value}", reference_id=ref,
                   body=dict(fields))

    @classmethod
    def delete(cls, sobject: str, record_id: str, *, ref: str) -> SubRequest:
        return cls(method="DELETE", path=f"sobjects/{sobject}/{record_id}", reference_id=ref)

    @classmethod
    def query(cls, soql: str, *, ref: str) -> SubRequest:
        return cls(method="GET", path=f"query?q={quote(soql)}", reference_id=ref)

    @property
    def heavy(self) -> bool:
        """A query or an sObject Collections request: Salesforce allows at most 5 of them in one composite."""
        return self.path.startswith(("query", "queryAll", "composite/sobjects"))


class SubResponse(_Model):
    """The answer to one subrequest."""

    reference_id: str = Field(alias="referenceId")
    status: int = Field(alias="httpStatusCode")
    body: Any = None

    @property
    def success(self) -> bool:
        return self.status < 300

    @property
    def id(self) -> str | None:
        return self.body.get("id") if isinstance(self.body, dict) else None

    @property
    def error_code(self) -> str | None:
        if self.success:
            return None
        item = self.body[0] if isinstance(self.body, list) and self.body else self.body
        return item.get("errorCode") if isinstance(item, dict) else None

    @property
    def retryable(self) -> bool:
        """Failed on a row lock, or did not run because an earlier (locked) subrequest failed."""
        return self.error_code in (LOCK_ERROR, HALTED)

    def error(self, what: str) -> ConnectorError | None:
        return None if self.success else error_for(self.status, self.body, what=what)


__all__ = ["RecordError", "RecordResult", "SubRequest", "SubResponse"]
