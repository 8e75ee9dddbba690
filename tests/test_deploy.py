"""What `azd up` and the deploy workflow rely on, checked without a network: azure.yaml points at the
template and the app, the app carries the tag azd deploys by, and the workflow checks the template
(bicep build, what-if) before it changes anything in Azure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent


def azure_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))


def test_azure_yaml_provisions_infra_and_deploys_this_folder_as_a_python_function_app() -> None:
    document = azure_yaml()
    infra = document["infra"]
    assert infra["provider"] == "bicep" and (ROOT / infra["path"] / f"{infra['module']}.bicep").is_file()
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
