"""Reading and checking a mapping file: every problem at once, each at its JSON path.

Why all at once: an admin fixing a mapping should see the whole list, not one mistake per deploy. The
checks are the JSON schema (`mappings/salesforce.schema.json`) plus what a schema cannot say: referral
paths that exist in the referral model, transforms and tables that exist, a stage table without gaps,
and, when the org's describe is given, Salesforce objects, fields and picklist values that exist.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from shared.mapping.errors import MappingError, Problem
from shared.mapping.paths import referral_paths
from shared.mapping.stages import PAIRS, Phase, pair_key, phase_of_pair
from shared.mapping.transforms import TRANSFORMS
from shared.salesforce.describe import OrgSchema

SCHEMA_PATH = Path(__file__).resolve().parent.parent.parent / "mappings" / "salesforce.schema.json"

OBJECT_SECTIONS = ("opportunity", "account", "contacts", "solutions")
"""The sections that map one Salesforce object each, in file order."""


def json_path(*parts: str | int) -> str:
    """`$.a.b[2]`, quoting keys that are not plain names (`$.stages.toSalesforce['Closed/Won']`)."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.replace("_", "").isalnum():
            text += f".{part}"
        else:
            text += "['" + part.replace("'", "\\'") + "']"
    return text


@functools.cache
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def read_document(path: Path) -> dict[str, Any]:
    """Parse a mapping file.

    Raises:
        MappingError: the file is missing, unreadable or not a JSON object (with line and column).
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(str(path), [Problem("$", "file not found: set COSELL_MAPPING_FILE to a mapping file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(str(path), [Problem("$", f"cannot read the file ({exc})")]) from None
    except json.JSONDecodeError as exc:
        raise MappingError(str(path), [Problem("$", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]) from None
    except RecursionError:
        raise MappingError(str(path), [Problem("$", "arrays or objects nested too deeply to be a mapping")]) from None
    if not isinstance(document, dict):
        raise MappingError(str(path), [Problem("$", "a mapping is a JSON object")])
    return document


def sobjects_of(document: Mapping[str, Any]) -> list[str]:
    """The Salesforce objects a mapping names (what to describe before checking it)."""
    names = [_dict(document.get(section)).get("sobject") for section in OBJECT_SECTIONS]
    return sorted({n for n in names if isinstance(n, str)} | {"OpportunityContactRole"})


def validate(document: Mapping[str, Any], describe: OrgSchema | None = None) -> list[Problem]:
    """Every problem of a mapping document, in file order (an empty list: the mapping is usable)."""
    problems = [Problem(json_path(*error.absolute_path), error.message) for error in _validator().iter_errors(document)]
    problems += _Checker(document, describe).run()
    return list(dict.fromkeys(problems))  # the schema and a check may both see one mistake: say it once


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class _Checker:
    """The checks a JSON schema cannot express; tolerant of a malformed document (the schema reports that)."""

    def __init__(self, document: Mapping[str, Any], describe: OrgSchema | None) -> None:
        self.doc = document
        self.describe = describe
        self.paths = referral_paths()
        self.tables = _dict(document.get("tables"))

    def run(self) -> list[Problem]:
        return [*self._objects(), *self._keys(), *self._stages(), *self._tables(), *self._create()]

    # Salesforce side --------------------------------------------------------------------------------

    def _sf_field(self, sobject: Any, name: Any, where: str, *, optional: bool = False) -> Iterator[Problem]:
        """A problem when the org's describe lacks `sobject.name` (nothing without a describe)."""
        if self.describe is None or not isinstance(sobject, str) or not isinstance(name, str):
            return
        described = self.describe.sobject(sobject)
        if described is None:
            return  # reported once for the object
        if described.field(name) is not None or optional:
            return
        near = described.field_ignoring_case(name)
        hint = f": Salesforce spells it {near.name}" if near else ""
        yield Problem(where, f"unknown Salesforce field {sobject}.{name}{hint}")

    def _objects(self) -> Iterator[Problem]:
        for section in OBJECT_SECTIONS:
            spec = _dict(self.doc.get(section))
            sobject = spec.get("sobject")
            if self.describe is not None and isinstance(sobject, str) and self.describe.sobject(sobject) is None:
                yield Problem(json_path(section, "sobject"), f"unknown Salesforce object {sobject}")
            item_prefix = ""
            if section in ("contacts", "solutions"):
                listed = spec.get("referralList")
                if isinstance(listed, str):
                    if f"{listed}[]" not in self.paths:
                        yield Problem(json_path(section, "referralList"), f"{listed!r} is not a list in the referral")
                    item_prefix = f"{listed}[]."
            for index, fld in enumerate(_list(spec.get("fields"))):
                yield from self._field(section, index, _dict(fld), sobject, item_prefix)
            for name in ("optInField", "referralIdField", "auditField", "syncStatusField", "parentField",
                         "keyField", "matchBy"):
                if name in spec:
                    yield from self._sf_field(sobject, spec[name], json_path(section, name))
            if section == "contacts" and isinstance(spec.get("contactRole"), str):
                yield from self._contact_role(spec["contactRole"])
            if section == "contacts" and isinstance(spec.get("matchBy"), str):
                mapped = [f.get("salesforce") for f in _list(spec.get("fields")) if isinstance(f, Mapping)]
                if spec["matchBy"] not in mapped:
                    yield Problem(json_path(section, "matchBy"), f"{spec['matchBy']} must be one of the mapped contact fields")
            if section == "solutions":
                yield from self._solutions(spec)

    def _contact_role(self, role: str) -> Iterator[Problem]:
        described = self.describe.field("OpportunityContactRole", "Role") if self.describe else None
        if described is not None and described.picklist and role not in described.picklist:
            yield Problem(json_path("contacts", "contactRole"), f"{role!r} is not a value of OpportunityContactRole.Role")

    def _solutions(self, spec: Mapping[str, Any]) -> Iterator[Problem]:
        paths = [f.get("referral") for f in _list(spec.get("fields")) if isinstance(f, Mapping)]
        if "id" not in paths:
            yield Problem(json_path("solutions", "fields"), "a field must map the solution's id (referral path \"id\")")
        relationship = spec.get("relationship")
        opportunity = _dict(self.doc.get("opportunity")).get("sobject")
        if self.describe is None or not isinstance(relationship, str) or not isinstance(opportunity, str):
            return
        described = self.describe.sobject(opportunity)
        if described is None:
            return
        names = {r.relationship_name for r in described.child_relationships}
        if relationship not in names:
            yield Problem(json_path("solutions", "relationship"),
                          f"{opportunity} has no child relationship {relationship}")

    def _field(self, section: str, index: int, fld: Mapping[str, Any], sobject: Any, item_prefix: str) -> Iterator[Problem]:
        where = functools.partial(json_path, section, "fields", index)
        transform = fld.get("transform", "text")
        if isinstance(transform, str) and transform not in TRANSFORMS:
            yield Problem(where("transform"), f"unknown transform {transform!r}; known: {', '.join(sorted(TRANSFORMS))}")
        if transform == "table" and isinstance(fld.get("table"), str) and fld["table"] not in self.tables:
            yield Problem(where("table"), f"unknown table {fld['table']!r}; define it under tables")
        if transform == "link":
            if fld.get("direction") != "to_salesforce" or fld.get("onCreate", "to_salesforce") not in ("to_salesforce", "none"):
                yield Problem(where("direction"), "a link is built from the referral: direction and onCreate must be to_salesforce")
            if isinstance(fld.get("template"), str) and "{id}" not in fld["template"]:
                yield Problem(where("template"), "the template must contain {id}")
        path = fld.get("referral")
        if isinstance(path, str) and f"{item_prefix}{path}" not in self.paths:
            yield Problem(where("referral"), f"unknown referral path {item_prefix}{path}")
        yield from self._sf_field(sobject, fld.get("salesforce"), where("salesforce"), optional=bool(fld.get("ifFieldExists")))
        if transform == "table" and isinstance(fld.get("table"), str):
            yield from self._picklist_values(sobject, fld.get("salesforce"), fld["table"], where("table"))

    def _picklist_values(self, sobject: Any, name: Any, table: str, where: str) -> Iterator[Problem]:
        described = self.describe.field(sobject, name) if self.describe and isinstance(sobject, str) and isinstance(name, str) else None
        if described is None or not described.picklist:
            return
        spec = _dict(self.tables.get(table))
        wanted = [*_dict(spec.get("values")).values(), spec.get("defaultSalesforce")]
        for value in wanted:
            if isinstance(value, str) and value not in described.picklist:
                yield Problem(where, f"{value!r} is not a value of the picklist {sobject}.{name}")

    def _keys(self) -> Iterator[Problem]:
        first: dict[str, str] = {"stage": json_path("stages"), "solutions": json_path("solutions")}
        for section in OBJECT_SECTIONS:
            for index, fld in enumerate(_list(_dict(self.doc.get(section)).get("fields"))):
                key = _dict(fld).get("key")
                if not isinstance(key, str):
                    continue
                here = json_path(section, "fields", index, "key")
                if key in first:
                    yield Problem(here, f"duplicate key {key!r} (also at {first[key]})")
                else:
                    first[key] = here

    # Stages -----------------------------------------------------------------------------------------

    def _stages(self) -> Iterator[Problem]:
        spec = _dict(self.doc.get("stages"))
        to_sf = _dict(spec.get("toSalesforce"))
        to_pc = _dict(spec.get("toPartnerCenter"))
        on_hold = [s for s in _list(spec.get("onHold")) if isinstance(s, str)]
        if "toSalesforce" in spec:
            for status, substatus in PAIRS:
                if pair_key(status, substatus) not in to_sf:
                    yield Problem(json_path("stages", "toSalesforce"), f"no stage for the referral status {status}/{substatus}")
        for key, stage in to_sf.items():
            if not isinstance(stage, str) or "/" not in key:
                continue
            where = json_path("stages", "toSalesforce", key)
            phase = to_pc.get(stage)
            if stage in on_hold:
                yield Problem(where, f"{stage!r} is on hold; a referral status cannot land in a stage that is not synced")
            elif phase is None:
                yield Problem(where, f"{stage!r} is not in stages.toPartnerCenter, so it would not read back")
            elif isinstance(phase, str) and phase in Phase._value2member_map_:
                expected = phase_of_pair(*key.split("/", 1))
                if phase != expected.value:
                    yield Problem(where, f"{key} is {expected.value}, but the stage {stage!r} is {phase}")
        landing = spec.get("notYetAccepted")
        if isinstance(landing, str) and "toPartnerCenter" in spec and to_pc.get(landing) != Phase.OPEN.value:
            yield Problem(json_path("stages", "notYetAccepted"), f"{landing!r} must be an \"open\" stage in stages.toPartnerCenter")
        for index, stage in enumerate(on_hold):
            if stage in to_pc:
                yield Problem(json_path("stages", "onHold", index), f"{stage!r} is also in toPartnerCenter; a stage is synced or on hold, not both")
        yield from self._stage_picklist(spec, to_sf, to_pc, on_hold)

    def _stage_picklist(self, spec: Mapping[str, Any], to_sf: Mapping[str, Any], to_pc: Mapping[str, Any],
                        on_hold: list[str]) -> Iterator[Problem]:
        sobject = _dict(self.doc.get("opportunity")).get("sobject")
        field_name = spec.get("salesforce")
        yield from self._sf_field(sobject, field_name, json_path("stages", "salesforce"))
        yield from self._sf_field(sobject, spec.get("reasonField"), json_path("stages", "reasonField"))
        described = (self.describe.field(sobject, field_name)
                     if self.describe and isinstance(sobject, str) and isinstance(field_name, str) else None)
        if described is None or not described.picklist:
            return
        values = set(described.picklist)
        named: list[tuple[str, Any]] = [(json_path("stages", "toPartnerCenter", s), s) for s in to_pc]
        named += [(json_path("stages", "onHold", i), s) for i, s in enumerate(on_hold)]
        named += [(json_path("stages", "notYetAccepted"), spec.get("notYetAccepted"))]
        for where, stage in named:
            if isinstance(stage, str) and stage not in values:
                yield Problem(where, f"{stage!r} is not a {sobject}.{field_name} value in the org")
        for stage in described.picklist:
            if stage not in to_pc and stage not in on_hold:
                yield Problem(json_path("stages", "toPartnerCenter"),
                              f"the org's stage {stage!r} has no phase: add it here or to stages.onHold")

    # Tables and create rules ------------------------------------------------------------------------

    def _tables(self) -> Iterator[Problem]:
        for name, spec in self.tables.items():
            seen: dict[str, str] = {}
            for pc_value, sf_value in _dict(_dict(spec).get("values")).items():
                if not isinstance(sf_value, str):
                    continue  # the schema reports it; it cannot be looked up either
                if sf_value in seen and _dict(spec).get("defaultPartnerCenter") is None:
                    yield Problem(json_path("tables", name, "values", pc_value),
                                  f"{sf_value!r} is also the Salesforce value of {seen[sf_value]!r}: reading it back is ambiguous")
                seen.setdefault(sf_value, pc_value)

    def _create(self) -> Iterator[Problem]:
        create = _dict(self.doc.get("create"))
        partner_center = _dict(create.get("partnerCenter"))
        for path in _dict(partner_center.get("defaults")):
            if path not in self.paths:
                yield Problem(json_path("create", "partnerCenter", "defaults", path), f"unknown referral path {path}")
        for index, rule in enumerate(_list(partner_center.get("required"))):
            path = _dict(rule).get("path")
            if isinstance(path, str) and path not in self.paths:
                yield Problem(json_path("create", "partnerCenter", "required", index, "path"), f"unknown referral path {path}")
        sobject = _dict(self.doc.get("opportunity")).get("sobject")
        for name in _dict(_dict(create.get("salesforce")).get("defaults")):
            yield from self._sf_field(sobject, name, json_path("create", "salesforce", "defaults", name))


__all__ = ["OBJECT_SECTIONS", "SCHEMA_PATH", "json_path", "read_document", "sobjects_of", "validate"]
