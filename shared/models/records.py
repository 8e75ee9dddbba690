"""The connector's own records, as kept in Table Storage.

Each record carries the `etag` it was read with: writing it back sends that ETag as If-Match, so two
function instances that race on one record cannot silently overwrite each other (see shared/store).
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Record(BaseModel):
    """Base of the stored records: `etag` is the store's, never part of the data."""

    model_config = ConfigDict(extra="ignore")

    etag: str | None = Field(default=None, exclude=True)


class Link(Record):
    """A referral and the opportunity it is synced with; stored as two rows, one per direction."""

    referral_id: str
    opportunity_id: str
    engagement_id: str | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)


class SyncState(Record):
    """Per link, what both sides last agreed on: the base of the three-way merge.

    `base` maps each mapped field key to its canonical value. After every successful sync it becomes the
    merged values, so the connector's own writes read back as "no change" (the echo and loop guard).
    """

    referral_id: str
    opportunity_id: str
    base: dict[str, Any] = Field(default_factory=dict)
    referral_etag: str | None = None
    referral_updated: str | None = None
    opportunity_modstamp: str | None = None
    synced_at: dt.datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    pending: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Writes a sync announced before making them: side ("partner_center" / "salesforce") -> key -> value.
    Empty once the sync saved its base; a sync that died midway leaves them, and the next one counts each
    write that landed as part of the base (see shared/sync/plan.py `effective_base`)."""


class Cursor(Record):
    """A poll watermark, e.g. the Salesforce (SystemModstamp, Id) position or the reconcile time."""

    name: str
    value: dict[str, Any] = Field(default_factory=dict)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class IntentStatus(str, Enum):
    PENDING = "pending"
    CREATED = "created"


class CreateIntent(Record):
    """Written before a referral POST, so a crash between POST and link can be resolved without a duplicate."""

    opportunity_id: str
    attempted_at: dt.datetime = Field(default_factory=utcnow)
    status: IntentStatus = IntentStatus.PENDING
    referral_id: str | None = None


class CreateClaim(Record):
    """Held while a referral's opportunity is being created, so two runs for one referral (a duplicated
    webhook, the reconcile) never both create the account, contacts and roles: the second waits and retries."""

    referral_id: str
    claimed_at: dt.datetime = Field(default_factory=utcnow)


class SyncOutcome(str, Enum):
    CREATED = "created"
    UPDATED = "updated"
    NO_CHANGE = "no_change"
    CONFLICT = "conflict"
    SKIPPED = "skipped"
    FAILED = "failed"


class SyncLogEntry(Record):
    """One line of the sync log: what moved where, which fields, how long it took, and why if it failed."""

    at: dt.datetime = Field(default_factory=utcnow)
    direction: str
    outcome: SyncOutcome
    referral_id: str | None = None
    opportunity_id: str | None = None
    changes: dict[str, Any] = Field(default_factory=dict)
    message: str = ""
    duration_ms: float | None = None
    request_ids: list[str] = Field(default_factory=list)


class DeadLetter(Record):
    """Work that kept failing: kept with its reason until a person replays or discards it."""

    kind: str
    key: str
    reason: str
    payload: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    first_failed_at: dt.datetime = Field(default_factory=utcnow)
    last_failed_at: dt.datetime = Field(default_factory=utcnow)


class StatusDoc(Record):
    """A named document of health facts for the status page: token health, API budget, last poll."""

    name: str
    data: dict[str, Any] = Field(default_factory=dict)
    updated_at: dt.datetime = Field(default_factory=utcnow)


__all__ = [
    "CreateClaim",
    "CreateIntent",
    "Cursor",
    "DeadLetter",
    "IntentStatus",
    "Link",
    "Record",
    "StatusDoc",
    "SyncLogEntry",
    "SyncOutcome",
    "SyncState",
    "utcnow",
]
