"""The stage table: referral status/substatus <-> Opportunity `StageName`.

Partner Center has seven status/substatus pairs and a strict state machine; an org has its own stages.
The mapping gives each pair a stage (`toSalesforce`) and each stage a *phase* (`toPartnerCenter`): `open`
(not yet accepted), `accepted`, `won` or `lost`. Phases are what the three-way merge compares: moving an
opportunity between two stages of the same phase (Qualification -> Needs Analysis) changes nothing in
Partner Center, and a referral that Microsoft expires (Closed/Expired -> Closed Lost -> `lost`) reads back
from Salesforce as the same phase, so no echo is sent back.

What a phase asks of Partner Center depends on where the referral is: `lost` declines a referral that was
never accepted and loses an accepted one; `won` on a not yet accepted referral accepts it first, as the
state machine allows no shortcut. Stages on hold are not synced at all while an opportunity sits in them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from shared.mapping.errors import IllegalTransition, UnmappedValue


class Phase(str, Enum):
    OPEN = "open"
    ACCEPTED = "accepted"
    WON = "won"
    LOST = "lost"


PAIRS: tuple[tuple[str, str], ...] = (
    ("New", "Pending"),
    ("New", "Received"),
    ("Active", "Accepted"),
    ("Closed", "Won"),
    ("Closed", "Lost"),
    ("Closed", "Declined"),
    ("Closed", "Expired"),
)
"""Every status/substatus pair a referral can be in (handbook: Partner Center's state machine)."""


def pair_key(status: str, substatus: str) -> str:
    return f"{status}/{substatus}"


def phase_of_pair(status: str, substatus: str) -> Phase:
    """The phase a pair belongs to; the stage it maps to must have this phase (checked at load)."""
    if status == "New":
        return Phase.OPEN
    if status == "Active":
        return Phase.ACCEPTED
    return Phase.WON if substatus == "Won" else Phase.LOST


@dataclass(frozen=True)
class Transition:
    """One PATCH of the referral's status.

    Attributes:
        status: the new status.
        substatus: the new substatus.
        needs_reason: Partner Center requires `statusReason` with it (Declined, Lost).
    """

    status: str
    substatus: str
    needs_reason: bool = False


ACCEPT = Transition("Active", "Accepted")
WIN = Transition("Closed", "Won")
LOSE = Transition("Closed", "Lost", needs_reason=True)
DECLINE = Transition("Closed", "Declined", needs_reason=True)

STEPS: Mapping[Phase, Mapping[Phase, tuple[Transition, ...]]] = {
    Phase.OPEN: {Phase.OPEN: (), Phase.ACCEPTED: (ACCEPT,), Phase.WON: (ACCEPT, WIN), Phase.LOST: (DECLINE,)},
    Phase.ACCEPTED: {Phase.ACCEPTED: (), Phase.WON: (WIN,), Phase.LOST: (LOSE,)},
}
"""The PATCHes that move a referral from a phase not yet closed to another, in order: the state machine
allows no shortcut (won on a new referral is accepted first), and nothing leaves a closed phase."""


def phases_on_the_way(start: str | None, end: str) -> tuple[Phase, ...]:
    """The phases a referral passes through between `start` and `end`, neither included, in order.

    Why: a move that takes two PATCHes leaves the referral on the first one's phase until the second lands
    (or when it fails); a sync that knows the move was announced must read that phase as the move's own
    step, not as someone's edit.
    """
    try:
        steps = STEPS[Phase(start)][Phase(end)]
    except (KeyError, ValueError):  # no such move (nothing leaves a closed phase), or not a phase at all
        return ()
    return tuple(phase_of_pair(step.status, step.substatus) for step in steps[:-1])


@dataclass(frozen=True)
class StageTable:
    """The loaded stage table (validated by the loader: every pair has a stage, every stage a phase).

    Attributes:
        to_salesforce: "Status/Substatus" -> stage.
        to_partner_center: stage -> phase.
        on_hold: stages whose opportunities are not synced.
        not_yet_accepted: where incoming referrals land.
        reason_field: the Opportunity field holding the decline/loss reason.
        default_reason: sent when that field is empty (Partner Center requires a reason).
    """

    to_salesforce: Mapping[str, str]
    to_partner_center: Mapping[str, Phase]
    on_hold: frozenset[str]
    not_yet_accepted: str
    reason_field: str | None
    default_reason: str

    def stage_for(self, status: str, substatus: str) -> str:
        """The stage for a referral's status and substatus."""
        stage = self.to_salesforce.get(pair_key(status, substatus))
        if stage is None:
            raise UnmappedValue(f"the referral status {status}/{substatus} has no stage in the mapping")
        return stage

    def is_on_hold(self, stage: str | None) -> bool:
        return stage in self.on_hold

    def phase_of_stage(self, stage: str | None) -> Phase | None:
        """The stage's phase; None for an on-hold or empty stage (nothing to compare while on hold)."""
        if stage is None or stage in self.on_hold:
            return None
        phase = self.to_partner_center.get(stage)
        if phase is None:
            raise UnmappedValue(
                f"the stage {stage!r} is not in the mapping's stage table: add it to stages.toPartnerCenter "
                "(or stages.onHold) in the mapping file"
            )
        return phase

    def phase_of_referral(self, status: str | None, substatus: str | None) -> Phase | None:
        """The phase of a referral, as Salesforce will read it back (the stage's phase, not the pair's)."""
        if not status or not substatus or status == "None":
            return None
        return self.to_partner_center[self.stage_for(status, substatus)]

    def stage_for_phase(self, phase: Phase | str) -> str:
        """A stage of the phase: the one the phase's first pair maps to (open: the not yet accepted stage)."""
        phase = Phase(phase)
        if phase is Phase.OPEN:
            return self.not_yet_accepted
        status, substatus = next(pair for pair in PAIRS if phase_of_pair(*pair) is phase)
        return self.stage_for(status, substatus)

    def transition_for(self, stage: str, status: str | None, substatus: str | None = None) -> tuple[Transition, ...]:
        """The status changes that bring a referral to the phase of `stage`, in order.

        Args:
            stage: the opportunity's StageName.
            status: the referral's current status (None or "None" counts as not yet accepted).
            substatus: its current substatus (only needed for a closed referral).

        Returns:
            The PATCHes to send, in order; empty when the stage asks for nothing (on hold, same phase).

        Raises:
            IllegalTransition: the referral cannot get there (it is closed, or accepted and the stage is open).
            UnmappedValue: the stage is not in the table.
        """
        target = self.phase_of_stage(stage)
        if target is None:
            return ()
        current = status if status not in (None, "None") else "New"
        if current == "New":
            return STEPS[Phase.OPEN][target]
        if current == "Active":
            if target is Phase.OPEN:
                raise IllegalTransition(
                    f"the referral is already accepted in Partner Center; the stage {stage!r} (not yet accepted) "
                    "cannot undo that"
                )
            return STEPS[Phase.ACCEPTED][target]
        if current == "Closed":
            closed_phase = phase_of_pair("Closed", substatus or "")
            if target is closed_phase:
                return ()
            raise IllegalTransition(
                f"the referral is closed in Partner Center ({status}/{substatus}); it cannot change any more, "
                f"so the stage {stage!r} is not sent"
            )
        raise UnmappedValue(f"the referral status {status!r} is not one the connector knows")


__all__ = ["PAIRS", "STEPS", "Phase", "StageTable", "Transition", "pair_key", "phase_of_pair", "phases_on_the_way"]
