"""Mapped fields: one Salesforce field <-> one referral path, with a direction, a policy and a transform.

These are the units of the sync engine's three-way merge: for each field it reads a canonical value from
either side (`pc_value`, `sf_value`), compares them with the stored base, and writes the winner with
`to_sf` / `to_pc`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from shared.mapping.errors import UnmappedValue
from shared.mapping.paths import get_path, set_path
from shared.mapping.stages import Phase, StageTable, Transition
from shared.mapping.transforms import Transform


class Direction(str, Enum):
    """Which way a field's values flow: `direction` for updates, `onCreate` for a new record."""

    TO_SALESFORCE = "to_salesforce"
    TO_PARTNER_CENTER = "to_partner_center"
    BOTH = "both"


class Policy(str, Enum):
    """Who wins when both sides changed a field since the last sync."""

    PARTNER_CENTER = "partner_center"
    SALESFORCE = "salesforce"
    NEWEST = "newest"


class Directed:
    """What a merge field's `direction` means, shared by every kind of merge field."""

    direction: Direction

    @property
    def to_salesforce(self) -> bool:
        return self.direction in (Direction.TO_SALESFORCE, Direction.BOTH)

    @property
    def to_partner_center(self) -> bool:
        return self.direction in (Direction.TO_PARTNER_CENTER, Direction.BOTH)


@dataclass(frozen=True)
class FieldMap(Directed):
    """One mapped field.

    Attributes:
        key: the field's name in the sync base (stable: renaming it resets the base of that field).
        sf_field: the Salesforce field's API name.
        pc_path: the dotted referral path (relative to a list item for contacts and solutions).
        direction: which way updates flow.
        policy: the conflict policy.
        transform: the value conversion.
        on_create: which way the field is copied when one side creates the other's record (None: never).
            The name, for one, is updated only from Salesforce but copied both ways on create.
    """

    key: str
    sf_field: str
    pc_path: str
    direction: Direction
    policy: Policy
    transform: Transform
    on_create: Direction | None = None

    def copied_on_create(self, to_salesforce: bool) -> bool:
        """Whether a create towards Salesforce (or towards Partner Center) copies this field."""
        wanted = Direction.TO_SALESFORCE if to_salesforce else Direction.TO_PARTNER_CENTER
        return self.on_create in (wanted, Direction.BOTH)

    def pc_value(self, referral: Mapping[str, Any]) -> Any:
        """The canonical value of this field in a referral (or list item)."""
        return self.transform.pc_canonical(get_path(referral, self.pc_path))

    def sf_value(self, record: Mapping[str, Any]) -> Any:
        """The canonical value of this field in a Salesforce record."""
        return self.transform.from_sf(record.get(self.sf_field))

    def to_sf(self, value: Any) -> Any:
        """A canonical value as the Salesforce field takes it."""
        return self.transform.to_sf(value)

    def to_pc(self, value: Any) -> Any:
        """A canonical value as the referral takes it."""
        return self.transform.to_pc(value)


@dataclass(frozen=True)
class StageField(Directed):
    """The stage as a merge field: canonical values are phases (`open`, `accepted`, `won`, `lost`).

    Unlike other fields, writing to Partner Center depends on where the referral is, so `to_pc` takes
    the referral's current status and returns the transitions to send (see `StageTable.transition_for`).
    """

    key: str
    sf_field: str
    direction: Direction
    policy: Policy
    stages: StageTable
    pc_path: str = "status"

    def pc_value(self, referral: Mapping[str, Any]) -> str | None:
        phase = self.stages.phase_of_referral(referral.get("status"), referral.get("substatus"))
        return None if phase is None else phase.value

    def sf_value(self, record: Mapping[str, Any]) -> str | None:
        """The stage's phase; None while the opportunity is on hold (the engine skips it then)."""
        phase = self.stages.phase_of_stage(record.get(self.sf_field))
        return None if phase is None else phase.value

    def to_sf(self, value: str | None) -> str | None:
        return None if value is None else self.stages.stage_for_phase(value)

    def to_pc(self, value: str | None, status: str | None, substatus: str | None = None) -> tuple[Transition, ...]:
        """The transitions that bring a referral in `status`/`substatus` to the phase `value`."""
        if value is None:
            return ()
        return self.stages.transition_for(self.stages.stage_for_phase(Phase(value)), status, substatus)


@dataclass(frozen=True)
class SolutionsField(Directed):
    """The opportunity's Microsoft solutions as one merge field: canonical is the sorted list of solution ids.

    Why ids only: Partner Center fills a solution's name and type from its own catalogue, so comparing
    names would see a difference after every write and sync forever. The rows themselves are written with
    `Mapping.solution_rows` (Salesforce) or `to_pc` (Partner Center).

    Attributes:
        relationship: the Opportunity's child relationship (`Microsoft_Solutions__r`): read the opportunity
            with its subquery (`Mapping.opportunity_query` does) so the rows are in the record.
        item: the mapping of one row <-> one `details.requirements.solutions` item.
        id_field: the item's `id` field.
    """

    key: str
    relationship: str
    pc_path: str
    direction: Direction
    policy: Policy
    item: ObjectMapping
    id_field: FieldMap

    @property
    def sf_field(self) -> str:
        return self.relationship

    def rows(self, opportunity: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The solution rows in an opportunity record read with the subquery (Salesforce sends null for none)."""
        if self.relationship not in opportunity:
            raise UnmappedValue(
                f"the opportunity was read without its {self.relationship} subquery, so its solutions are unknown"
            )
        related = opportunity[self.relationship]
        return list(related.get("records", [])) if isinstance(related, Mapping) else []

    def pc_value(self, referral: Mapping[str, Any]) -> list[str]:
        items = get_path(referral, self.pc_path) or []
        return sorted({v for v in (self.id_field.pc_value(item) for item in items) if v})

    def sf_value(self, opportunity: Mapping[str, Any]) -> list[str]:
        return sorted({v for v in (self.id_field.sf_value(row) for row in self.rows(opportunity)) if v})

    def to_pc(self, value: list[str] | None, opportunity: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The referral's solutions list for these ids, with name and type from the opportunity's rows."""
        known = {}
        if opportunity is not None and self.relationship in opportunity:
            known = {self.id_field.sf_value(row): self.item.item_from(row) for row in self.rows(opportunity)}
        return [known.get(solution_id) or {"id": solution_id} for solution_id in value or []]


@dataclass(frozen=True)
class ObjectMapping:
    """The mapped fields of one Salesforce object.

    Attributes:
        sobject: the object's API name.
        fields: its mapped fields.
        referral_list: for objects that mirror a referral list (contacts, solutions): the list's path;
            field paths are then relative to one item.
    """

    sobject: str
    fields: tuple[FieldMap, ...]
    referral_list: str | None = None

    @property
    def sf_fields(self) -> list[str]:
        """The Salesforce fields to select to read this object's mapped values."""
        return [f.sf_field for f in self.fields]

    def to_salesforce(self, source: Mapping[str, Any], *, create: bool = False) -> dict[str, Any]:
        """Salesforce field values from a referral (or list item).

        Args:
            source: the referral, or one item of `referral_list`.
            create: the fields a create copies, leaving out empty ones (a new record), instead of the
                fields whose updates flow to Salesforce (empty values included: they clear the field).
        """
        values: dict[str, Any] = {}
        for f in self.fields:
            if f.copied_on_create(True) if create else f.to_salesforce:
                value = f.to_sf(f.pc_value(source))
                if value is not None or not create:
                    values[f.sf_field] = value
        return values

    def to_referral(self, record: Mapping[str, Any], *, create: bool = False) -> dict[str, Any]:
        """Referral values (by dotted path) from a Salesforce record; `create` as in `to_salesforce`."""
        values: dict[str, Any] = {}
        for f in self.fields:
            if f.copied_on_create(False) if create else f.to_partner_center:
                value = f.to_pc(f.sf_value(record))
                if value is not None or not create:
                    values[f.pc_path] = value
        return values

    def item_from(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One referral list item (a contact as a team member, a solution) built from a record."""
        item: dict[str, Any] = {}
        for path, value in self.to_referral(record, create=True).items():
            set_path(item, path, value)
        return item


__all__ = ["Direction", "FieldMap", "ObjectMapping", "Policy", "StageField"]
