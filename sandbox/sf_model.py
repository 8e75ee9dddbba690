"""The simulated org's data model: field and object definitions, permission sets, and who may see what.

Why its own module: the standard objects (`sf_standard`), the metadata parser (`sf_schema`), the SOQL
evaluator and the DML rules all speak in these types; keeping them apart from any of those keeps each of
them readable on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sandbox.sf_formula import Formula



class SchemaError(ValueError):
    """The metadata cannot be deployed as written (or uses something the simulator does not model)."""


class FieldType(StrEnum):
    """Describe's `type` values for the fields the simulator models."""

    ID = "id"
    STRING = "string"
    TEXTAREA = "textarea"
    BOOLEAN = "boolean"
    PICKLIST = "picklist"
    CURRENCY = "currency"
    DOUBLE = "double"
    PERCENT = "percent"
    INT = "int"
    DATE = "date"
    DATETIME = "datetime"
    REFERENCE = "reference"
    URL = "url"
    EMAIL = "email"
    PHONE = "phone"


TEXT_TYPES = frozenset({FieldType.ID, FieldType.STRING, FieldType.TEXTAREA, FieldType.PICKLIST,
                        FieldType.REFERENCE, FieldType.URL, FieldType.EMAIL, FieldType.PHONE})
NUMBER_TYPES = frozenset({FieldType.CURRENCY, FieldType.DOUBLE, FieldType.PERCENT, FieldType.INT})
_SOAP_TYPES = {
    FieldType.ID: "tns:ID", FieldType.REFERENCE: "tns:ID", FieldType.BOOLEAN: "xsd:boolean",
    FieldType.CURRENCY: "xsd:double", FieldType.DOUBLE: "xsd:double", FieldType.PERCENT: "xsd:double",
    FieldType.INT: "xsd:int", FieldType.DATE: "xsd:date", FieldType.DATETIME: "xsd:dateTime",
}


@dataclass(frozen=True)
class Stage:
    """One Opportunity stage and what Salesforce derives from it."""

    name: str
    probability: int
    closed: bool = False
    won: bool = False
    forecast: str = "Pipeline"


DEFAULT_STAGES: tuple[Stage, ...] = (
    Stage("Prospecting", 10),
    Stage("Qualification", 10),
    Stage("Needs Analysis", 20),
    Stage("Value Proposition", 50),
    Stage("Id. Decision Makers", 60),
    Stage("Perception Analysis", 70),
    Stage("Proposal/Price Quote", 75),
    Stage("Negotiation/Review", 90),
    Stage("Closed Won", 100, closed=True, won=True, forecast="Closed"),
    Stage("Closed Lost", 0, closed=True, forecast="Omitted"),
)
DEFAULT_CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP", "JPY", "AUD", "CAD", "CHF", "INR")


@dataclass(frozen=True)
class FieldDef:
    """One field as describe reports it, plus what the simulator needs to enforce it."""

    name: str
    label: str
    type: FieldType
    length: int = 0
    precision: int = 0
    scale: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    default: Any = None
    picklist: tuple[str, ...] = ()
    picklist_labels: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    cascade_delete: bool = False
    external_id: bool = False
    unique: bool = False
    case_sensitive: bool = False
    id_lookup: bool = False
    long_text: bool = False
    name_field: bool = False
    custom: bool = False
    formula: Formula | None = None
    help_text: str | None = None

    @property
    def required(self) -> bool:
        """Must be given on create (REQUIRED_FIELD_MISSING otherwise)."""
        return not self.nillable and self.createable and not self.defaulted_on_create

    @property
    def calculated(self) -> bool:
        return self.formula is not None

    @property
    def filterable(self) -> bool:
        return not self.long_text

    @property
    def fls_exempt(self) -> bool:
        """Required fields and master-detail fields are always visible: no permission set may name them."""
        return self.required

    def describe(self, *, createable: bool, updateable: bool) -> dict[str, Any]:
        values = self.picklist
        labels = self.picklist_labels or values
        return {
            "name": self.name,
            "label": self.label,
            "type": str(self.type),
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "length": self.length,
            "byteLength": self.length * 3,
            "precision": self.precision,
            "scale": self.scale,
            "digits": 9 if self.type == FieldType.INT else 0,
            "nillable": self.nillable,
            "createable": createable,
            "updateable": updateable,
            "defaultedOnCreate": self.defaulted_on_create,
            "defaultValue": self.default if self.type == FieldType.BOOLEAN else None,
            "calculated": self.calculated,
            "calculatedFormula": self.formula.source if self.formula else None,
            "externalId": self.external_id,
            "unique": self.unique,
            "caseSensitive": self.case_sensitive,
            "idLookup": self.id_lookup,
            "filterable": self.filterable,
            "sortable": self.filterable,
            "groupable": self.filterable and self.type not in NUMBER_TYPES,
            "nameField": self.name_field,
            "autoNumber": False,
            "custom": self.custom,
            "htmlFormatted": False,
            "dependentPicklist": False,
            "restrictedPicklist": self.restricted,
            "picklistValues": [
                {"active": True, "defaultValue": value == self.default, "label": label, "validFor": None,
                 "value": value}
                for value, label in zip(values, labels, strict=True)
            ],
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "cascadeDelete": self.cascade_delete,
            "inlineHelpText": self.help_text,
            "extraTypeInfo": "plaintextarea" if self.type == FieldType.TEXTAREA else None,
        }


@dataclass(frozen=True)
class ChildRelationship:
    """A parent-to-child relationship usable in a SOQL subquery (`Microsoft_Solutions__r`)."""

    name: str
    child_object: str
    field: str
    cascade_delete: bool


@dataclass
class ObjectDef:
    """One sObject type: its fields in describe order, with case-insensitive lookups."""

    name: str
    label: str
    plural: str
    key_prefix: str
    fields: dict[str, FieldDef]
    custom: bool = False
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    children: list[ChildRelationship] = field(default_factory=list)

    def field(self, name: str) -> FieldDef | None:
        return self._lower_fields().get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        """The reference field whose relationship name is `name` (`Account` → AccountId)."""
        lower = name.lower()
        for candidate in self.fields.values():
            if candidate.relationship_name and candidate.relationship_name.lower() == lower:
                return candidate
        return None

    def child(self, name: str) -> ChildRelationship | None:
        lower = name.lower()
        return next((c for c in self.children if c.name.lower() == lower), None)

    def add_field(self, definition: FieldDef) -> None:
        self.fields[definition.name] = definition
        self.__dict__.pop("_lower", None)

    def _lower_fields(self) -> dict[str, FieldDef]:
        lower = self.__dict__.get("_lower")
        if lower is None or len(lower) != len(self.fields):
            lower = {name.lower(): f for name, f in self.fields.items()}
            self.__dict__["_lower"] = lower
        return lower


@dataclass(frozen=True)
class ObjectAccess:
    """Object permissions (CRUD, View All, Modify All) of one user on one object."""

    create: bool = True
    read: bool = True
    edit: bool = True
    delete: bool = True
    view_all: bool = True
    modify_all: bool = True


FULL_ACCESS = ObjectAccess()
READ_ONLY = ObjectAccess(create=False, edit=False, delete=False, modify_all=False)
NO_ACCESS = ObjectAccess(False, False, False, False, False, False)


@dataclass(frozen=True)
class PermissionSet:
    """A parsed permission set: field permissions by `Object.Field`, object permissions by object."""

    name: str
    label: str
    fields: dict[str, tuple[bool, bool]]
    objects: dict[str, ObjectAccess]
    user_permissions: frozenset[str]


SETUP_OBJECTS = frozenset({"PermissionSet", "PermissionSetAssignment"})
SETUP_READERS = frozenset({"ViewSetup", "AssignPermissionSets", "ManageUsers"})
"""Since Summer '20 only users with one of these permissions may read permission set assignments (Salesforce's
object reference, PermissionSetAssignment, "Special Access Rules"); to anyone else the objects do not exist."""
MINIMUM_ACCESS = PermissionSet(name="", label="Minimum Access", fields={}, objects={}, user_permissions=frozenset())
"""What an integration user holds without the connector's permission set: no custom object or custom field."""


class Schema:
    """Every object of the org, by name (case-insensitive) and by Id key prefix."""

    def __init__(self, objects: Iterable[ObjectDef], *, stages: Sequence[Stage], multi_currency: bool,
                 currencies: Sequence[str], permission_sets: dict[str, PermissionSet] | None = None) -> None:
        self.objects = {o.name: o for o in objects}
        self._lower = {name.lower(): o for name, o in self.objects.items()}
        self.by_prefix = {o.key_prefix: o for o in self.objects.values()}
        self.stages = {s.name: s for s in stages}
        self.multi_currency = multi_currency
        self.currencies = tuple(currencies)
        self.corporate_currency = self.currencies[0]
        self.permission_sets = permission_sets or {}

    def object(self, name: str) -> ObjectDef | None:
        return self._lower.get(name.lower())


class Access:
    """What one user may see and change: everything, or what a permission set grants.

    Rules (a simplification of profiles + permission sets, enough to catch a permission set that forgets
    a field the connector writes): permission sets and their assignments need View Setup and Configuration
    (or Assign Permission Sets, Manage Users); custom objects need object permissions in the set; standard objects the
    set names follow it, others are fully accessible (the profile grants them), User is read-only for all;
    custom fields need field permissions unless required or master-detail; standard fields the set names
    follow it, others are accessible.
    """

    def __init__(self, schema: Schema, permission_set: PermissionSet | None = None) -> None:
        self.schema = schema
        self.permission_set = permission_set

    @property
    def views_setup(self) -> bool:
        """View Setup and Configuration (or a permission that implies reading setup): an admin, or a set granting it."""
        return self.permission_set is None or bool(self.permission_set.user_permissions & SETUP_READERS)

    def object(self, obj: ObjectDef) -> ObjectAccess:
        if obj.name in SETUP_OBJECTS and not self.views_setup:
            return NO_ACCESS
        if not obj.createable:
            return READ_ONLY
        if self.permission_set is None:
            return FULL_ACCESS
        granted = self.permission_set.objects.get(obj.name)
        if granted is not None:
            return granted
        return NO_ACCESS if obj.custom else FULL_ACCESS

    def can_read(self, obj: ObjectDef, definition: FieldDef) -> bool:
        if self.permission_set is None or definition.fls_exempt:
            return True
        granted = self.permission_set.fields.get(f"{obj.name}.{definition.name}")
        if granted is None:
            return not definition.custom
        return granted[0]

    def can_edit(self, obj: ObjectDef, definition: FieldDef) -> bool:
        if self.permission_set is None or definition.fls_exempt:
            return True
        granted = self.permission_set.fields.get(f"{obj.name}.{definition.name}")
        if granted is None:
            return not definition.custom
        return granted[1]

    def describe(self, obj: ObjectDef, base_url: str) -> dict[str, Any]:
        """The `/sobjects/{type}/describe` body as this user sees it."""
        access = self.object(obj)
        return {
            **self.describe_global_entry(obj, base_url),
            "fields": [
                f.describe(createable=f.createable and self.can_edit(obj, f) and access.create,
                           updateable=f.updateable and self.can_edit(obj, f) and access.edit)
                for f in obj.fields.values() if self.can_read(obj, f)
            ],
            "childRelationships": [
                {"childSObject": c.child_object, "field": c.field, "relationshipName": c.name,
                 "cascadeDelete": c.cascade_delete, "deprecatedAndHidden": False, "restrictedDelete": False}
                for c in obj.children
            ],
            "recordTypeInfos": [],
        }

    def describe_global_entry(self, obj: ObjectDef, base_url: str) -> dict[str, Any]:
        access = self.object(obj)
        return {
            "name": obj.name, "label": obj.label, "labelPlural": obj.plural, "keyPrefix": obj.key_prefix,
            "custom": obj.custom, "createable": access.create, "updateable": access.edit,
            "deletable": access.delete and obj.deletable, "queryable": access.read, "retrieveable": access.read,
            "searchable": access.read, "layoutable": True, "triggerable": True, "replicateable": True,
            "urls": {"sobject": f"{base_url}/sobjects/{obj.name}",
                     "describe": f"{base_url}/sobjects/{obj.name}/describe",
                     "rowTemplate": f"{base_url}/sobjects/{obj.name}/{{ID}}"},
        }


__all__ = [
    "DEFAULT_CURRENCIES", "DEFAULT_STAGES", "FULL_ACCESS", "MINIMUM_ACCESS", "NO_ACCESS", "NUMBER_TYPES", "READ_ONLY", "TEXT_TYPES",
    "Access", "ChildRelationship", "FieldDef", "FieldType", "ObjectAccess", "ObjectDef", "PermissionSet", "Schema",
    "SchemaError", "Stage",
]
