"""The standard objects of the simulated org, with the standard fields the connector may read or write.

Why only these: the simulator models what the connector touches (Opportunity, Account, Contact, their
contact roles, team members, notes, users, and the permission sets and assignments `doctor` reads), each with the types, lengths, required fields and derived
fields Salesforce gives them, so the connector meets the same refusals it would meet in a real org.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sandbox.sf_model import ChildRelationship, FieldDef, FieldType, ObjectDef, Stage


def _label(name: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name.removesuffix("Id"))


def _f(name: str, kind: FieldType, label: str | None = None, **options: Any) -> FieldDef:
    """A FieldDef with Salesforce's default length for its type and a label derived from its name."""
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


def system_fields(*, owner: bool) -> list[FieldDef]:
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


def currency_field(currencies: Sequence[str]) -> FieldDef:
    """`CurrencyIsoCode`: only in multi-currency orgs, restricted to the active currencies."""
    return _picklist("CurrencyIsoCode", currencies, label="Currency ISO Code", length=3, restricted=True,
                     nillable=False, defaulted_on_create=True, default=currencies[0])


def _address(prefix: str) -> list[FieldDef]:
    return [_f(f"{prefix}Street", FieldType.TEXTAREA), _f(f"{prefix}City", FieldType.STRING, length=40),
            _f(f"{prefix}State", FieldType.STRING, length=80), _f(f"{prefix}PostalCode", FieldType.STRING, length=20),
            _f(f"{prefix}Country", FieldType.STRING, length=80)]


def _object(name: str, prefix: str, fields: list[FieldDef], *, plural: str | None = None, label: str | None = None,
            createable: bool = True) -> ObjectDef:
    return ObjectDef(name=name, label=label or _label(name), plural=plural or f"{_label(name)}s", key_prefix=prefix,
                     fields={f.name: f for f in fields}, createable=createable, updateable=createable,
                     deletable=createable)


def standard_objects(*, stages: Sequence[Stage], multi_currency: bool, currencies: Sequence[str]) -> list[ObjectDef]:
    """The standard objects the connector touches, with the standard fields it may read or write."""
    money = [currency_field(currencies)] if multi_currency else []
    user = _object("User", "005", [
        *system_fields(owner=False),
        _f("Username", FieldType.STRING, length=80, nillable=False, unique=True, id_lookup=True),
        _f("FirstName", FieldType.STRING, length=40),
        _f("LastName", FieldType.STRING, length=80, nillable=False),
        _read_only("Name", FieldType.STRING, label="Full Name", length=121, name_field=True),
        _f("Email", FieldType.EMAIL, length=128, nillable=False),
        _f("IsActive", FieldType.BOOLEAN, label="Active", nillable=False, defaulted_on_create=True, default=True),
        _f("Alias", FieldType.STRING, length=8, nillable=False),
    ], createable=False)
    account = _object("Account", "001", [
        *system_fields(owner=True),
        _f("Name", FieldType.STRING, label="Account Name", nillable=False, name_field=True),
        _picklist("Type", ["Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other"],
                  label="Account Type"),
        _ref("ParentId", "Account", "Parent", label="Parent Account ID"),
        *_address("Billing"),
        *_address("Shipping"),
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
        *system_fields(owner=True),
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
        *_address("Mailing"),
        _f("Description", FieldType.TEXTAREA, length=32000, long_text=True),
        *money,
    ])
    opportunity = _object("Opportunity", "006", [
        *system_fields(owner=True),
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
        *system_fields(owner=False),
        _ref("OpportunityId", "Opportunity", "Opportunity", label="Opportunity ID", nillable=False, updateable=False,
             cascade_delete=True),
        _ref("ContactId", "Contact", "Contact", label="Contact ID", nillable=False, cascade_delete=True),
        _picklist("Role", ["Business User", "Decision Maker", "Economic Buyer", "Economic Decision Maker",
                           "Evaluator", "Executive Sponsor", "Influencer", "Technical Buyer", "Other"], length=40),
        _f("IsPrimary", FieldType.BOOLEAN, label="Primary", nillable=False, defaulted_on_create=True, default=False),
    ], label="Opportunity Contact Role")
    team_member = _object("OpportunityTeamMember", "00q", [
        *system_fields(owner=False),
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
        *system_fields(owner=True),
        _f("ParentId", FieldType.REFERENCE, label="Parent ID", reference_to=("Opportunity", "Account", "Contact"),
           relationship_name="Parent", nillable=False, updateable=False, cascade_delete=True),
        _f("Title", FieldType.STRING, length=80, nillable=False, name_field=True),
        _f("Body", FieldType.TEXTAREA, length=32000, long_text=True),
        _f("IsPrivate", FieldType.BOOLEAN, label="Private", nillable=False, defaulted_on_create=True, default=False),
    ])
    permission_set = _object("PermissionSet", "0PS", [
        *system_fields(owner=False),
        _f("Name", FieldType.STRING, length=80, nillable=False, name_field=True),
        _f("Label", FieldType.STRING, length=80, nillable=False),
        _f("IsOwnedByProfile", FieldType.BOOLEAN, label="Is Owned By Profile", nillable=False,
           defaulted_on_create=True, default=False),
    ], createable=False, label="Permission Set")
    assignment = _object("PermissionSetAssignment", "0Pa", [
        *system_fields(owner=False),
        _ref("AssigneeId", "User", "Assignee", label="Assignee ID", nillable=False, updateable=False),
        _ref("PermissionSetId", "PermissionSet", "PermissionSet", label="Permission Set ID", nillable=False,
             updateable=False),
    ], createable=False, label="Permission Set Assignment")
    return [user, account, contact, opportunity, contact_role, team_member, note, permission_set, assignment]


def add_standard_children(objects: dict[str, ObjectDef]) -> None:
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


__all__ = ["add_standard_children", "currency_field", "standard_objects", "system_fields"]
