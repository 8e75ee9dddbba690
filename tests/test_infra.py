"""infra/: the Bicep parses, sets every app setting the code reads, and keeps the security promises.

Parsed with pycep (a Python Bicep parser); no Azure, no Bicep CLI. The app settings are read from the
template's own `*Settings` variables (followed through `union(...)` and `cond ? {...} : {...}`), so a
setting a teammate adds to shared/settings.py fails here until the template sets it, or it is listed below
with the reason Azure does without it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser
from pydantic import SecretStr

from shared.keyvault import vault_secret_name
from shared.settings import Settings
from shared.store import FORWARD_QUEUE, OPPORTUNITY_QUEUE, REFERRAL_QUEUE

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"

# Settings the code reads that the template deliberately does not set, and why.
NOT_SET_IN_AZURE = {
    "COSELL_STORAGE": "the identity-based COSELL_STORAGE__* settings replace the connection string",
    "AZUREWEBJOBSSTORAGE": "the host's storage: AzureWebJobsStorage__accountName (Consumption: a connection string)",
    "PARTNER_CENTER_REFRESH_TOKEN": "kept in Key Vault and read live through COSELL_KEYVAULT_URL; a copy "
                                    "resolved at start-up would go stale at the next rotation",
    "PARTNER_CENTER_WEBHOOK_CA_BUNDLE": "sandbox only: extra trust roots for simulated webhook signatures",
    "COSELL_LOCAL_FUNCTION_KEY": "the local host only; in Azure the platform checks function keys",
    "WEBSITE_HOSTNAME": "set by the platform",
}
# Settings that only the platform or the Functions host reads.
PLATFORM = {
    "AzureWebJobsStorage", "AzureWebJobsStorage__accountName", "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    "PYTHON_THREADPOOL_THREAD_COUNT",
}
ROLE = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
}


@cache
def bicep(name: str) -> dict[str, Any]:
    return BicepParser().parse(file_path=INFRA / name)


def unquote(key: str) -> str:
    return key.strip("'")


def env_name(field: str) -> str:
    return field.upper()


def settings_in(node: Any, variables: dict[str, Any]) -> dict[str, Any]:
    """App settings (name -> value expression) an expression can yield, over every branch."""
    if isinstance(node, str) and node in variables:
        return settings_in(variables[node]["value"], variables)
    if not isinstance(node, dict):
        return {}
    if set(node) == {"function"}:
        function = node["function"]
        if function["type"] != "union":
            return {}
        merged: dict[str, Any] = {}
        for argument in function["parameters"].values():
            merged.update(settings_in(argument, variables))
        return merged
    if set(node) == {"operator"}:
        operator = node["operator"]
        if operator["type"] != "conditional":
            return {}
        operands = operator["operands"]
        return {**settings_in(operands["true_value"], variables), **settings_in(operands["false_value"], variables)}
    return {unquote(key): value for key, value in node.items()}


@cache
def app_settings() -> dict[str, Any]:
    main = bicep("main.bicep")
    assert main["modules"]["appSettings"]["config"]["params"]["settings"] == "allSettings"
    return settings_in("allSettings", main["variables"])


def app_setting_names_upper() -> set[str]:
    return {name.upper() for name in app_settings()}


def key_vault_secret_of(value: Any) -> str | None:
    """The secret name of a `keyVaultReference(vaultUri, secretNames.x)` value, else None."""
    if not (isinstance(value, dict) and value.get("function", {}).get("type") == "keyVaultReference"):
        return None
    accessor = value["function"]["parameters"]["arg_2"]["operator"]["operands"]
    assert accessor["operand_1"] == "secretNames"
    return bicep("main.bicep")["variables"]["secretNames"]["value"][accessor["operand_2"]]


def resources_of(name: str, kind: str) -> dict[str, dict[str, Any]]:
    return {symbol: resource for symbol, resource in bicep(name).get("resources", {}).items()
            if resource["type"] == kind}


def config_of(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's body; a conditional resource nests it one level down."""
    config = resource["config"]
    return config["config"] if "condition" in config and "config" in config else config


# --- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep")))
def test_every_bicep_file_parses(name: str) -> None:
    parsed = bicep(name)
    assert parsed.get("resources") or parsed.get("modules")


def test_every_module_main_uses_exists_and_every_resource_pins_a_stable_api_version() -> None:
    for module in bicep("main.bicep")["modules"].values():
        assert (INFRA / module["detail"]["path"]).is_file()
    for path in INFRA.rglob("*.bicep"):
        for symbol, resource in bicep(path.relative_to(INFRA).as_posix()).get("resources", {}).items():
            version = resource["api_version"]
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", version), (path.name, symbol, version)


def test_the_parameters_file_names_real_parameters_and_carries_no_secret() -> None:
    document = json.loads((INFRA / "main.parameters.json").read_text())
    parameters = bicep("main.bicep")["parameters"]
    assert set(document["parameters"]) <= set(parameters)
    secure = {name for name, p in parameters.items() if {"type": "secure"} in p["decorators"]}
    assert secure >= {"partnerCenterClientSecret", "partnerCenterRefreshToken", "salesforcePrivateKey",
                      "salesforceClientSecret", "salesforcePassword", "salesforceSecurityToken", "webhookFunctionKey"}
    assert not secure & set(document["parameters"])
    assert all(parameters[name].get("default") == "" for name in secure)


# --- app settings ------------------------------------------------------------------------------------


def test_every_setting_the_code_reads_is_set_by_the_template() -> None:
    in_template = app_setting_names_upper()
    needed = {env_name(field) for field in Settings.model_fields} - set(NOT_SET_IN_AZURE)
    assert needed <= in_template, f"set these in infra/main.bicep (or explain in NOT_SET_IN_AZURE): " \
                                  f"{sorted(needed - in_template)}"
    assert set(NOT_SET_IN_AZURE) <= {env_name(field) for field in Settings.model_fields}, \
        "NOT_SET_IN_AZURE names a setting the code no longer reads"


def test_the_template_sets_no_setting_that_nothing_reads() -> None:
    # Catches a typo (COSELL_SF_POL_SCHEDULE) that would leave the real setting at its default.
    known = {env_name(field) for field in Settings.model_fields} | {name.upper() for name in PLATFORM}
    assert app_setting_names_upper() <= known, app_setting_names_upper() - known


def test_the_host_and_the_triggers_find_their_settings() -> None:
    names = set(app_settings())
    # Host storage, identity-based except on Consumption.
    assert {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage"} <= names
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in names
    sources = "\n".join(path.read_text() for path in (ROOT / "shared" / "functions").glob("*.py"))
    # Timer schedules are resolved by the host from app settings ("%NAME%").
    for schedule in set(re.findall(r'"%(\w+)%"', sources)):
        assert schedule in names, schedule
    # Queue triggers' connections, identity-based: <CONNECTION>__queueServiceUri (or __accountName).
    for connection in set(re.findall(r'connection="(\w+)"', sources)):
        assert f"{connection}__queueServiceUri" in names or connection in names, connection


def test_flex_consumption_gets_no_runtime_settings_and_the_other_plans_do() -> None:
    plan = bicep("main.bicep")["variables"]["planSettings"]["value"]["operator"]
    assert plan["type"] == "conditional" and plan["operands"]["condition"] == "isFlex"
    assert plan["operands"]["true_value"] == {}
    other = plan["operands"]["false_value"]
    assert other["FUNCTIONS_WORKER_RUNTIME"] == "python" and other["FUNCTIONS_EXTENSION_VERSION"] == "~4"
    # The worker's thread pool sized for I/O-bound syncs, as local.settings.example.json and the sandbox set it.
    local = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert unquote(other["PYTHON_THREADPOOL_THREAD_COUNT"]) == local["PYTHON_THREADPOOL_THREAD_COUNT"] == "16"


def test_secrets_reach_the_app_only_as_key_vault_references() -> None:
    settings = app_settings()
    secret_fields = {env_name(name) for name, field in Settings.model_fields.items()
                     if field.annotation is not None and SecretStr in getattr(field.annotation, "__args__", ())}
    referenced = {}
    for name, value in settings.items():
        # Linux Consumption only: Core Tools publishes there through a SAS it makes from this connection
        # string, so it must be the real string; Flex Consumption and Premium use the identity instead.
        if name.upper() in secret_fields and name != "AzureWebJobsStorage":
            secret = key_vault_secret_of(value)
            assert secret is not None, f"{name} must be a Key Vault reference, not a value"
            referenced[name] = secret
    assert set(referenced) >= {"PARTNER_CENTER_CLIENT_SECRET", "SALESFORCE_PRIVATE_KEY", "SALESFORCE_CLIENT_SECRET",
                               "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "COSELL_WEBHOOK_FUNCTION_KEY"}
    # Secret names follow shared/keyvault.py's mapping, so the code and the references agree.
    for name, secret in referenced.items():
        assert secret == vault_secret_name(name)


def test_the_key_vault_reference_shape_is_the_one_app_service_resolves() -> None:
    function = bicep("main.bicep")["functions"]["keyVaultReference"]
    assert function["expression"] == "@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/${secretName}/)"
    # An unresolved reference reaches the code as this text; settings read it as unset.
    assert function["expression"].startswith("@Microsoft.KeyVault(")


def test_every_referenced_secret_can_be_written_by_the_key_vault_module() -> None:
    names = bicep("main.bicep")["variables"]["secretNames"]["value"]
    keyvault = bicep("modules/keyvault.bicep")
    passed = bicep("main.bicep")["modules"]["keyVault"]["config"]["params"]
    created = {}
    for symbol, resource in resources_of("modules/keyvault.bicep", "Microsoft.KeyVault/vaults/secrets").items():
        body = config_of(resource)
        parameter = body["name"]
        assert parameter in keyvault["parameters"] and {"type": "secure"} in \
            keyvault["parameters"][body["properties"]["value"]]["decorators"], symbol
        created[names[passed[parameter]["operator"]["operands"]["operand_2"]]] = symbol
        # Written only when given, so a later deployment never overwrites a rotated value.
        assert resource["config"]["condition"]["operator"]["type"] == "not"
    assert set(names.values()) == set(created)
    assert all(vault_secret_name(name) == name for name in names.values())


def test_the_rotation_writes_to_the_secret_the_template_creates() -> None:
    from shared.partner_center.token import REFRESH_TOKEN_SECRET

    names = bicep("main.bicep")["variables"]["secretNames"]["value"]
    assert vault_secret_name(REFRESH_TOKEN_SECRET) == names["partnerCenterRefreshToken"]
    roles = bicep("main.bicep")["modules"]["roles"]["config"]["params"]
    assert roles["refreshTokenSecretName"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "secretNames", "operand_2": "partnerCenterRefreshToken"}}}
    assert app_settings()["COSELL_KEYVAULT_URL"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "keyVault", "operand_2": {"operator": {"type": "property_accessor", "operands": {
            "operand_1": "outputs", "operand_2": "uri"}}}}}}


# --- security ----------------------------------------------------------------------------------------


def test_the_function_app_is_https_only_tls12_no_ftp_no_basic_auth_and_has_an_identity() -> None:
    (site,) = resources_of("modules/functionapp.bicep", "Microsoft.Web/sites").values()
    body = site["config"]
    assert body["kind"] == "functionapp,linux"
    assert body["identity"] == {"type": "SystemAssigned"}
    properties = body["properties"]
    assert properties["httpsOnly"] is True
    assert properties["siteConfig"]["minTlsVersion"] == "1.2"
    assert properties["siteConfig"]["scmMinTlsVersion"] == "1.2"
    assert properties["siteConfig"]["ftpsState"] == "Disabled"
    policies = resources_of("modules/functionapp.bicep", "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {p["config"]["name"]: p["config"]["properties"]["allow"] for p in policies.values()} == \
        {"ftp": False, "scm": False}


def test_python_311_on_every_plan() -> None:
    (site,) = resources_of("modules/functionapp.bicep", "Microsoft.Web/sites").values()
    properties = site["config"]["properties"]
    flex = properties["functionAppConfig"]["operator"]["operands"]
    assert flex["condition"] == "isFlex"
    assert flex["true_value"]["runtime"] == {"name": "python", "version": "3.11"}
    assert flex["true_value"]["deployment"]["storage"]["authentication"] == {"type": "SystemAssignedIdentity"}
    linux = properties["siteConfig"]["linuxFxVersion"]["operator"]["operands"]
    assert linux["condition"] == "isFlex" and linux["false_value"] == "Python|3.11"
    plan = bicep("modules/functionapp.bicep")["variables"]["planSku"]["value"]["operator"]["operands"]
    assert plan["true_value"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert bicep("main.bicep")["parameters"]["planType"]["default"] == "FlexConsumption"


def test_storage_takes_no_shared_key_where_managed_identity_works() -> None:
    (storage,) = resources_of("main.bicep", "Microsoft.Storage/storageAccounts").values()
    properties = storage["config"]["properties"]
    # Off on Flex Consumption; Premium/Consumption mount their content share with a key.
    assert properties["allowSharedKeyAccess"] == {"operator": {"type": "not", "operands": {"bool_value": "isFlex"}}}
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True
    assert properties["allowBlobPublicAccess"] is False
    assert properties["defaultToOAuthAuthentication"] is True


def test_the_vault_uses_rbac_only() -> None:
    (vault,) = resources_of("modules/keyvault.bicep", "Microsoft.KeyVault/vaults").values()
    properties = vault["config"]["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert "accessPolicies" not in properties


def test_the_identity_gets_exactly_the_least_roles() -> None:
    role_ids = bicep("modules/roles.bicep")["variables"]
    by_variable = {name: ROLE[var["value"]] for name, var in role_ids.items()
                   if isinstance(var["value"], str) and var["value"] in ROLE}
    assignments = resources_of("modules/roles.bicep", "Microsoft.Authorization/roleAssignments")
    granted: list[tuple[str, str]] = []
    for symbol, assignment in assignments.items():
        config = assignment["config"]
        body = config["config"] if "config" in config else config
        role_argument = body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        principal = body["properties"]["principalId"]
        if principal != "principalId":
            continue  # the optional operator grant, not the app's identity
        if "loop_type" in config:
            roles = bicep("modules/roles.bicep")["variables"][config["loop_type"]["detail"]["array_name"]]["value"]
            granted += [(by_variable[role], body["scope"]) for role in roles]
        else:
            granted.append((by_variable[role_argument], body["scope"]))
    assert sorted(granted) == sorted([
        ("Storage Blob Data Owner", "storage"),
        ("Storage Queue Data Contributor", "storage"),
        ("Storage Table Data Contributor", "storage"),
        ("Key Vault Secrets User", "vault"),
        ("Key Vault Secrets Officer", "refreshTokenSecret"),
    ])
    secret = bicep("modules/roles.bicep")["resources"]["refreshTokenSecret"]
    assert secret["existing"] is True and secret["config"]["name"] == "refreshTokenSecretName"


def test_the_queues_the_template_creates_are_the_connectors() -> None:
    queues = bicep("main.bicep")["variables"]["connectorQueues"]["value"]
    assert set(queues) == {REFERRAL_QUEUE, OPPORTUNITY_QUEUE, FORWARD_QUEUE}


def test_telemetry_reaches_application_insights_with_custom_dimensions() -> None:
    settings = app_settings()
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    workspace = resources_of("modules/monitoring.bicep", "Microsoft.Insights/components")
    (insights,) = workspace.values()
    assert insights["config"]["properties"]["WorkspaceResourceId"] == {"operator": {
        "type": "property_accessor", "operands": {"operand_1": "workspace", "operand_2": "id"}}}


def test_the_deploy_workflow_tests_first_then_deploys_with_oidc() -> None:
    workflow = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert "id-token: write" in workflow
    assert re.search(r"^\s+needs:\s*test\s*$", workflow, re.MULTILINE)
    assert "make test" in workflow
    assert "azure/login@" in workflow and "client-id:" in workflow and "client-secret" not in workflow
    assert "az deployment group create" in workflow and "-f infra/main.bicep" in workflow
    assert "func azure functionapp publish" in workflow
