"""The org's schema as the connector needs it: which objects and fields exist, picklist values, lengths.

Why: orgs differ. `CurrencyIsoCode` exists only in multi-currency orgs (selecting it elsewhere is
`INVALID_FIELD`), admins rename stages, and a mapping naming a field the org lacks would fail every sync.
The client reads `GET sobjects/{name}/describe` once per object and process; the mapping checks itself
against the result at load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


class _Describe(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class PicklistValue(_Describe):
    value: str
    active: bool = True


class FieldDescribe(_Describe):
    """One field of `sobjects/{name}/describe`."""

    name: str
    type: str = "string"
    length: int = 0
    picklist_values: list[PicklistValue] = Field(default_factory=list, alias="picklistValues")
    restricted_picklist: bool = Field(default=False, alias="restrictedPicklist")
    external_id: bool = Field(default=False, alias="externalId")
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    reference_to: list[str] = Field(default_factory=list, alias="referenceTo")

    @property
    def picklist(self) -> list[str]:
        """The active picklist values (what a write may use)."""
        return [p.value for p in self.picklist_values if p.active]


class ChildRelationship(_Describe):
    child_sobject: str = Field(alias="childSObject")
    field: str
    relationship_name: str | None = Field(default=None, alias="relationshipName")


class SObjectDescribe(_Describe):
    """`GET sobjects/{name}/describe`, the parts the connector reads."""

    name: str
    fields: list[FieldDescribe] = Field(default_factory=list)
    child_relationships: list[ChildRelationship] = Field(default_factory=list, alias="childRelationships")

    def field(self, name: str) -> FieldDescribe | None:
        """The field spelt exactly so (record JSON keys are case-sensitive even where SOQL is not)."""
        return next((f for f in self.fields if f.name == name), None)

    def field_ignoring_case(self, name: str) -> FieldDescribe | None:
        lowered = name.lower()
        return next((f for f in self.fields if f.name.lower() == lowered), None)


@dataclass(frozen=True)
class OrgSchema:
    """The describes of the objects the connector uses, by object name."""

    objects: Mapping[str, SObjectDescribe] = field(default_factory=dict)

    @classmethod
    def from_describes(cls, describes: Iterable[Mapping[str, object] | SObjectDescribe]) -> OrgSchema:
        parsed = [d if isinstance(d, SObjectDescribe) else SObjectDescribe.model_validate(d) for d in describes]
        return cls({d.name: d for d in parsed})

    def sobject(self, name: str) -> SObjectDescribe | None:
        return self.objects.get(name)

    def field(self, sobject: str, name: str) -> FieldDescribe | None:
        described = self.objects.get(sobject)
        return None if described is None else described.field(name)

    def has_field(self, sobject: str, name: str) -> bool:
        return self.field(sobject, name) is not None


__all__ = ["ChildRelationship", "FieldDescribe", "OrgSchema", "PicklistValue", "SObjectDescribe"]
