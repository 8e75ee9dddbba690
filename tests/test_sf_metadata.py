"""The Salesforce DX metadata in salesforce/: well-formed, deployable, and what the handbook asks for.

Salesforce refuses a metadata file whose elements are out of the WSDL's order ("Element ... invalid at this
location"), so order is checked too. The simulator builds its schema from the same files, so a broken file
also fails `build_schema` with the file named; those refusals are tested here on damaged copies.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.sf_schema import NS, SchemaError, build_schema
from shared.models.referral import AssistanceRequestCode

ROOT = Path(__file__).resolve().parent.parent / "salesforce"
SOURCE = ROOT / "force-app"
DEFAULT = SOURCE / "main" / "default"
Q = "{" + NS + "}"
SUFFIXES = {".field-meta.xml": "CustomField", ".object-meta.xml": "CustomObject",
            ".permissionset-meta.xml": "PermissionSet", ".layout-meta.xml": "Layout", ".flow-meta.xml": "Flow",
            ".workflow-meta.xml": "Workflow"}
FLOW_NODE_FIELDS = ("description", "name", "label", "locationX", "locationY")
"""A Flow element's inherited fields (FlowElement, FlowNode), which Salesforce writes before its own."""
XML_FILES = sorted(SOURCE.rglob("*.xml"))


def _tag(element: ET.Element) -> str:
    return element.tag.removeprefix(Q)


def _field(obj: str, name: str) -> ET.Element:
    return ET.parse(DEFAULT / "objects" / obj / "fields" / f"{name}.field-meta.xml").getroot()


def _text(element: ET.Element, tag: str) -> str | None:
    child = element.find(Q + tag)
    return None if child is None else child.text


def test_the_project_file_points_at_the_source() -> None:
    project = json.loads((ROOT / "sfdx-project.json").read_text())
    assert re.fullmatch(r"\d+\.0", project["sourceApiVersion"])
    paths = [d["path"] for d in project["packageDirectories"]]
    assert paths == ["force-app"] and (ROOT / paths[0]).is_dir()
    assert [d for d in project["packageDirectories"] if d.get("default")]


@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: p.name)
def test_every_file_is_well_formed_metadata_of_its_type(path: Path) -> None:
    root = ET.parse(path).getroot()  # raises on malformed XML
    suffix = next(s for s in SUFFIXES if path.name.endswith(s))
    assert root.tag == Q + SUFFIXES[suffix]
    assert path.read_text(encoding="utf-8").startswith('<?xml version="1.0" encoding="UTF-8"?>')
    full_name = _text(root, "fullName")
    if full_name is not None:
        assert full_name == path.name.removesuffix(suffix)


@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: p.name)
def test_elements_follow_the_wsdl_order(path: Path) -> None:
    """The Metadata API types used here list fullName first, then their fields alphabetically; a Flow's
    elements (actionCalls, start) list their inherited fields first (name, label, locationX, locationY)."""
    flow = path.name.endswith(".flow-meta.xml")
    for parent in ET.parse(path).getroot().iter():
        tags = [_tag(child) for child in parent]
        inherited = flow and _tag(parent) in ("actionCalls", "start")
        keys = [(tag != "fullName", FLOW_NODE_FIELDS.index(tag) if inherited and tag in FLOW_NODE_FIELDS else 9, tag)
                for tag in tags]
        assert keys == sorted(keys), f"{path.name}: children of <{_tag(parent)}> out of order: {tags}"


def test_opportunity_fields_have_microsofts_names_and_types() -> None:
    sync = _field("Opportunity", "Sync_with_Partner_Center__c")
    assert _text(sync, "type") == "Checkbox" and _text(sync, "defaultValue") == "false"
    referral = _field("Opportunity", "Referral_Identifier__c")
    assert (_text(referral, "type"), _text(referral, "length")) == ("Text", "100")
    assert _text(referral, "externalId") == "true" and _text(referral, "unique") == "true"
    assert _text(_field("Opportunity", "Referral_Link__c"), "type") == "Url"
    assert _text(_field("Opportunity", "Audit__c"), "type") == "LongTextArea"
    helper = _field("Opportunity", "How_can_Microsoft_help__c")
    assert _text(helper, "type") == "Picklist"
    assert helper.find(f"{Q}valueSet/{Q}restricted").text == "true"  # type: ignore[union-attr]
    values = [v.text for v in helper.iter(Q + "fullName") if v.text != "How_can_Microsoft_help__c"]
    assert sorted(values) == sorted(code.value for code in AssistanceRequestCode)


def test_solutions_object_is_a_detail_of_opportunity() -> None:
    link = _field("Microsoft_Solution__c", "Opportunity__c")
    assert _text(link, "type") == "MasterDetail" and _text(link, "referenceTo") == "Opportunity"
    assert _text(link, "relationshipName") == "Microsoft_Solutions"
    obj = ET.parse(DEFAULT / "objects" / "Microsoft_Solution__c" / "Microsoft_Solution__c.object-meta.xml").getroot()
    assert _text(obj, "sharingModel") == "ControlledByParent"
    assert _text(obj, "pluralLabel") == "Microsoft Partner Center Solutions"


def test_check_mark_shows_only_for_a_linked_and_synced_opportunity() -> None:
    formula = build_schema().objects["Opportunity"].fields["Partner_Center_Synced__c"].formula
    assert formula is not None
    linked = {"Referral_Identifier__c": "3a2b"}
    assert formula.evaluate({**linked, "Partner_Center_Sync_Status__c": "Synced"}) == "✔"
    assert formula.evaluate({**linked, "Partner_Center_Sync_Status__c": "Error"}) is None
    assert formula.evaluate({"Referral_Identifier__c": None, "Partner_Center_Sync_Status__c": "Synced"}) is None
    assert formula.evaluate({**linked, "Partner_Center_Sync_Status__c": None}) is None


def test_permission_set_covers_every_custom_field_the_connector_touches() -> None:
    schema = build_schema()
    granted = schema.permission_sets["Partner_Center_Co_sell_Integration"]
    for obj in (schema.objects["Opportunity"], schema.objects["Microsoft_Solution__c"]):
        for definition in obj.fields.values():
            if not definition.custom or definition.required:
                continue
            readable, editable = granted.fields[f"{obj.name}.{definition.name}"]
            assert readable and editable == (not definition.calculated), definition.name
    assert granted.objects["Opportunity"].modify_all and granted.objects["Microsoft_Solution__c"].delete
    assert not granted.objects["Account"].delete
    assert "ApiEnabled" in granted.user_permissions


def test_layout_shows_every_opportunity_custom_field_and_the_solutions() -> None:
    layout = ET.parse(DEFAULT / "layouts" / "Opportunity-Partner Center Co-sell Layout.layout-meta.xml").getroot()
    placed = {item.findtext(Q + "field") for item in layout.iter(Q + "layoutItems")}
    custom = {p.name.removesuffix(".field-meta.xml") for p in (DEFAULT / "objects" / "Opportunity" / "fields").iterdir()}
    assert custom <= placed
    section = next(s for s in layout.iter(Q + "layoutSections") if s.findtext(Q + "label") == "Microsoft Partner Center")
    in_section = {item.findtext(Q + "field") for item in section.iter(Q + "layoutItems")}
    assert {"Sync_with_Partner_Center__c", "Referral_Identifier__c", "Referral_Link__c", "How_can_Microsoft_help__c",
            "Partner_Center_Synced__c"} <= in_section
    related = [r.findtext(Q + "relatedList") for r in layout.iter(Q + "relatedLists")]
    assert "Microsoft_Solution__c.Opportunity__c" in related and "RelatedNoteList" in related


def _flow(name: str) -> ET.Element:
    return ET.parse(DEFAULT / "flows" / f"{name}.flow-meta.xml").getroot()


def _outbound_message(sobject: str) -> ET.Element:
    root = ET.parse(DEFAULT / "workflows" / f"{sobject}.workflow-meta.xml").getroot()
    (message,) = root.findall(Q + "outboundMessages")
    return message


def test_flows_push_synced_opportunities_and_solution_rows_as_outbound_messages() -> None:
    """Record-triggered, after save, on create and update, each calling the outbound message of its object;
    the opportunity flow selects what the poll selects (opted in, or linked to a referral)."""
    from sandbox.sf_outbound import load_triggers
    from shared.mapping import Mapping
    from shared.settings import APP_ROOT

    for name, sobject in (("Partner_Center_Opportunity_Push", "Opportunity"),
                          ("Partner_Center_Solution_Push", "Microsoft_Solution__c")):
        flow = _flow(name)
        start = flow.find(Q + "start")
        assert (_text(flow, "processType"), _text(flow, "status")) == ("AutoLaunchedFlow", "Active")
        assert (_text(start, "object"), _text(start, "triggerType"), _text(start, "recordTriggerType")) == (
            sobject, "RecordAfterSave", "CreateAndUpdate")
        (call,) = flow.findall(Q + "actionCalls")
        message = _outbound_message(sobject)
        assert _text(call, "actionType") == "outboundMessage"
        assert _text(call, "actionName") == _text(call, "nameSegment") == f"{sobject}.{_text(message, 'fullName')}"
        assert start.find(f"{Q}connector/{Q}targetReference").text == _text(call, "name")  # type: ignore[union-attr]
    mapping = Mapping.load(APP_ROOT / "mappings" / "salesforce.json")
    opportunity = next(t for t in load_triggers(build_schema()) if t.sobject == "Opportunity")
    assert opportunity.any_filter and {(f.field, f.operator, f.value) for f in opportunity.filters} == {
        (mapping.own_fields.opt_in, "EqualTo", True), (mapping.own_fields.referral_id, "IsNull", False)}


def test_outbound_messages_send_ids_only_without_a_session_to_the_replaced_endpoint() -> None:
    project = json.loads((ROOT / "sfdx-project.json").read_text())
    replaced = {r["stringToReplace"]: r["replaceWithEnv"] for r in project["replacements"]
                if r["glob"] == "force-app/main/default/workflows/*.workflow-meta.xml"}
    for sobject, fields in (("Opportunity", ["Id"]), ("Microsoft_Solution__c", ["Id", "Opportunity__c"])):
        message = _outbound_message(sobject)
        assert [f.text for f in message.findall(Q + "fields")] == fields
        assert _text(message, "includeSessionId") == "false" and _text(message, "protected") == "false"
        assert replaced[_text(message, "endpointUrl")] == "COSELL_OUTBOUND_URL"
        assert replaced[_text(message, "integrationUser")] == "COSELL_SF_INTEGRATION_USER"
        assert _text(message, "endpointUrl").startswith("https://")  # type: ignore[union-attr]
        assert _text(message, "apiVersion") == project["sourceApiVersion"]


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "force-app"
    shutil.copytree(SOURCE, target)
    return target


def _edit(relative: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "main" / "default" / relative
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return apply


PERMSET = "permissionsets/Partner_Center_Co_sell_Integration.permissionset-meta.xml"
LAYOUT = "layouts/Opportunity-Partner Center Co-sell Layout.layout-meta.xml"


@pytest.mark.parametrize("damage, message", [
    (_edit(PERMSET, "<field>Opportunity.Audit__c</field>", "<field>Opportunity.Audit_Trail__c</field>"),
     "which the org does not have"),
    (_edit(PERMSET, "<field>Opportunity.Audit__c</field>", "<field>Microsoft_Solution__c.Solution_Id__c</field>"),
     "required or master-detail"),
    (_edit("objects/Opportunity/fields/Partner_Center_Synced__c.field-meta.xml", "ISBLANK(Referral_Identifier__c)",
           "ISBLANK(Referral_Id__c)"), "no field 'Referral_Id__c'"),
    (_edit("objects/Opportunity/fields/Partner_Center_Synced__c.field-meta.xml", "ISPICKVAL", "REGEX"),
     "function REGEX is not supported"),
    (_edit(LAYOUT, "<field>Referral_Link__c</field>", "<field>Referral_Url__c</field>"), "Referral_Url__c"),
    (_edit("objects/Opportunity/fields/Audit__c.field-meta.xml", "<type>LongTextArea</type>",
           "<type>EncryptedText</type>"), "not modelled"),
    (_edit("objects/Opportunity/fields/Audit__c.field-meta.xml", "</CustomField>", "<CustomField>"),
     "not well-formed"),
    (_edit("objects/Opportunity/fields/Audit__c.field-meta.xml", 'xmlns="http://soap.sforce.com/2006/04/metadata"',
           ""), "root element"),
])
def test_schema_build_refuses_broken_metadata(tmp_path: Path, damage: Callable[[Path], None], message: str) -> None:
    root = _copy(tmp_path)
    damage(root)
    with pytest.raises(SchemaError, match=re.escape(message)):
        build_schema(root)


FLOW = "flows/Partner_Center_Opportunity_Push.flow-meta.xml"


@pytest.mark.parametrize("damage, message", [
    (_edit(FLOW, "<actionName>Opportunity.Partner_Center_Opportunity_Changed</actionName>",
           "<actionName>Opportunity.Partner_Center_Missing</actionName>"), "is not an outbound message on Opportunity"),
    (_edit(FLOW, "<field>Referral_Identifier__c</field>", "<field>Referral_Id__c</field>"),
     "unknown field Opportunity.Referral_Id__c"),
    (_edit("workflows/Microsoft_Solution__c.workflow-meta.xml", "<fields>Opportunity__c</fields>",
           "<fields>Parent__c</fields>"), "unknown: Parent__c"),
])
def test_simulator_refuses_flows_and_messages_salesforce_would_refuse(
        tmp_path: Path, damage: Callable[[Path], None], message: str) -> None:
    from sandbox.sf_outbound import load_triggers

    root = _copy(tmp_path)
    damage(root)
    with pytest.raises(SchemaError, match=re.escape(message)):
        load_triggers(build_schema(root), root)


def test_readme_explains_the_deploy_and_the_client_app() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "sf project deploy start" in readme and "--source-dir force-app" in readme
    assert "External Client App" in readme and "JWT" in readme
    assert "Partner_Center_Co_sell_Integration" in readme
