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

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sandbox.sf_formula import FormulaError, parse_formula
from sandbox.sf_model import (
    DEFAULT_CURRENCIES,
    DEFAULT_STAGES,
    Access,
    ChildRelationship,
    FieldDef,
    FieldType,
    ObjectAccess,
    ObjectDef,
    PermissionSet,
    Schema,
    SchemaError,
    Stage,
)
from sandbox.sf_standard import add_standard_children, currency_field, standard_objects, system_fields

NS = "http://soap.sforce.com/2006/04/metadata"
_Q = "{" + NS + "}"
DEFAULT_METADATA_DIR = Path(__file__).resolve().parent.parent / "salesforce" / "force-app"

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
        *system_fields(owner=owner),
        FieldDef(name="Name", label=_text(name_field, "label") or "Name", type=FieldType.STRING, length=80,
                 nillable=False, name_field=True),
    ]
    if multi_currency:
        fields.append(currency_field(currencies))
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
    add_standard_children(objects)
    permission_sets = {name: _permission_set(name, path, element, objects)
                       for name, (path, element) in metadata.permission_sets.items()}
    for name, (path, element) in metadata.layouts.items():
        _check_layout(name, path, element, objects)
    return Schema(objects.values(), stages=stages, multi_currency=multi_currency, currencies=currencies,
                  permission_sets=permission_sets)


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


__all__ = [
    "DEFAULT_CURRENCIES", "DEFAULT_METADATA_DIR", "DEFAULT_STAGES", "NS", "Access", "FieldDef", "FieldType",
    "Metadata", "ObjectDef", "Schema", "SchemaError", "Stage", "build_schema", "load_metadata",
]
