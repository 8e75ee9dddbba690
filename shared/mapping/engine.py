"""`Mapping`: a loaded, checked mapping file and the pure functions the sync engine calls.

Everything here is data in, data out: no I/O after load, no clock except where a caller passes `today`.
The sync engine reads both records, asks for canonical values (`pc_values`, `sf_values`), merges them
against its base per field (`fields`: key, direction, policy), and turns the winners back into a
Salesforce update (`sf_changes`) and referral PATCHes (`pc_update`), each containing only what differs.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Mapping as MappingABC, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from shared.errors import InvalidInput
from shared.mapping.errors import IllegalTransition, MappingError, MissingPrerequisites
from shared.mapping.fields import Direction, FieldMap, ObjectMapping, Policy, SolutionsField, StageField
from shared.mapping.loader import read_document, sobjects_of, validate
from shared.mapping.patch import patch_ops
from shared.mapping.paths import get_path, set_path
from shared.mapping.stages import Phase, StageTable, Transition
from shared.mapping.transforms import Context, build
from shared.salesforce.describe import OrgSchema

Describe = Union[OrgSchema, Callable[[Sequence[str]], OrgSchema]]
"""The org's describe, or a function that describes the named objects (called once, at load)."""

MergeField = Union[FieldMap, StageField, SolutionsField]

SYSTEM_FIELDS = ("Id", "Name", "AccountId", "SystemModstamp", "LastModifiedDate", "LastModifiedById")
"""Opportunity fields the sync always reads besides the mapped ones."""


@dataclass(frozen=True)
class OpportunityFields:
    """The connector's own Opportunity fields (names from the mapping, so an org may rename them)."""

    opt_in: str
    referral_id: str
    audit: str
    sync_status: str | None


@dataclass(frozen=True)
class ContactRules:
    role: str | None
    match_by: str


@dataclass(frozen=True)
class SolutionRules:
    parent_field: str
    key_field: str | None


@dataclass(frozen=True)
class ReferralUpdate:
    """What to send to Partner Center for one sync.

    Attributes:
        patches: JSON Patch documents to send in order (empty: nothing to send).
        refused: why a wanted change was not planned, in words for the Audit field (None: all planned).
    """

    patches: list[list[dict[str, Any]]]
    refused: str | None = None


@dataclass(frozen=True)
class RequiredPath:
    path: str
    message: str
    types: tuple[str, ...]


class Mapping:
    """A mapping file, loaded and checked. Build it with `load` (a file) or `from_document` (a dict).

    Attributes:
        source: where it came from (for messages).
        opportunity: the Opportunity's mapped fields.
        account, contacts, solution_rows_mapping: the related objects' mapped fields.
        stages: the stage table.
        stage: the stage as a merge field.
        solutions: the solutions list as a merge field.
        fields: every merge field (opportunity fields, the stage, the solutions), in file order.
        own_fields: the connector's own Opportunity fields (opt-in, referral id, audit, sync status).
        org: the describe the mapping was checked against (None: checked offline).
    """

    def __init__(self, document: MappingABC[str, Any], *, source: str = "<mapping>",
                 describe: OrgSchema | None = None) -> None:
        problems = validate(document, describe)
        if problems:
            raise MappingError(source, problems)
        self.source = source
        self.org = describe
        self.document = copy.deepcopy(dict(document))
        doc = self.document
        tables = doc.get("tables", {})
        aliases = doc.get("countryAliases", {})

        def object_mapping(section: str) -> ObjectMapping:
            spec = doc[section]
            fields = tuple(self._field(spec["sobject"], f, tables, aliases) for f in spec["fields"]
                           if not f.get("ifFieldExists") or describe is None
                           or describe.has_field(spec["sobject"], f["salesforce"]))
            return ObjectMapping(spec["sobject"], fields, spec.get("referralList"))

        self.opportunity = object_mapping("opportunity")
        self.account = object_mapping("account")
        self.contacts = object_mapping("contacts")
        self.solution_rows_mapping = object_mapping("solutions")

        opp = doc["opportunity"]
        self.own_fields = OpportunityFields(opp["optInField"], opp["referralIdField"], opp["auditField"],
                                            opp.get("syncStatusField"))
        contacts = doc["contacts"]
        self.contact_rules = ContactRules(contacts.get("contactRole"), contacts.get("matchBy", "Email"))
        solutions = doc["solutions"]
        self.solution_rules = SolutionRules(solutions["parentField"], solutions.get("keyField"))

        st = doc["stages"]
        self.stages = StageTable(
            to_salesforce=dict(st["toSalesforce"]),
            to_partner_center={stage: Phase(phase) for stage, phase in st["toPartnerCenter"].items()},
            on_hold=frozenset(st.get("onHold", [])),
            not_yet_accepted=st["notYetAccepted"],
            reason_field=st.get("reasonField"),
            default_reason=st.get("defaultReason", "Closed in Salesforce"),
        )
        self.stage = StageField("stage", st["salesforce"], Direction(st.get("direction", "both")),
                                Policy(st.get("policy", "newest")), self.stages)
        id_field = next(f for f in self.solution_rows_mapping.fields if f.pc_path == "id")
        self.solutions = SolutionsField(
            "solutions", solutions["relationship"], solutions["referralList"],
            Direction(solutions.get("direction", "to_partner_center")), Policy(solutions.get("policy", "salesforce")),
            self.solution_rows_mapping, id_field,
        )
        self.fields: tuple[MergeField, ...] = (*self.opportunity.fields, self.stage, self.solutions)

        create = doc["create"]
        pc_create = create.get("partnerCenter", {})
        self.referral_defaults: dict[str, Any] = dict(pc_create.get("defaults", {}))
        self.required = tuple(RequiredPath(r["path"], r["message"], tuple(r.get("types", ())))
                              for r in pc_create.get("required", []))
        sf_create = create.get("salesforce", {})
        self.opportunity_defaults: dict[str, Any] = dict(sf_create.get("defaults", {}))
        self.close_date_in_days: int = sf_create.get("closeDateInDays", 90)

    def _field(self, sobject: str, spec: MappingABC[str, Any], tables: Any, aliases: Any) -> FieldMap:
        length = None
        if self.org is not None:
            described = self.org.field(sobject, spec["salesforce"])
            if described is not None and described.type in ("string", "textarea", "url", "email", "phone"):
                length = described.length or None
        direction = Direction(spec["direction"])
        on_create = spec.get("onCreate", direction.value)
        return FieldMap(
            key=spec["key"], sf_field=spec["salesforce"], pc_path=spec["referral"], direction=direction,
            policy=Policy(spec["policy"]), transform=build(spec, Context(tables, aliases, length)),
            on_create=None if on_create == "none" else Direction(on_create),
        )

    # Loading ---------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str, *, describe: Describe | None = None) -> Mapping:
        """Read and check a mapping file.

        Args:
            path: the JSON file.
            describe: the org's schema, or a function describing the objects the file names; with it,
                unknown Salesforce fields and picklist values are problems too, and `ifFieldExists`
                fields the org lacks (CurrencyIsoCode in a single-currency org) are left out.

        Raises:
            MappingError: with every problem, each at its JSON path.
        """
        path = Path(path)
        document = read_document(path)
        return cls.from_document(document, source=str(path), describe=describe)

    @classmethod
    def from_document(cls, document: MappingABC[str, Any], *, source: str = "<mapping>",
                      describe: Describe | None = None) -> Mapping:
        if callable(describe):
            describe = describe(sobjects_of(document))
        return cls(document, source=source, describe=describe)

    # Lookups ---------------------------------------------------------------------------------------

    def field(self, key: str) -> MergeField:
        """The merge field with this key."""
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(key)

    def required_in_salesforce(self, key: str) -> bool:
        """Whether the org's describe says the field's Opportunity value cannot be empty (CloseDate does):
        writing None there fails the whole update with REQUIRED_FIELD_MISSING."""
        f = self.field(key)
        described = (self.org.field(self.opportunity.sobject, f.sf_field)
                     if self.org is not None and isinstance(f, FieldMap) else None)
        return described is not None and not described.nillable and described.type != "boolean"

    def stage_for(self, status: str, substatus: str) -> str:
        """The stage for a referral status/substatus."""
        return self.stages.stage_for(status, substatus)

    def transition_for(self, stage: str, status: str | None, substatus: str | None = None) -> tuple[Transition, ...]:
        """The status PATCHes that bring a referral in `status`/`substatus` to the phase of `stage`."""
        return self.stages.transition_for(stage, status, substatus)

    def is_on_hold(self, stage: str | None) -> bool:
        """True while the opportunity sits in a stage that is not synced."""
        return self.stages.is_on_hold(stage)

    def status_reason(self, opportunity: MappingABC[str, Any]) -> str:
        """The reason Partner Center requires to decline or lose: the reason field, else the default."""
        reason = opportunity.get(self.stages.reason_field) if self.stages.reason_field else None
        return reason.strip() if isinstance(reason, str) and reason.strip() else self.stages.default_reason

    # Reading ---------------------------------------------------------------------------------------

    def opportunity_query(self, ids: Sequence[str]) -> str:
        """SOQL reading opportunities with every field the sync needs, solutions rows included."""
        own = [self.own_fields.opt_in, self.own_fields.referral_id, self.own_fields.audit]
        if self.own_fields.sync_status:
            own.append(self.own_fields.sync_status)
        extra = [self.stage.sf_field, *([self.stages.reason_field] if self.stages.reason_field else [])]
        select = list(dict.fromkeys([*SYSTEM_FIELDS, *own, *extra, *self.opportunity.sf_fields]))
        rows = ", ".join(dict.fromkeys(["Id", *self.solution_rows_mapping.sf_fields]))
        return (f"SELECT {', '.join(select)}, (SELECT {rows} FROM {self.solutions.relationship}) "
                f"FROM {self.opportunity.sobject} WHERE Id IN ({_id_list(ids)})")

    def account_query(self, ids: Sequence[str]) -> str:
        """SOQL reading accounts with their mapped fields (the customer profile of a referral)."""
        select = ", ".join(dict.fromkeys(["Id", *self.account.sf_fields]))
        return f"SELECT {select} FROM {self.account.sobject} WHERE Id IN ({_id_list(ids)})"

    def contact_roles_query(self, opportunity_ids: Sequence[str]) -> str:
        """SOQL reading opportunities' contact roles with each contact's mapped fields (`Contact.<field>`)."""
        contact = ", ".join(f"Contact.{name}" for name in dict.fromkeys(["Id", *self.contacts.sf_fields]))
        return (f"SELECT Id, OpportunityId, ContactId, Role, {contact} FROM OpportunityContactRole "
                f"WHERE OpportunityId IN ({_id_list(opportunity_ids)})")

    def pc_values(self, referral: MappingABC[str, Any]) -> dict[str, Any]:
        """Canonical value of every merge field in a referral (JSON-ready: fit for the stored base)."""
        return {f.key: f.pc_value(referral) for f in self.fields}

    def sf_values(self, opportunity: MappingABC[str, Any]) -> dict[str, Any]:
        """Canonical value of every merge field in an opportunity read with `opportunity_query`."""
        return {f.key: f.sf_value(opportunity) for f in self.fields}

    # Writing ---------------------------------------------------------------------------------------

    def referral_to_salesforce(self, referral: MappingABC[str, Any], *, create: bool = False) -> dict[str, Any]:
        """Opportunity field values from a referral: the fields whose updates flow to Salesforce
        (`create`: the fields a create copies, without empty ones), the stage included."""
        values = self.opportunity.to_salesforce(referral, create=create)
        if create or self.stage.to_salesforce:
            status, substatus = referral.get("status"), referral.get("substatus")
            if status and substatus and status != "None":
                values[self.stage.sf_field] = self.stages.stage_for(status, substatus)
            elif create:
                values[self.stage.sf_field] = self.stages.not_yet_accepted
        return values

    def salesforce_to_referral(self, opportunity: MappingABC[str, Any], *, create: bool = False) -> dict[str, Any]:
        """Referral values by dotted path from an opportunity: the fields whose updates flow to Partner
        Center (`create`: the fields a create copies). The stage is not among them: what it asks depends
        on the referral's status, see `transition_for` / `pc_update`."""
        return self.opportunity.to_referral(opportunity, create=create)

    def sf_changes(self, opportunity: MappingABC[str, Any], values: MappingABC[str, Any], *,
                   referral: MappingABC[str, Any] | None = None) -> dict[str, Any]:
        """The Opportunity update for merged canonical values: only fields that flow to Salesforce and
        differ from the opportunity now (an update that changes nothing is never built).

        Args:
            opportunity: the opportunity as read.
            values: key -> canonical value (typically the merge result).
            referral: when given, a stage of the referral's phase is the exact stage of its status.

        The solutions list is not an Opportunity field: write its rows with `solution_rows`.
        """
        changes: dict[str, Any] = {}
        for key, value in values.items():
            f = self.field(key)
            if isinstance(f, SolutionsField) or not f.to_salesforce or f.sf_value(opportunity) == value:
                continue
            if isinstance(f, StageField) and value is None:
                continue  # a referral without a status asks nothing of the stage (StageName cannot be empty)
            if isinstance(f, StageField) and referral is not None and f.pc_value(referral) == value:
                changes[f.sf_field] = self.stages.stage_for(referral["status"], referral["substatus"])
            else:
                changes[f.sf_field] = f.to_sf(value)
        return changes

    def pc_update(self, referral: MappingABC[str, Any], values: MappingABC[str, Any], *,
                  opportunity: MappingABC[str, Any] | None = None) -> ReferralUpdate:
        """The referral PATCHes for merged canonical values, in order.

        Only fields that flow to Partner Center and differ from the referral now are included. A stage
        change may take two PATCHes (accept, then win); the field changes ride with the first. Nothing is
        planned for a closed referral (Partner Center accepts no change to it), and a stage the state
        machine does not allow is left out while the other fields still go: `refused` says why.

        Args:
            referral: the referral as read.
            values: key -> canonical value (typically the merge result).
            opportunity: the opportunity (for the decline/loss reason and the solutions' names).
        """
        changes: dict[str, Any] = {}
        transitions: tuple[Transition, ...] = ()
        refused: str | None = None
        for key, value in values.items():
            f = self.field(key)
            if not f.to_partner_center or f.pc_value(referral) == value:
                continue
            if isinstance(f, StageField):
                try:
                    transitions = f.to_pc(value, referral.get("status"), referral.get("substatus"))
                except IllegalTransition as exc:
                    refused = exc.message
            elif isinstance(f, SolutionsField):
                changes[f.pc_path] = f.to_pc(value, opportunity)
            else:
                changes[f.pc_path] = f.to_pc(value)
        if referral.get("status") == "Closed" and (changes or transitions):
            return ReferralUpdate([], refused or (
                f"the referral is closed in Partner Center ({referral.get('status')}/{referral.get('substatus')}): "
                f"changes to {', '.join(changes) or 'the stage'} are not sent"))
        patches: list[list[dict[str, Any]]] = []
        current: MappingABC[str, Any] = referral
        for step in transitions or (None,):
            step_changes = dict(changes) if not patches else {}
            if step is not None:
                step_changes["status"], step_changes["substatus"] = step.status, step.substatus
                if step.needs_reason:
                    step_changes["statusReason"] = self.status_reason(opportunity or {})
            ops = patch_ops(current, step_changes)
            if ops:
                patches.append(ops)
                current = {**current, **{k: v for k, v in step_changes.items() if "." not in k}}
        return ReferralUpdate(patches, refused)

    def opportunity_for_create(self, referral: MappingABC[str, Any], *, today: dt.date | None = None) -> dict[str, Any]:
        """A new Opportunity from a referral (without AccountId: the engine matches or creates the account).

        Incoming referrals land in the not-yet-accepted stage (their New/Received pair maps there); the
        mapping's defaults are added; a referral without a closing date gets one `closeDateInDays` ahead,
        as Salesforce requires CloseDate.
        """
        values = self.referral_to_salesforce(referral, create=True)
        for name, value in self.opportunity_defaults.items():
            values.setdefault(name, value)
        close = next((f for f in self.opportunity.fields if f.sf_field == "CloseDate"), None)
        if close is not None and values.get("CloseDate") is None:
            values["CloseDate"] = ((today or dt.date.today()) + dt.timedelta(days=self.close_date_in_days)).isoformat()
        return values

    def account_for_create(self, referral: MappingABC[str, Any]) -> dict[str, Any]:
        """A new Account from the referral's customer profile."""
        return self.account.to_salesforce(referral, create=True)

    def contacts_for_create(self, referral: MappingABC[str, Any]) -> list[dict[str, Any]]:
        """New Contacts from the referral's customer team (one per member with any mapped value)."""
        members = get_path(referral, self.contacts.referral_list or "") or []
        return [record for record in (self.contacts.to_salesforce(m, create=True) for m in members) if record]

    def solution_rows(self, referral: MappingABC[str, Any], opportunity_id: str) -> list[dict[str, Any]]:
        """New solutions rows for an opportunity from the referral's solutions, with the key field set to
        "referral id:solution id" so that creating them again (upsert by that key) never doubles a row."""
        rows = []
        for item in get_path(referral, self.solutions.pc_path) or []:
            row = self.solution_rows_mapping.to_salesforce(item, create=True)
            row[self.solution_rules.parent_field] = opportunity_id
            solution_id = self.solutions.id_field.pc_value(item)
            if self.solution_rules.key_field and solution_id:
                row[self.solution_rules.key_field] = f"{referral.get('id')}:{solution_id}"
            rows.append(row)
        return rows

    def solution_changes(self, referral: MappingABC[str, Any],
                         opportunity: MappingABC[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """What makes an opportunity's solutions rows match the referral's solutions.

        Returns:
            (rows to create, Ids of rows to delete). Rows are never updated: the parent field of a
            master-detail row is create-only, and a solution's name and type belong to Partner Center.
        """
        have = {self.solutions.id_field.sf_value(row): row for row in self.solutions.rows(opportunity)}
        wanted = self.solution_rows(referral, str(opportunity.get("Id")))
        wanted_ids = {row.get(self.solutions.id_field.sf_field) for row in wanted}
        create = [row for row in wanted if row.get(self.solutions.id_field.sf_field) not in have]
        delete = [str(row["Id"]) for solution_id, row in have.items() if solution_id not in wanted_ids]
        return create, delete

    def referral_for_create(self, opportunity: MappingABC[str, Any], *, account: MappingABC[str, Any] | None,
                            contacts: Sequence[MappingABC[str, Any]] = ()) -> dict[str, Any]:
        """The body of `POST /referrals` for an opted-in opportunity.

        Args:
            opportunity: read with `opportunity_query` (solutions rows included).
            account: its Account (None when the opportunity has none).
            contacts: the Contacts of its contact roles: the customer team.

        Raises:
            MissingPrerequisites: what the seller must add first (no API call should be made).
        """
        body: dict[str, Any] = {}
        for path, value in self.salesforce_to_referral(opportunity, create=True).items():
            set_path(body, path, value)
        if account is not None:
            for path, value in self.account.to_referral(account, create=True).items():
                set_path(body, path, value)
        team = [self.contacts.item_from(c) for c in contacts]
        if team:
            set_path(body, self.contacts.referral_list or "", team)
        solutions = [self.solution_rows_mapping.item_from(row) for row in self.solutions.rows(opportunity)]
        if solutions:
            set_path(body, self.solutions.pc_path, solutions)
        body["externalReferenceId"] = opportunity.get("Id")
        for path, value in self.referral_defaults.items():
            if get_path(body, path) in (None, "", []):
                set_path(body, path, copy.deepcopy(value))
        missing = [rule.message for rule in self.required
                   if (not rule.types or body.get("type") in rule.types) and get_path(body, rule.path) in (None, "", [])]
        if missing:
            raise MissingPrerequisites(missing)
        return body

    def __repr__(self) -> str:
        return f"Mapping({self.source!r}, {len(self.fields)} fields)"


def _id_list(ids: Sequence[str]) -> str:
    """Ids as a SOQL list; Salesforce ids are 15 or 18 letters and digits, anything else is refused."""
    for value in ids:
        if not (isinstance(value, str) and len(value) in (15, 18) and value.isascii() and value.isalnum()):
            raise InvalidInput(f"not a Salesforce id: {str(value)[:20]!r}")
    return ", ".join(f"'{value}'" for value in ids)


__all__ = ["Describe", "Mapping", "MergeField", "OpportunityFields", "ReferralUpdate"]
