"""What one sync of a linked pair must write, decided from data alone.

The engine reads the referral, the opportunity and the stored base, calls `plan_pair`, and applies the
plan. Keeping the decision here, without I/O, is what lets the merge rules be tested exhaustively.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping as MappingABC, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.mapping import Mapping
from shared.mapping.stages import Phase, phases_on_the_way
from shared.sync.audit import add_line
from shared.sync.merge import FieldConflict, merge

SYNCED = "Synced"
ERROR = "Error"


@dataclass
class PairPlan:
    """The writes of one sync.

    Attributes:
        patches: referral JSON Patch documents, in order.
        sf_update: Opportunity field -> value (Audit and sync status included); empty: no write.
        solutions_create / solutions_delete: solutions rows to add and row Ids to remove.
        merged: the next base.
        changes: field key -> [before, after, side that received it], for the sync log.
        conflicts: fields both sides changed.
        refused: why a Salesforce change was not sent to Partner Center (for a seller), if any.
        on_hold: the opportunity sits in an on-hold stage: nothing was planned.
    """

    patches: list[list[dict[str, Any]]] = field(default_factory=list)
    sf_update: dict[str, Any] = field(default_factory=dict)
    solutions_create: list[dict[str, Any]] = field(default_factory=list)
    solutions_delete: list[str] = field(default_factory=list)
    merged: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, list[Any]] = field(default_factory=dict)
    conflicts: list[FieldConflict] = field(default_factory=list)
    refused: str | None = None
    on_hold: bool = False

    @property
    def writes(self) -> bool:
        return bool(self.patches or self.sf_update or self.solutions_create or self.solutions_delete)


def label(key: str) -> str:
    """A field key in a seller's words: "dealValue" -> "deal value"."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", key).lower()


def _describe_changes(changes: dict[str, list[Any]], side: str) -> str:
    return ", ".join(label(key) for key, (_, _, to) in changes.items() if to == side)


def audit_message(plan: PairPlan) -> tuple[str, bool] | None:
    """The Audit line for a plan in a seller's words, and whether it is good news; None when silent."""
    if plan.refused:
        return f"Not sent to Partner Center: {plan.refused}", False
    parts = []
    to_pc = _describe_changes(plan.changes, "partner_center")
    to_sf = _describe_changes(plan.changes, "salesforce")
    if to_pc:
        parts.append(f"sent to Partner Center: {to_pc}")
    if to_sf:
        parts.append(f"updated from Partner Center: {to_sf}")
    if plan.conflicts:
        parts.append("both sides changed " + ", ".join(
            f"{label(c.key)} (kept {c.winner.replace('_', ' ').title()}'s)" for c in plan.conflicts))
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:], True


def effective_base(base: dict[str, Any] | None, pending: MappingABC[str, MappingABC[str, Any]],
                   pc_values: MappingABC[str, Any], sf_values: MappingABC[str, Any], *,
                   stage_key: str | None = None) -> dict[str, Any] | None:
    """The base, with the announced writes of a sync that died midway counted in where they landed.

    Why: a sync writes Partner Center, then Salesforce, then its base. Dying in between left the old base, and
    the connector's own landed write then read as the other side's edit, to be settled against the seller's
    next move by policy. A write found on its side with exactly the announced value did land: it is base.
    So does a step of an announced stage move found in Partner Center (`phases_on_the_way`): won on a new
    referral is an accept, then a win, and between the two PATCHes (or when the win failed) the referral is
    on "accepted". That step is the writer's, not Microsoft's edit; as base, it leaves the win still to send.

    Args:
        stage_key: the stage's field key; None: no field moves in steps.
    """
    if not any(pending.values()):
        return base
    effective = dict(base or {})
    for side, values in (("partner_center", pc_values), ("salesforce", sf_values)):
        for key, value in (pending.get(side) or {}).items():
            found = values.get(key)
            if found == value or (side == "partner_center" and key == stage_key
                                  and found in phases_on_the_way((base or {}).get(key), value)):
                effective[key] = found
    return effective


def pending_writes(plan: PairPlan) -> dict[str, dict[str, Any]]:
    """The writes a plan makes, by side, as announced in the state before they are made."""
    pending: dict[str, dict[str, Any]] = {}
    for key, (_, value, side) in plan.changes.items():
        pending.setdefault(side, {})[key] = value
    return pending


def landed_changes(plan: PairPlan, pc_values: MappingABC[str, Any]) -> dict[str, list[Any]]:
    """The plan's Partner Center changes as far as they landed, each with the value Partner Center now holds.

    Why: a stage move can take two PATCHes (accept, then win); when the second meets a 412, Partner Center
    holds the first one's step ("accepted", not "won") and the fields that rode with it. The sync that sent
    them reports those values, and only those.

    Args:
        plan: the plan whose patches were being sent.
        pc_values: the referral's canonical values as the last PATCH that succeeded returned it.
    """
    return {key: [before, pc_values.get(key), side] for key, (before, _, side) in plan.changes.items()
            if side == "partner_center" and pc_values.get(key) != before}


def plan_pair(mapping: Mapping, base: dict[str, Any] | None, referral: MappingABC[str, Any],
              opportunity: MappingABC[str, Any], *, now: dt.datetime, headline: str | None = None,
              pending: MappingABC[str, MappingABC[str, Any]] | None = None) -> PairPlan:
    """Merge a linked referral and opportunity against the base and plan the writes.

    A change Partner Center cannot take (a closed referral, a stage move its state machine forbids) is not
    sent; Salesforce is put back to Partner Center's value for it and the Audit says why, so the pair
    agrees again instead of retrying a request that must fail.

    Args:
        mapping: the loaded mapping.
        base: the stored base (None: first sync of this pair).
        referral: the referral as Partner Center returned it (API JSON).
        opportunity: the opportunity as read with `mapping.opportunity_query`.
        now: for the Audit time stamp.
        headline: what happened before this merge (e.g. "Shared with Partner Center"), leading the Audit line.
        pending: the writes an earlier sync announced and may have died making (`effective_base`).
    """
    plan = PairPlan()
    if mapping.is_on_hold(opportunity.get(mapping.stage.sf_field)):
        plan.on_hold = True
        plan.merged = dict(base or {})
        return plan
    pc_values = mapping.pc_values(referral)
    sf_values = stage_as_partner_center_reads_it(mapping, referral, pc_values, mapping.sf_values(opportunity))
    base = effective_base(base, pending or {}, pc_values, sf_values, stage_key=mapping.stage.key)
    result = merge(list(mapping.fields), base, pc_values, sf_values,
                   pc_modified=_parse_time(referral.get("updatedDateTime")),
                   sf_modified=_parse_time(opportunity.get("LastModifiedDate")))
    merged = dict(result.merged)
    to_pc, to_sf = set(result.to_partner_center), set(result.to_salesforce)
    _keep_required(mapping, merged, to_pc, to_sf, sf_values, pc_values, give_back=referral.get("status") != "Closed")
    update = mapping.pc_update(referral, _in_order(mapping, to_pc, merged), opportunity=opportunity)
    if update.refused:
        # A closed referral takes nothing; an open one refuses only the stage move.
        refused_keys = set(to_pc) if referral.get("status") == "Closed" else to_pc & {mapping.stage.key}
        for key in refused_keys:
            merged[key] = pc_values[key]  # put Salesforce back where Partner Center is
            if sf_values.get(key) != merged[key]:
                to_sf.add(key)
        to_pc -= refused_keys
        _keep_required(mapping, merged, to_pc, to_sf, sf_values, pc_values, give_back=False)
        plan.refused = update.refused
        update = mapping.pc_update(referral, _in_order(mapping, to_pc, merged), opportunity=opportunity)
    plan.patches, plan.merged, plan.conflicts = update.patches, merged, result.conflicts
    plan.sf_update = mapping.sf_changes(opportunity, _in_order(mapping, to_sf, merged), referral=referral)
    if mapping.solutions.key in to_sf:
        plan.solutions_create, plan.solutions_delete = mapping.solution_changes(referral, opportunity)
    for key in sorted(to_pc):
        plan.changes[key] = [pc_values.get(key), merged[key], "partner_center"]
    for key in sorted(to_sf):
        plan.changes[key] = [sf_values.get(key), merged[key], "salesforce"]

    own = mapping.own_fields
    status = ERROR if plan.refused else SYNCED
    if own.sync_status and opportunity.get(own.sync_status) != status:
        plan.sf_update[own.sync_status] = status
    message = audit_message(plan)
    if headline:
        message = (f"{headline}; {message[0][0].lower()}{message[0][1:]}", message[1]) if message else (headline, True)
    if message is not None:
        text = add_line(opportunity.get(own.audit), message[0], ok=message[1], now=now)
        if text is not None:
            plan.sf_update[own.audit] = text
    return plan


def stage_as_partner_center_reads_it(mapping: Mapping, referral: MappingABC[str, Any], pc_values: dict[str, Any],
                                     sf_values: dict[str, Any]) -> dict[str, Any]:
    """The opportunity's values, with a not-yet-accepted stage read as accepted on the partner's own
    accepted referral.

    Why: Partner Center may return a referral created from Salesforce already Active/Accepted (the
    reference's create example does). An outgoing referral is the partner's own: "accepted" there does not
    mean the seller moved the deal on, and an open stage asks nothing of it. Read literally, the merge would
    either move the seller's "Prospecting" to "Qualification" or try to undo the acceptance and raise a
    false alarm. Stage moves to won or lost still go to Partner Center as usual.
    """
    key = mapping.stage.key
    if (referral.get("direction") == "Outgoing" and pc_values.get(key) == Phase.ACCEPTED.value
            and sf_values.get(key) == Phase.OPEN.value):
        return {**sf_values, key: pc_values[key]}
    return sf_values


def _keep_required(mapping: Mapping, merged: dict[str, Any], to_pc: set[str], to_sf: set[str],
                   sf_values: dict[str, Any], pc_values: dict[str, Any], *, give_back: bool) -> None:
    """Salesforce cannot hold "no value" in a required field (CloseDate): writing None there fails the whole
    update, on every sync. Keep Salesforce's value and, unless Partner Center takes nothing now (a closed
    referral: then the pair keeps differing in that field only, and a later sync finds nothing to do),
    give it back to Partner Center so the pair agrees."""
    for key in [k for k in to_sf if merged[k] is None and mapping.required_in_salesforce(k)]:
        merged[key] = sf_values.get(key)
        to_sf.discard(key)
        if give_back and pc_values.get(key) != merged[key] and mapping.field(key).to_partner_center:
            to_pc.add(key)


def _in_order(mapping: Mapping, keys: set[str], values: dict[str, Any]) -> dict[str, Any]:
    """`values` of `keys` in the mapping's field order. Why not the set's order: it changes with each
    process's hash seed, and the refusal text built from it goes into the Audit field; two instances
    writing it in different orders each take the other's line for news, and wake the poll forever."""
    return {f.key: values[f.key] for f in mapping.fields if f.key in keys}


def creation_note(referral: MappingABC[str, Any], candidates: Sequence[MappingABC[str, Any]]) -> str:
    """The Audit line of an opportunity made from a referral: what a seller should know first."""
    notes = []
    if candidates:
        names = "; ".join(f"{c['Name']} ({c['Id']})" for c in candidates)
        notes.append(f"Several accounts match the customer, none was chosen: {names}. Set the account by hand.")
    invite = (referral.get("inviteContext") or {}).get("notes")
    if invite:
        notes.append(f"Microsoft's invitation: {invite}")
    return "Created from Partner Center referral" + ("." + " " + " ".join(notes) if notes else "")


def opportunity_values(mapping: Mapping, referral: MappingABC[str, Any], *, account_id: str | None,
                       candidates: Sequence[MappingABC[str, Any]], now: dt.datetime) -> dict[str, Any]:
    """A new Opportunity's fields from a referral, for the sync and the backfill alike: the mapped values,
    the chosen account, the Audit line (`creation_note`), the sync status and the Referral Identifier (the
    upsert key)."""
    values = mapping.opportunity_for_create(referral, today=now.date())
    if account_id:
        values["AccountId"] = account_id
    own = mapping.own_fields
    values[own.audit] = add_line(None, creation_note(referral, candidates), ok=not candidates, now=now)
    if own.sync_status:
        values[own.sync_status] = SYNCED
    values[own.referral_id] = referral["id"]
    return values


def _parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value
    text = str(value).replace("Z", "+00:00")
    if text.endswith("+0000"):
        text = text[:-5] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


__all__ = ["ERROR", "SYNCED", "PairPlan", "audit_message", "creation_note", "effective_base", "landed_changes",
           "opportunity_values", "pending_writes", "plan_pair"]
