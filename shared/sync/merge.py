"""The three-way merge, field by field: what each side should receive so both agree again.

Why three-way: comparing the two sides alone cannot tell who changed a field. With the base (what both
sides last agreed on, kept per link), a field changed on one side is copied to the other, a field changed
on both is settled by its conflict policy, and a field changed on neither costs nothing. The merged values
become the new base, so the connector's own writes read back as "no change": no echo, no ping-pong.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol


class FieldRule(Protocol):
    """What the merge needs to know of a mapped field (the mapping engine's field satisfies it)."""

    key: str
    direction: str  # "to_salesforce" | "to_partner_center" | "both"
    policy: str  # "partner_center" | "salesforce" | "newest"


@dataclass(frozen=True)
class FieldConflict:
    """Both sides changed one field differently; `winner` is the side whose value was kept."""

    key: str
    partner_center: Any
    salesforce: Any
    winner: str


@dataclass
class MergeResult:
    """The outcome of one merge.

    Attributes:
        to_salesforce: field key -> value Salesforce must receive.
        to_partner_center: field key -> value Partner Center must receive.
        merged: field key -> the value both sides hold afterwards (the next base).
        conflicts: fields both sides changed differently, and who won.
    """

    to_salesforce: dict[str, Any] = field(default_factory=dict)
    to_partner_center: dict[str, Any] = field(default_factory=dict)
    merged: dict[str, Any] = field(default_factory=dict)
    conflicts: list[FieldConflict] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.to_salesforce or self.to_partner_center)


_MISSING = object()


def _winner(rule: FieldRule, pc_modified: dt.datetime | None, sf_modified: dt.datetime | None) -> str:
    if rule.policy == "salesforce":
        return "salesforce"
    if rule.policy == "newest" and pc_modified and sf_modified and sf_modified > pc_modified:
        return "salesforce"
    return "partner_center"


def merge(
    rules: list[FieldRule],
    base: dict[str, Any] | None,
    partner_center: dict[str, Any],
    salesforce: dict[str, Any],
    *,
    pc_modified: dt.datetime | None = None,
    sf_modified: dt.datetime | None = None,
) -> MergeResult:
    """Merge the canonical values of both sides against the base.

    One-way fields follow their source: the base keeps the source's value, and the other side is written
    only when the source moved, so a seller's own edit of a Partner Center-owned field is not fought over.

    Args:
        rules: the mapped fields.
        base: the last agreed values; None for a pair never synced (every difference is then settled by
            the field's policy, and not reported as a conflict).
        partner_center: field key -> the referral's canonical value.
        salesforce: field key -> the opportunity's canonical value.
        pc_modified: the referral's updatedDateTime (for the `newest` policy).
        sf_modified: the opportunity's LastModifiedDate (for the `newest` policy).

    Returns:
        What each side must receive, the merged values and the conflicts.
    """
    result = MergeResult()
    known = base or {}
    for rule in rules:
        key = rule.key
        pc, sf = partner_center.get(key), salesforce.get(key)
        old = known.get(key, _MISSING)
        pc_changed = old is _MISSING or pc != old
        sf_changed = old is _MISSING or sf != old

        if rule.direction == "to_salesforce":
            result.merged[key] = pc
            if pc_changed and sf != pc:
                result.to_salesforce[key] = pc
            continue
        if rule.direction == "to_partner_center":
            result.merged[key] = sf
            if sf_changed and pc != sf:
                result.to_partner_center[key] = sf
            continue

        if pc == sf:
            value = pc
        elif pc_changed and sf_changed:
            winner = _winner(rule, pc_modified, sf_modified)
            value = pc if winner == "partner_center" else sf
            if base is not None and old is not _MISSING:
                result.conflicts.append(FieldConflict(key, pc, sf, winner))
        else:
            value = pc if pc_changed else sf
        result.merged[key] = value
        if sf != value:
            result.to_salesforce[key] = value
        if pc != value:
            result.to_partner_center[key] = value
    return result


__all__ = ["FieldConflict", "FieldRule", "MergeResult", "merge"]
