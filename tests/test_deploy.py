"""What `azd up` and the deploy workflow rely on, checked without a network: azure.yaml points at the
template and the app, the azd entry point hands the azd environment to main.bicep without changing a default,
the app carries the tag azd deploys by, and the workflow checks the template (bicep build, what-if) before it
changes anything in Azure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import json
import re

import yaml
from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"


def azure_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))


def bicep(name: str) -> dict[str, Any]:
    return BicepParser().parse(file_path=INFRA / name)


def test_azure_yaml_provisions_infra_and_deploys_this_folder_as_a_python_function_app() -> None:
    document = azure_yaml()
    infra = document["infra"]
    assert infra["provider"] == "bicep" and infra["path"] == "infra" and infra["module"] == "azd"
    # azd reads <module>.parameters.json beside <module>.bicep.
    assert (INFRA / "azd.bicep").is_file() and (INFRA / "azd.parameters.json").is_file()
    [(name, service)] = document["services"].items()
    assert (service["host"], service["language"]) == ("function", "python")
    project = ROOT / service["project"]
    assert (project / "function_app.py").is_file() and (project / "host.json").is_file()
    assert (project / "requirements.txt").is_file()  # what the platform's remote build installs


def test_the_function_app_and_only_it_carries_the_service_tag_azd_deploys_to() -> None:
    [service] = azure_yaml()["services"]
    main = BicepParser().parse(file_path=ROOT / "infra" / "main.bicep")
    assert main["modules"]["functionApp"]["config"]["params"]["azdServiceName"] == service
    module = (ROOT / "infra" / "modules" / "functionapp.bicep").read_text(encoding="utf-8")
    assert module.count("'azd-service-name': azdServiceName") == 1  # azd refuses two resources with the tag
    site = module.split("resource site ", 1)[1].split("\nresource ", 1)[0]
    assert "'azd-service-name': azdServiceName" in site


def test_the_workflow_builds_the_bicep_and_runs_what_if_before_it_deploys() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text(encoding="utf-8"))
    scripts = [step.get("run", "") for step in workflow["jobs"]["deploy"]["steps"]]

    def first(command: str) -> int:
        return next(i for i, script in enumerate(scripts) if command in script)

    build, what_if = first("az bicep build --file infra/main.bicep"), first("az deployment group what-if")
    deploy, publish = first("az deployment group create"), first("func azure functionapp publish")
    assert build <= what_if < deploy < publish
    assert "-f infra/main.bicep -p infra/main.parameters.json" in scripts[what_if]
    # what-if must see the same parameters the deployment gets, or it checks another template.
    assert scripts[what_if].split("-f infra/main.bicep", 1)[1].strip() == \
        scripts[deploy].split("-f infra/main.bicep", 1)[1].split("--query", 1)[0].strip().rstrip("\\").strip()


def test_the_azd_entry_point_deploys_main_bicep_with_its_own_defaults() -> None:
    # azd leaves out a parameter whose variable is unset: the entry point's default then applies, and it must be
    # main.bicep's, or `azd up` would deploy another connector than `az deployment group create`.
    azd, main = bicep("azd.bicep"), bicep("main.bicep")
    [module] = azd["modules"].values()
    assert module["detail"]["path"] == "main.bicep"
    assert module["config"]["params"] == {name: name for name in azd["parameters"]}
    for name, parameter in azd["parameters"].items():
        assert (parameter["type"], parameter.get("default")) == \
            (main["parameters"][name]["type"], main["parameters"][name].get("default")), name
    for name, output in azd["outputs"].items():
        accessor = output["value"]["operator"]["operands"]
        assert accessor["operand_1"] == "connector", name
        assert accessor["operand_2"]["operator"]["operands"]["operand_2"] in main["outputs"], name
    assert "AZURE_FUNCTION_NAME" in azd["outputs"]


def test_azd_parameters_come_from_the_environment_and_never_carry_a_secret() -> None:
    document = json.loads((INFRA / "azd.parameters.json").read_text(encoding="utf-8"))
    azd, main = bicep("azd.bicep"), bicep("main.bicep")
    variables = {}
    for name, entry in document["parameters"].items():
        match = re.fullmatch(r"\$\{([A-Z][A-Z0-9_]*)\}", entry["value"])
        assert match, (name, entry)
        variables[name] = match.group(1)
    assert set(variables) == set(azd["parameters"])
    secure = {name for name, p in main["parameters"].items() if {"type": "secure"} in p["decorators"]}
    assert not secure & set(variables)
    # azd gives the signed-in user's object id: they may then set the vault's secrets by hand.
    assert variables["secretsOperatorPrincipalId"] == "AZURE_PRINCIPAL_ID"
    # A parameter that becomes an app setting unchanged is set with the app setting's own name.
    settings = {value: key.strip("'") for group in ("partnerCenterSettings", "salesforceSettings")
                for key, value in main["variables"][group]["value"].items() if isinstance(value, str)}
    same = {name: settings[name] for name in variables if name in settings}
    assert len(same) >= 6 and all(variables[name] == setting for name, setting in same.items()), same


def test_flex_consumption_config_has_the_shape_of_microsofts_reference() -> None:
    # Azure-Samples/functions-quickstart-python-http-azd infra/app/api.bicep (infra/README.md): the package in a
    # blob container of the app's own storage account, read with the app's identity; scale from parameters.
    module = bicep("modules/functionapp.bicep")
    config = module["resources"]["site"]["config"]["properties"]["functionAppConfig"]["operator"]["operands"]
    flex = config["true_value"]
    assert flex["deployment"]["storage"] == {"type": "blobContainer", "value": "deploymentContainerUrl",
                                             "authentication": {"type": "SystemAssignedIdentity"}}
    assert module["resources"]["site"]["config"]["identity"] == {"type": "SystemAssigned"}
    assert flex["scaleAndConcurrency"] == {"maximumInstanceCount": "flexMaximumInstanceCount",
                                           "instanceMemoryMB": "flexInstanceMemoryMB"}
    main = bicep("main.bicep")
    assert main["modules"]["functionApp"]["config"]["params"]["deploymentContainerUrl"] == \
        "${storage.properties.primaryEndpoints.blob}${deploymentContainerName}"
    container = main["resources"]["deploymentContainer"]["config"]
    assert container["condition"] == "isFlex" and container["config"]["name"] == "deploymentContainerName"
    assert container["config"]["parent"] == "blobService"
    assert main["parameters"]["flexInstanceMemoryMB"]["default"] == 2048
