"""The simulated org's schema, built the way a real org gets it.

A real org has the standard objects, and then an admin deploys the project's `salesforce/force-app`
metadata on top. The simulator does the same: `build_schema()` starts from the standard objects below and
adds every custom field, custom object and permission set it parses from that folder. Fields, picklist
values, lengths, external ids and the ✔ formula therefore come from the one place the admin deploys, so the
metadata, the default mapping and the connector cannot drift apart unnoticed. Whatever Salesforce itself
would refuse to deploy (a permission set naming a missing or required field, a layout naming a missing
field, an unknown field type) stops the build with a `SchemaError` naming the file.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from sandbox.sf_formula import Formula, FormulaError, parse_formula

NS = "http://soap.sforce.com/2006/04/metadata"
_Q = "{" + NS + "}"
DEFAULT_METADATA_DIR = Path(__file__).resolve().parent.parent / "salesforce" / "force-app"


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
    a field the connector writes): custom objects need object permissions in the set; standard objects the
    set names follow it, others are fully accessible (the profile grants them), User is read-only for all;
    custom fields need field permissions unless required or master-detail; standard fields the set names
    follow it, others are accessible.
    """

    def __init__(self, schema: Schema, permission_set: PermissionSet | None = None) -> None:
        self.schema = schema
        self.permission_set = permission_set

    def object(self, obj: ObjectDef) -> ObjectAccess:
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


# ---------------------------------------------------------------------------------------------------------
# Standard objects


def _label(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name.removesuffix("Id"))


def _f(name: str, kind: FieldType, label: str | None = None, **options: Any) -> FieldDef:
    if kind in (FieldType.STRING, FieldType.URL, FieldType.EMAIL, FieldType.PHONE, FieldType.TEXTAREA,
                FieldType.PICKLIST) and "length" not in options:
        options["length"] = {FieldType.URL: 255, FieldType.EMAIL: 80, FieldType.PHONE: 40,
                             FieldType.TEXTAREA: 255, FieldType.PICKLIST: 255}.get(kind, 255)
    if kind in (FieldType.ID, FieldType.REFERENCE):
        options.setdefault("length", 18)
    return FieldDef(name=name, label=label or _label(name), type=kind, **options)


def _read_only(name: str, kind: FieldType, **options: Any) -> FieldDef:
    return _f(name, kind, createable=False, updateable=False, **options)


def _ref(name: str, target: str, relationship: str, **options: Any) -> FieldDef:
    return _f(name, FieldType.REFERENCE, reference_to=(target,), relationship_name=relationship, **options)


def _picklist(name: str, values: Sequence[str], **options: Any) -> FieldDef:
    return _f(name, FieldType.PICKLIST, picklist=tuple(values), **options)


def _system_fields(*, owner: bool) -> list[FieldDef]:
    """The fields every record has, set by the server only."""
    fields = [
        _read_only("Id", FieldType.ID, label="Record ID", nillable=False, defaulted_on_create=True, id_lookup=True),
        _read_only("IsDeleted", FieldType.BOOLEAN, label="Deleted", nillable=False, defaulted_on_create=True,
                   default=False),
    ]
    if owner:
        fields.append(_ref("OwnerId", "User", "Owner", label="Owner ID", nillable=False, defaulted_on_create=True))
    fields += [
        _read_only("CreatedDate", FieldType.DATETIME, nillable=False, defaulted_on_create=True),
        _read_only("CreatedById", FieldType.REFERENCE, label="Created By ID", reference_to=("User",),
                   relationship_name="CreatedBy", nillable=False, defaulted_on_create=True, length=18),
        _read_only("LastModifiedDate", FieldType.DATETIME, nillable=False, defaulted_on_create=True),
        _read_only("LastModifiedById", FieldType.REFERENCE, label="Last Modified By ID", reference_to=("User",),
                   relationship_name="LastModifiedBy", nillable=False, defaulted_on_create=True, length=18),
        _read_only("SystemModstamp", FieldType.DATETIME, label="System Modstamp", nillable=False,
                   defaulted_on_create=True),
    ]
    return fields


def _currency_field(currencies: Sequence[str]) -> FieldDef:
    return _picklist("CurrencyIsoCode", currencies, label="Currency ISO Code", length=3, restricted=True,
                     nillable=False, defaulted_on_create=True, default=currencies[0])


def _object(name: str, prefix: str, fields: list[FieldDef], *, plural: str | None = None, label: str | None = None,
            createable: bool = True) -> ObjectDef:
    return ObjectDef(name=name, label=label or _label(name), plural=plural or f"{_label(name)}s", key_prefix=prefix,
                     fields={f.name: f for f in fields}, createable=createable, updateable=createable,
                     deletable=createable)


def standard_objects(*, stages: Sequence[Stage], multi_currency: bool, currencies: Sequence[str]) -> list[ObjectDef]:
    """The standard objects the connector touches, with the standard fields it may read or write."""
    money = [_currency_field(currencies)] if multi_currency else []
    address = lambda prefix: [  # noqa: E731 - a tiny local table
        _f(f"{prefix}Street", FieldType.TEXTAREA), _f(f"{prefix}City", FieldType.STRING, length=40),
        _f(f"{prefix}State", FieldType.STRING, length=80), _f(f"{prefix}PostalCode", FieldType.STRING, length=20),
        _f(f"{prefix}Country", FieldType.STRING, length=80),
    ]
    user = _object("User", "005", [
        *_system_fields(owner=False),
        _f("Username", FieldType.STRING, length=80, nillable=False, unique=True, id_lookup=True),
        _f("FirstName", FieldType.STRING, length=40),
        _f("LastName", FieldType.STRING, length=80, nillable=False),
        _read_only("Name", FieldType.STRING, label="Full Name", length=121, name_field=True),
        _f("Email", FieldType.EMAIL, length=128, nillable=False),
        _f("IsActive", FieldType.BOOLEAN, label="Active", nillable=False, defaulted_on_create=True, default=True),
        _f("Alias", FieldType.STRING, length=8, nillable=False),
    ], createable=False)
    account = _object("Account", "001", [
        *_system_fields(owner=True),
        _f("Name", FieldType.STRING, label="Account Name", nillable=False, name_field=True),
        _picklist("Type", ["Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other"],
                  label="Account Type"),
        _ref("ParentId", "Account", "Parent", label="Parent Account ID"),
        *address("Billing"),
        *address("Shipping"),
        _f("Phone", FieldType.PHONE, label="Account Phone"),
        _f("Website", FieldType.URL),
        _picklist("Industry", ["Agriculture", "Banking", "Education", "Finance", "Government", "Healthcare",
                               "Manufacturing", "Retail", "Technology", "Other"]),
        _f("NumberOfEmployees", FieldType.INT, label="Employees", precision=8),
        _f("AccountNumber", FieldType.STRING, length=40),
        _f("Description", FieldType.TEXTAREA, label="Account Description", length=32000, long_text=True),
        *money,
    ], label="Account")
    contact = _object("Contact", "003", [
        *_system_fields(owner=True),
        _ref("AccountId", "Account", "Account", label="Account ID", cascade_delete=True),
        _picklist("Salutation", ["Mr.", "Ms.", "Mrs.", "Dr.", "Prof."]),
        _f("FirstName", FieldType.STRING, length=40),
        _f("LastName", FieldType.STRING, length=80, nillable=False),
        _read_only("Name", FieldType.STRING, label="Full Name", length=121, name_field=True),
        _f("Email", FieldType.EMAIL),
        _f("Phone", FieldType.PHONE, label="Business Phone"),
        _f("MobilePhone", FieldType.PHONE),
        _f("Title", FieldType.STRING, length=128),
        _f("Department", FieldType.STRING, length=80),
        *address("Mailing"),
        _f("Description", FieldType.TEXTAREA, length=32000, long_text=True),
        *money,
    ])
    opportunity = _object("Opportunity", "006", [
        *_system_fields(owner=True),
        _ref("AccountId", "Account", "Account", label="Account ID", cascade_delete=True),
        _f("Name", FieldType.STRING, label="Name", length=120, nillable=False, name_field=True),
        _f("Description", FieldType.TEXTAREA, length=32000, long_text=True),
        _picklist("StageName", [s.name for s in stages], label="Stage", length=255, restricted=True,
                  nillable=False),
        _f("Amount", FieldType.CURRENCY, precision=18, scale=2),
        _f("Probability", FieldType.PERCENT, label="Probability (%)", precision=3, scale=0),
        _f("CloseDate", FieldType.DATE, nillable=False),
        _picklist("Type", ["New Customer", "Existing Customer - Upgrade", "Existing Customer - Replacement",
                           "Existing Customer - Downgrade"], label="Opportunity Type"),
        _f("NextStep", FieldType.STRING, length=255),
        _picklist("LeadSource", ["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"]),
        _read_only("IsClosed", FieldType.BOOLEAN, label="Closed", nillable=False, defaulted_on_create=True,
                   default=False),
        _read_only("IsWon", FieldType.BOOLEAN, label="Won", nillable=False, defaulted_on_create=True, default=False),
        _picklist("ForecastCategoryName", ["Omitted", "Pipeline", "Best Case", "Commit", "Closed"],
                  label="Forecast Category", length=40, defaulted_on_create=True, restricted=True),
        *money,
    ], plural="Opportunities")
    contact_role = _object("OpportunityContactRole", "00K", [
        *_system_fields(owner=False),
        _ref("OpportunityId", "Opportunity", "Opportunity", label="Opportunity ID", nillable=False, updateable=False,
             cascade_delete=True),
        _ref("ContactId", "Contact", "Contact", label="Contact ID", nillable=False, cascade_delete=True),
        _picklist("Role", ["Business User", "Decision Maker", "Economic Buyer", "Economic Decision Maker",
                           "Evaluator", "Executive Sponsor", "Influencer", "Technical Buyer", "Other"], length=40),
        _f("IsPrimary", FieldType.BOOLEAN, label="Primary", nillable=False, defaulted_on_create=True, default=False),
    ], label="Opportunity Contact Role")
    team_member = _object("OpportunityTeamMember", "00q", [
        *_system_fields(owner=False),
        _ref("OpportunityId", "Opportunity", "Opportunity", label="Opportunity ID", nillable=False,
             updateable=False, cascade_delete=True),
        _ref("UserId", "User", "User", label="User ID", nillable=False, updateable=False),
        _picklist("TeamMemberRole", ["Account Manager", "Channel Manager", "Executive Sponsor", "Lead Qualifier",
                                     "Pre-Sales Consultant", "Sales Manager", "Sales Rep", "Other"],
                  label="Team Role", length=40),
        _picklist("OpportunityAccessLevel", ["Read", "Edit"], label="Opportunity Access", length=40,
                  restricted=True, defaulted_on_create=True, default="Read", nillable=False),
        _read_only("Name", FieldType.STRING, label="Team Member Name", length=121, name_field=True),
    ], label="Opportunity Team Member")
    note = _object("Note", "002", [
        *_system_fields(owner=True),
        _f("ParentId", FieldType.REFERENCE, label="Parent ID", reference_to=("Opportunity", "Account", "Contact"),
           relationship_name="Parent", nillable=False, updateable=False, cascade_delete=True),
        _f("Title", FieldType.STRING, length=80, nillable=False, name_field=True),
        _f("Body", FieldType.TEXTAREA, length=32000, long_text=True),
        _f("IsPrivate", FieldType.BOOLEAN, label="Private", nillable=False, defaulted_on_create=True, default=False),
    ])
    return [user, account, contact, opportunity, contact_role, team_member, note]


# ---------------------------------------------------------------------------------------------------------
# The project's metadata


@dataclass
class Metadata:
    """The parsed DX source: custom objects, custom fields by object, permission sets, layouts."""

    objects: dict[str, tuple[Path, ET.Element]] = field(default_factory=dict)
    fields: dict[str, list[tuple[Path, ET.Element]]] = field(default_factory=dict)
    permission_sets: dict[str, tuple[Path, ET.Element]] = field(default_factory=dict)
    layouts: dict[str, tuple[Path, ET.Element]] = field(default_factory=dict)


def _parse(path: Path, root_tag: str) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise SchemaError(f"{path}: not well-formed XML ({exc})") from None
    if root.tag != _Q + root_tag:
        raise SchemaError(f"{path}: root element must be <{root_tag} xmlns=\"{NS}\">, found {root.tag}")
    return root


def _text(element: ET.Element, tag: str, default: str | None = None) -> str | None:
    child = element.find(_Q + tag)
    return default if child is None or child.text is None else child.text.strip()


def _flag(element: ET.Element, tag: str) -> bool:
    return (_text(element, tag) or "false").lower() == "true"


def load_metadata(root: Path | str = DEFAULT_METADATA_DIR) -> Metadata:
    """Read every object, field, permission set and layout under `root` (a `force-app` folder)."""
    root = Path(root)
    if not root.is_dir():
        raise SchemaError(f"{root}: no such metadata folder")
    metadata = Metadata()
    for path in sorted(root.rglob("*.object-meta.xml")):
        metadata.objects[path.name.removesuffix(".object-meta.xml")] = (path, _parse(path, "CustomObject"))
    for path in sorted(root.rglob("*.field-meta.xml")):
        if path.parent.name != "fields":
            raise SchemaError(f"{path}: a field file must live in objects/<Object>/fields/")
        metadata.fields.setdefault(path.parent.parent.name, []).append((path, _parse(path, "CustomField")))
    for path in sorted(root.rglob("*.permissionset-meta.xml")):
        metadata.permission_sets[path.name.removesuffix(".permissionset-meta.xml")] = (
            path, _parse(path, "PermissionSet"))
    for path in sorted(root.rglob("*.layout-meta.xml")):
        metadata.layouts[path.name.removesuffix(".layout-meta.xml")] = (path, _parse(path, "Layout"))
    return metadata


_SIMPLE_TYPES: dict[str, tuple[FieldType, int]] = {
    "Text": (FieldType.STRING, 0), "TextArea": (FieldType.TEXTAREA, 255), "LongTextArea": (FieldType.TEXTAREA, 0),
    "Html": (FieldType.TEXTAREA, 0), "Url": (FieldType.URL, 255), "Email": (FieldType.EMAIL, 80),
    "Phone": (FieldType.PHONE, 40), "Number": (FieldType.DOUBLE, 0), "Currency": (FieldType.CURRENCY, 0),
    "Percent": (FieldType.PERCENT, 0), "Date": (FieldType.DATE, 0), "DateTime": (FieldType.DATETIME, 0),
    "Checkbox": (FieldType.BOOLEAN, 0), "Picklist": (FieldType.PICKLIST, 255),
    "Lookup": (FieldType.REFERENCE, 18), "MasterDetail": (FieldType.REFERENCE, 18),
}


def _custom_field(path: Path, element: ET.Element) -> tuple[FieldDef, str | None]:
    """A FieldDef from a CustomField element, and its formula source (parsed once all fields are known)."""
    name = _text(element, "fullName") or path.name.removesuffix(".field-meta.xml")
    if name != path.name.removesuffix(".field-meta.xml") or not name.endswith("__c"):
        raise SchemaError(f"{path}: fullName {name!r} must match the file name and end in __c")
    kind_name = _text(element, "type") or ""
    if kind_name not in _SIMPLE_TYPES:
        raise SchemaError(f"{path}: field type {kind_name!r} is not modelled by the simulator")
    kind, default_length = _SIMPLE_TYPES[kind_name]
    formula = _text(element, "formula")
    options: dict[str, Any] = {
        "label": _text(element, "label") or name, "custom": True, "help_text": _text(element, "inlineHelpText"),
        "external_id": _flag(element, "externalId"), "unique": _flag(element, "unique"),
        "case_sensitive": _flag(element, "caseSensitive"),
        "length": int(_text(element, "length") or default_length),
        "precision": int(_text(element, "precision") or 0), "scale": int(_text(element, "scale") or 0),
        "nillable": not _flag(element, "required"),
    }
    options["id_lookup"] = options["external_id"] or options["unique"]
    if kind_name in ("LongTextArea", "Html"):
        options["long_text"] = True
        if not options["length"]:
            raise SchemaError(f"{path}: {kind_name} needs a <length>")
    if kind_name == "Text" and not formula and not 1 <= options["length"] <= 255:
        raise SchemaError(f"{path}: Text fields need a <length> between 1 and 255")
    if kind == FieldType.BOOLEAN:
        options.update(nillable=False, defaulted_on_create=True,
                       default=(_text(element, "defaultValue") or "false").lower() == "true")
    if kind == FieldType.PICKLIST:
        value_set = element.find(_Q + "valueSet")
        definition = value_set.find(_Q + "valueSetDefinition") if value_set is not None else None
        if definition is None:
            raise SchemaError(f"{path}: a picklist needs <valueSet><valueSetDefinition> (global value sets are "
                              "not modelled)")
        values = [(_text(v, "fullName") or "", _text(v, "label") or "", _flag(v, "default"))
                  for v in definition.findall(_Q + "value")]
        if not values or any(not v for v, _, _ in values):
            raise SchemaError(f"{path}: every picklist <value> needs a <fullName>")
        options.update(picklist=tuple(v for v, _, _ in values), picklist_labels=tuple(lbl or v for v, lbl, _ in values),
                       restricted=_flag(value_set, "restricted"))  # type: ignore[arg-type]
        defaults = [v for v, _, is_default in values if is_default]
        if defaults:
            options.update(default=defaults[0], defaulted_on_create=True)
    if kind == FieldType.REFERENCE:
        target = _text(element, "referenceTo")
        relationship = _text(element, "relationshipName")
        if not target or not relationship:
            raise SchemaError(f"{path}: {kind_name} needs <referenceTo> and <relationshipName>")
        options.update(reference_to=(target,), relationship_name=name.removesuffix("__c") + "__r")
        if kind_name == "MasterDetail":
            if element.find(_Q + "required") is not None:
                raise SchemaError(f"{path}: a MasterDetail field takes no <required> (it always is)")
            options.update(nillable=False, cascade_delete=True,
                           updateable=_flag(element, "reparentableMasterDetail"))
        else:
            options["cascade_delete"] = _text(element, "deleteConstraint") == "Cascade"
    if formula:
        options.update(createable=False, updateable=False, nillable=True)
        if kind == FieldType.STRING:
            options["length"] = 1300
    return FieldDef(name=name, type=kind, **options), formula


def _child_name(element: ET.Element) -> str:
    return (_text(element, "relationshipName") or "") + "__r"


def _custom_object(name: str, path: Path, element: ET.Element, prefix: str, *, owner: bool,
                   multi_currency: bool, currencies: Sequence[str]) -> ObjectDef:
    if not name.endswith("__c"):
        raise SchemaError(f"{path}: custom object names end in __c")
    name_field = element.find(_Q + "nameField")
    if name_field is None or _text(name_field, "type") != "Text":
        raise SchemaError(f"{path}: the simulator models a <nameField> of type Text only")
    fields = [
        *_system_fields(owner=owner),
        _f("Name", FieldType.STRING, label=_text(name_field, "label"), length=80, nillable=False, name_field=True),
    ]
    if multi_currency:
        fields.append(_currency_field(currencies))
    label = _text(element, "label") or name
    return ObjectDef(name=name, label=label, plural=_text(element, "pluralLabel") or label, key_prefix=prefix,
                     fields={f.name: f for f in fields}, custom=True)


def _permission_set(name: str, path: Path, element: ET.Element, objects: dict[str, ObjectDef]) -> PermissionSet:
    fields: dict[str, tuple[bool, bool]] = {}
    for item in element.findall(_Q + "fieldPermissions"):
        qualified = _text(item, "field") or ""
        object_name, _, field_name = qualified.partition(".")
        obj = objects.get(object_name)
        definition = obj.field(field_name) if obj else None
        if obj is None or definition is None or definition.name != field_name:
            raise SchemaError(f"{path}: fieldPermissions names {qualified!r}, which the org does not have")
        if definition.fls_exempt:
            raise SchemaError(f"{path}: {qualified} is required or master-detail; Salesforce refuses field "
                              "permissions on it")
        readable, editable = _flag(item, "readable"), _flag(item, "editable")
        if editable and (definition.calculated or not definition.updateable and not definition.createable):
            raise SchemaError(f"{path}: {qualified} is read-only (formula or system field); it cannot be editable")
        if editable and not readable:
            raise SchemaError(f"{path}: {qualified} is editable but not readable")
        fields[qualified] = (readable, editable)
    access: dict[str, ObjectAccess] = {}
    for item in element.findall(_Q + "objectPermissions"):
        object_name = _text(item, "object") or ""
        if object_name not in objects:
            raise SchemaError(f"{path}: objectPermissions names {object_name!r}, which the org does not have")
        granted = ObjectAccess(create=_flag(item, "allowCreate"), read=_flag(item, "allowRead"),
                               edit=_flag(item, "allowEdit"), delete=_flag(item, "allowDelete"),
                               view_all=_flag(item, "viewAllRecords"), modify_all=_flag(item, "modifyAllRecords"))
        if (granted.create or granted.edit or granted.delete or granted.view_all) and not granted.read:
            raise SchemaError(f"{path}: {object_name}: create, edit, delete and View All need read")
        if granted.modify_all and not (granted.delete and granted.edit and granted.view_all):
            raise SchemaError(f"{path}: {object_name}: Modify All needs edit, delete and View All")
        access[object_name] = granted
    user_permissions = frozenset(
        _text(item, "name") or "" for item in element.findall(_Q + "userPermissions") if _flag(item, "enabled"))
    return PermissionSet(name=name, label=_text(element, "label") or name, fields=fields, objects=access,
                         user_permissions=user_permissions)


_LAYOUT_PSEUDO_FIELDS = frozenset({"NAME"})


def _check_layout(name: str, path: Path, element: ET.Element, objects: dict[str, ObjectDef]) -> None:
    object_name = name.partition("-")[0]
    obj = objects.get(object_name)
    if obj is None:
        raise SchemaError(f"{path}: layout for {object_name!r}, which the org does not have")
    for item in element.iter(_Q + "layoutItems"):
        field_name = _text(item, "field")
        definition = obj.field(field_name) if field_name else None
        if field_name and (definition is None or definition.name != field_name):
            raise SchemaError(f"{path}: layout names field {field_name!r}, which {object_name} does not have")
        if definition is not None and definition.required and _text(item, "behavior") != "Required":
            raise SchemaError(f"{path}: {field_name} is required, so its layout behavior must be Required")
    for related in element.findall(_Q + "relatedLists"):
        target = _text(related, "relatedList") or ""
        child_name, _, via = target.partition(".")
        if via:
            child = objects.get(child_name)
            link = child.field(via) if child else None
            if child is None or link is None or object_name not in link.reference_to:
                raise SchemaError(f"{path}: related list {target!r} does not point at {object_name}")
            for column in related.findall(_Q + "fields"):
                if column.text not in _LAYOUT_PSEUDO_FIELDS and child.field(column.text or "") is None:
                    raise SchemaError(f"{path}: related list column {column.text!r} is not a field of {child_name}")


def build_schema(metadata_dir: Path | str = DEFAULT_METADATA_DIR, *, multi_currency: bool = False,
                 currencies: Sequence[str] = DEFAULT_CURRENCIES, stages: Sequence[Stage] = DEFAULT_STAGES) -> Schema:
    """The org's schema: standard objects plus the metadata under `metadata_dir`.

    Args:
        metadata_dir: a `force-app` folder (the project's own by default).
        multi_currency: whether the org has `CurrencyIsoCode` fields (multi-currency enabled).
        currencies: the active currencies, corporate currency first.
        stages: the Opportunity stages (the `StageName` picklist).
    """
    metadata = load_metadata(metadata_dir)
    objects = {o.name: o for o in standard_objects(stages=stages, multi_currency=multi_currency,
                                                   currencies=currencies)}
    for index, (name, (path, element)) in enumerate(sorted(metadata.objects.items())):
        master_detail = any(_text(e, "type") == "MasterDetail" for _, e in metadata.fields.get(name, []))
        objects[name] = _custom_object(name, path, element, f"a0{_BASE62[index]}", owner=not master_detail,
                                       multi_currency=multi_currency, currencies=currencies)
    formulas: list[tuple[Path, ObjectDef, FieldDef, str]] = []
    for object_name, field_files in sorted(metadata.fields.items()):
        obj = objects.get(object_name)
        if obj is None:
            raise SchemaError(f"{field_files[0][0]}: adds fields to {object_name!r}, which the simulator does not "
                              "model")
        for path, element in field_files:
            definition, formula = _custom_field(path, element)
            if obj.field(definition.name) is not None:
                raise SchemaError(f"{path}: {object_name}.{definition.name} is defined twice")
            for target in definition.reference_to:
                parent = objects.get(target)
                if parent is None:
                    raise SchemaError(f"{path}: references {target!r}, which the org does not have")
                parent.children.append(ChildRelationship(_child_name(element), object_name, definition.name,
                                                         definition.cascade_delete))
            obj.add_field(definition)
            if formula:
                formulas.append((path, obj, definition, formula))
    for path, obj, definition, source in formulas:
        def resolve(name: str, obj: ObjectDef = obj, path: Path = path) -> str:
            found = obj.field(name)
            if found is None:
                raise FormulaError(f"{obj.name} has no field {name!r}")
            return found.name
        try:
            parsed = parse_formula(source, resolve)
        except FormulaError as exc:
            raise SchemaError(f"{path}: formula not understood: {exc}") from None
        obj.add_field(replace(definition, formula=parsed))
    _add_standard_children(objects)
    permission_sets = {name: _permission_set(name, path, element, objects)
                       for name, (path, element) in metadata.permission_sets.items()}
    for name, (path, element) in metadata.layouts.items():
        _check_layout(name, path, element, objects)
    return Schema(objects.values(), stages=stages, multi_currency=multi_currency, currencies=currencies,
                  permission_sets=permission_sets)


def _add_standard_children(objects: dict[str, ObjectDef]) -> None:
    """The standard child relationships (Account.Contacts, Opportunity.OpportunityContactRoles, ...)."""
    table = [
        ("Account", "Contacts", "Contact", "AccountId"),
        ("Account", "Opportunities", "Opportunity", "AccountId"),
        ("Account", "Notes", "Note", "ParentId"),
        ("Contact", "OpportunityContactRoles", "OpportunityContactRole", "ContactId"),
        ("Contact", "Notes", "Note", "ParentId"),
        ("Opportunity", "OpportunityContactRoles", "OpportunityContactRole", "OpportunityId"),
        ("Opportunity", "OpportunityTeamMembers", "OpportunityTeamMember", "OpportunityId"),
        ("Opportunity", "Notes", "Note", "ParentId"),
    ]
    for parent, name, child, via in table:
        objects[parent].children.append(ChildRelationship(name, child, via, True))


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

__all__ = [
    "DEFAULT_CURRENCIES", "DEFAULT_METADATA_DIR", "DEFAULT_STAGES", "NS", "NUMBER_TYPES", "TEXT_TYPES", "Access",
    "ChildRelationship", "FieldDef", "FieldType", "Metadata", "ObjectAccess", "ObjectDef", "PermissionSet",
    "Schema", "SchemaError", "Stage", "build_schema", "load_metadata", "standard_objects",
]
