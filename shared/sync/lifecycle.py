"""The referral's life cycle: which status moves a seller's stage change may ask Partner Center for.

Partner Center refuses anything outside its state machine with 400, so the connector checks first and
explains in the Audit instead of sending a request that must fail. Two seller habits are translated rather
than refused, as Microsoft's connector does: closing an unaccepted referral as lost declines it, and
winning an unaccepted one accepts it first.
"""

from __future__ import annotations

from dataclasses import dataclass

Status = tuple[str, str]
"""(status, substatus), e.g. ("Active", "Accepted")."""

# From the handbook: from-status -> {to-status: substatuses allowed on arrival}.
ALLOWED: dict[str, dict[str, frozenset[str]]] = {
    "New": {
        "New": frozenset({"Pending", "Received"}),
        "Active": frozenset({"Accepted"}),
        "Closed": frozenset({"Declined", "Expired"}),
    },
    "Active": {"Active": frozenset({"Accepted"}), "Closed": frozenset({"Won", "Lost"})},
    "Closed": {},
}
NEEDS_REASON = frozenset({"Declined", "Lost"})
ACCEPTED: Status = ("Active", "Accepted")


@dataclass(frozen=True)
class Refused:
    """The move cannot be made; `reason` is written for a seller."""

    reason: str


def is_allowed(current: Status, target: Status) -> bool:
    return target[1] in ALLOWED.get(current[0], {}).get(target[0], frozenset())


def plan_transition(current: Status, target: Status) -> list[Status] | Refused:
    """The status updates that take a referral from `current` to `target`, in order.

    Returns:
        An empty list when there is nothing to do, one or two steps, or `Refused` with the reason.
    """
    if current == target or (current[0] == target[0] == "New"):
        return []  # Pending and Received are Partner Center's to set, not a seller's
    if current[0] == "Closed":
        return Refused(f"the referral is already closed ({current[1]}) in Partner Center; it cannot change any more")
    if current[0] == "New" and target == ("Closed", "Lost"):
        return [("Closed", "Declined")]
    if current[0] == "New" and target == ("Closed", "Won"):
        return [ACCEPTED, target]
    if current[0] == "Active" and target[0] == "New":
        return Refused("an accepted referral cannot go back to not accepted in Partner Center")
    if target == ("Closed", "Expired"):
        return Refused("only Partner Center expires a referral")
    if is_allowed(current, target):
        return [target]
    return Refused(f"Partner Center does not allow {current[0]}/{current[1]} -> {target[0]}/{target[1]}")


__all__ = ["ACCEPTED", "ALLOWED", "NEEDS_REASON", "Refused", "Status", "is_allowed", "plan_transition"]
