"""The app as the real Azure Functions runtime sees it: indexed the way the Python worker indexes it, every
binding checked against the host's rules, with the settings infra/ writes; and bad apps refused by these
rules and by the local host alike.

Why it matters: on Azure a refused function is only a "function error" in the host's log; the app deploys,
the rest runs, and nothing syncs on that path. Here it fails a test instead.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import function_app
from sandbox import host_rules
from sandbox.host import FunctionHost
from sandbox.host_config import HOST_JSON_SCHEMA, HostConfig, host_json_problem
from sandbox.host_index import REFUSED
from sandbox.host_rules import FunctionMetadata
from shared.errors import ConfigError
from tests.test_infra import app_settings, bicep

ROOT = Path(__file__).resolve().parent.parent


def functions_of(app: func.FunctionApp) -> list[FunctionMetadata]:
    return host_rules.metadata(app.get_functions())


def the_app() -> list[FunctionMetadata]:
    """The real app, found and indexed as the worker does (a fresh FunctionApp: get_functions() runs once)."""
    module = types.ModuleType("function_app_copy")
    module.app = func.FunctionApp()
    for blueprint in function_app.BLUEPRINTS:
        module.app.register_functions(blueprint)
    return host_rules.metadata(host_rules.find_app(module).get_functions())


COMPUTED = "<computed in Azure>"


def bicep_values(node: Any, parameters: dict[str, Any], *, guarded: bool = False) -> list[str]:
    """Every value an app setting's Bicep expression can take: a literal; a parameter (main.parameters.json,
    else its default); each branch of a condition (an empty parameter there is skipped: the branches guard
    with `!empty(...)`); nothing for what Azure computes (a URI, a Key Vault reference)."""
    if isinstance(node, str):
        value = parameters.get(node, node)
        return [] if guarded and not value else [value] if isinstance(value, str) else []
    operator = node.get("operator", {}) if isinstance(node, dict) else {}
    if operator.get("type") == "conditional":
        operands = operator["operands"]
        return [*bicep_values(operands["true_value"], parameters, guarded=True),
                *bicep_values(operands["false_value"], parameters, guarded=True)]
    if operator.get("type") == "not":  # pycep reads `!empty(x) ? a : b` as `!(empty(x) ? a : b)`
        return bicep_values(operator["operands"]["bool_value"], parameters, guarded=guarded)
    return []


def azure_settings_variants() -> list[dict[str, str]]:
    """The app settings infra/main.bicep writes, once per value a setting can take (the others at their
    first), with anything computed in Azure as set."""
    main = bicep("main.bicep")
    overrides = {name: p["value"] for name, p in
                 json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"].items()}
    parameters = {name: overrides.get(name, p.get("default")) for name, p in main["parameters"].items()}
    values = {name: bicep_values(expression, parameters) or [COMPUTED] for name, expression in app_settings().items()}
    first = {name: options[0] for name, options in values.items()}
    return [first] + [{**first, name: option} for name, options in values.items() for option in options[1:]]


def azure_settings() -> dict[str, str]:
    return azure_settings_variants()[0]


def host_json() -> dict[str, Any]:
    return json.loads((ROOT / "host.json").read_text())


def route_prefix() -> str:
    return host_json()["extensions"]["http"]["routePrefix"]


# --- the real app --------------------------------------------------------------------------------------------


def test_function_app_py_holds_exactly_one_app_as_the_worker_requires() -> None:
    assert host_rules.find_app(function_app) is function_app.app
    two = types.ModuleType("two_apps")
    two.app, two.other = func.FunctionApp(), func.FunctionApp()
    with pytest.raises(ValueError, match="More than one FunctionApp"):
        host_rules.find_app(two)
    with pytest.raises(ValueError, match="Could not find top level function app"):
        host_rules.find_app(types.ModuleType("no_app"))


def test_every_function_and_binding_passes_the_worker_and_the_host() -> None:
    functions = the_app()
    assert {f.name for f in functions} >= {"health", "partner_center_events", "salesforce_poll",
                                           "partner_center_reconcile", "salesforce_opportunity_changes"}
    assert host_rules.problems(functions, route_prefix=route_prefix()) == []


def test_every_binding_resolves_with_the_app_settings_infra_writes() -> None:
    # Schedules (%COSELL_SF_POLL_SCHEDULE%, ...) resolve to valid NCRONTAB in every branch the Bicep can take
    # (push on or off, a schedule given or not); queue connections find their identity-based settings.
    functions = the_app()
    variants = azure_settings_variants()
    assert {v["COSELL_SF_POLL_SCHEDULE"] for v in variants} == {"0 */1 * * * *", "0 */15 * * * *"}
    for settings in variants:
        assert host_rules.problems(functions, settings, route_prefix=route_prefix()) == []
    timers = [f for f in functions if f.trigger and f.trigger["type"] == host_rules.TIMER_TRIGGER]
    assert timers and all(f.trigger and f.trigger["schedule"].startswith("%") for f in timers)
    queues = [f for f in functions if f.trigger and f.trigger["type"] == host_rules.QUEUE_TRIGGER]
    assert queues and all(f.trigger and f.trigger["connection"] == "COSELL_STORAGE" for f in queues)
    assert variants[0]["COSELL_STORAGE__queueServiceUri"] == COMPUTED and "COSELL_STORAGE" not in variants[0]


def test_the_local_settings_example_runs_under_func_start() -> None:
    # Core Tools' host resolves connections like Azure: COSELL_STORAGE empty would stop the queue triggers.
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert host_rules.problems(the_app(), values) == []


def test_a_setting_infra_forgets_is_what_the_host_refuses() -> None:
    functions = the_app()
    settings = azure_settings()
    del settings["COSELL_SF_POLL_SCHEDULE"]
    for suffix in host_rules.QUEUE_IDENTITY_SUFFIXES:
        settings.pop("COSELL_STORAGE" + suffix, None)
    found = host_rules.problems(functions, settings)
    assert ("function salesforce_poll: '%COSELL_SF_POLL_SCHEDULE%' in the schedule does not resolve to a value: "
            "set app setting COSELL_SF_POLL_SCHEDULE") in found
    # No fallback to AzureWebJobsStorage: a queue trigger's connection must be set under its own name.
    assert settings.get("AzureWebJobsStorage__accountName")
    assert sum("storage connection 'COSELL_STORAGE' is not set" in p for p in found) == 3


@pytest.mark.parametrize(("settings", "ok"), [
    ({"COSELL_STORAGE": "UseDevelopmentStorage=true"}, True),
    ({"AzureWebJobsCOSELL_STORAGE": "UseDevelopmentStorage=true"}, True),
    ({"COSELL_STORAGE__queueServiceUri": "https://x.queue.core.windows.net"}, True),
    ({"COSELL_STORAGE__accountName": "x"}, True),
    ({"COSELL_STORAGE": "", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}, False),
    ({"COSELL_STORAGE__tableServiceUri": "https://x.table.core.windows.net"}, False),
])
def test_a_queue_connection_is_found_only_where_the_host_looks(settings: dict[str, str], ok: bool) -> None:
    assert host_rules.storage_connection_is_set("COSELL_STORAGE", settings) is ok


@pytest.mark.parametrize(("schedule", "problem"), [
    ("0 */1 * * * *", None),
    ("0 */5 * * *", "has 5 fields"),
    ("00:05:00", "has 1 fields"),  # a TimeSpan: App Service plans only, not (Flex) Consumption
])
def test_a_schedule_setting_must_be_six_field_ncrontab(schedule: str, problem: str | None) -> None:
    found = host_rules.problems(the_app(), {**azure_settings(), "COSELL_PC_RECONCILE_SCHEDULE": schedule})
    if problem is None:
        assert found == []
    else:
        (only,) = found
        assert only.startswith(f"function partner_center_reconcile: schedule '{schedule}' {problem}")
        assert only.endswith("(from %COSELL_PC_RECONCILE_SCHEDULE%)")


# --- bad apps: refused by the rules and by the local host, with the same sentence ------------------------------


def _bad_apps() -> list[tuple[str, Callable[[], func.FunctionApp], str]]:
    def underscore() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.route(route="a", trigger_arg_name="http_req")
        def handler(http_req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse()
        return app

    def reserved_route() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.route(route="admin/reset")
        def reset(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse()
        return app

    def broken_template() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.route(route="items//{id}")
        def items(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse()
        return app

    def same_route_same_method() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.route(route="Things", methods=["GET", "POST"])
        def one(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse()

        @app.route(route="things/", methods=["POST"])
        def two(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse()
        return app

    def leading_slash() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.route(route="/things")  # under routePrefix "api" the host parses "api//things"
        def things(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse()
        return app

    def extra_parameter() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.route(route="a")
        def handler(req: func.HttpRequest, tenant: str) -> func.HttpResponse:
            return func.HttpResponse()
        return app

    def wrong_annotation() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.route(route="a")
        def handler(req: func.QueueMessage) -> func.HttpResponse:
            return func.HttpResponse()
        return app

    def wrong_return() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.route(route="a")
        def handler(req: func.HttpRequest) -> None:
            return None
        return app

    def bad_name() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.function_name("host")
        @app.route(route="a")
        def handler(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse()
        return app

    def bad_queue_name() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.queue_trigger(arg_name="msg", queue_name="Referral_Changes", connection="COSELL_STORAGE")
        def work(msg: func.QueueMessage) -> None:
            return None
        return app

    def unknown_type() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.generic_trigger(arg_name="event", type="madeUpTrigger")
        def handler(event: str) -> None:
            return None
        return app

    return [
        ("underscore", underscore, "function handler: the binding name http_req is invalid"),
        ("reserved route", reserved_route,
         "function reset: route 'admin/reset' conflicts with one or more built-in routes"),
        ("broken template", broken_template,
         "function items: route template 'api/items//{id}': the separator '/' cannot appear twice in a row"),
        ("leading slash", leading_slash,
         "function things: route template 'api//things': the separator '/' cannot appear twice in a row"),
        ("same route", same_route_same_method,
         "function two: its route conflicts with the route defined by function 'one'"),
        ("extra parameter", extra_parameter,
         "function handler: parameters ['tenant'] are declared in Python but have no binding"),
        ("wrong annotation", wrong_annotation,
         'function handler: binding req: type "httpTrigger" does not match its Python annotation QueueMessage'),
        ("wrong return", wrong_return,
         'function handler: Python return annotation "NoneType" does not match binding type "http"'),
        ("bad name", bad_name, "function host: 'host' is not a valid function name"),
        ("bad queue name", bad_queue_name, "function work: 'Referral_Changes' is not a valid queue name"),
        ("unknown type", unknown_type, "function handler: the binding type 'madeUpTrigger' is not registered"),
    ]


@pytest.mark.parametrize(("build", "problem"), [pytest.param(b, p, id=i) for i, b, p in _bad_apps()])
def test_a_binding_the_real_host_refuses_fails_here_and_in_the_local_host(
        build: Callable[[], func.FunctionApp], problem: str) -> None:
    found = host_rules.problems(functions_of(build()))
    assert found and found[0].startswith(problem), found
    host = FunctionHost(build())
    with pytest.raises(ConfigError) as error:
        host.start()
    assert str(error.value).startswith(f"{REFUSED} {problem}")
    host.stop()


def test_the_same_route_with_other_methods_is_allowed() -> None:
    app = func.FunctionApp()

    @app.route(route="things", methods=["GET"])
    def read(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    @app.route(route="things", methods=["POST"])
    def write(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    assert host_rules.problems(functions_of(app)) == []


def _raw(*bindings: dict[str, Any], name: str = "f") -> list[FunctionMetadata]:
    def f(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()
    return [FunctionMetadata(name, "function_app.py", bindings, f)]


_HTTP_OUT = {"direction": "OUT", "type": "http", "name": "$return"}


@pytest.mark.parametrize(("bindings", "problem"), [
    # What the decorators cannot produce but a hand-written or generic binding can.
    (({"direction": "IN", "type": "httpTrigger", "name": "req", "authLevel": "Private"}, _HTTP_OUT),
     "invalid authLevel 'Private'"),
    (({"direction": "INOUT", "type": "httpTrigger", "name": "req"}, _HTTP_OUT), '"inout" bindings are not supported'),
    (({"direction": "IN", "type": "httpTrigger", "name": "req"}, {**_HTTP_OUT, "direction": "IN"}),
     '"$return" binding must have direction set to "out"'),
    (({"direction": "sideways", "type": "httpTrigger", "name": "req"}, _HTTP_OUT),
     "'sideways' is not a valid binding direction"),
    (({"direction": "IN", "type": "http", "name": "req"}, _HTTP_OUT), "no trigger binding specified"),
    (({"direction": "IN", "type": "httpTrigger", "name": "req"},
      {"direction": "IN", "type": "timerTrigger", "name": "Req", "schedule": "0 * * * * *"}),
     "multiple bindings with name 'Req'"),
    (({"direction": "IN", "type": "timerTrigger", "name": "req"}, _HTTP_OUT), "a timer trigger needs a schedule"),
    (({"direction": "IN", "type": "httpTrigger", "name": "req", "route": "a/{id"}, _HTTP_OUT),
     "route template 'api/a/{id': a '{' or '}' has no partner"),
    (({"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "%Q%"},),
     "'%Q%' in the queue name does not resolve to a value: set app setting Q"),
    (({"direction": "IN", "type": "queueTrigger", "name": "msg", "queueName": "q1", "connection": "OTHER"},),
     "storage connection 'OTHER' is not set"),
])
def test_raw_bindings_the_host_refuses(bindings: tuple[dict[str, Any], ...], problem: str) -> None:
    found = host_rules.problems(_raw(*bindings), {"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert any(problem in p for p in found), found


def test_templates_the_host_accepts() -> None:
    for template in ("api/status.json", "api/items/{id?}", "api/files/{*path}", "api/a/{id:int=3}", "api/",
                     "api/{name}.{ext?}", "api/{{literal}}", r"api/{code:regex(^\d{{3}}$)}", "/api/a", "~/api/a"):
        assert host_rules.route_template_problems(template) == [], template


@pytest.mark.parametrize(("template", "problem"), [
    # One case per refusal of ASP.NET Core's RoutePatternParser.
    ("~api/a", "a route template cannot start with '~'"),
    ("api//a", "the separator '/' cannot appear twice in a row"),
    ("api/a}", "a '{' or '}' has no partner (write '{{' or '}}' for a literal brace)"),
    ("api/{a{b}", "a '{' inside a parameter must be written '{{'"),
    ("api/x?y", "the literal section 'x?y' cannot contain '?'"),
    ("api/{}", "'' is not a valid parameter name"),
    ("api/{a*b}", "'a*b' is not a valid parameter name"),
    ("api/a/{id}/{ID}", "the parameter name 'ID' appears more than once"),
    ("api/{*rest?}", "the catch-all parameter '{*rest?}' cannot be optional"),
    ("api/{page=1?}", "the optional parameter '{page=1?}' cannot have a default value"),
    ("api/a/{*rest}/b", "the catch-all parameter '{*rest}' must be the last part of the last segment"),
    ("api/a/{*rest}.json", "the segment '{*rest}.json' has a catch-all parameter and something else"),
    ("api/{name}-{ext?}", "in the segment '{name}-{ext?}' an optional parameter must be last and follow a '.'"),
    ("api/{name?}.json", "in the segment '{name?}.json' an optional parameter must be last and follow a '.'"),
    ("api/{a}{b}", "the segment '{a}{b}' has two parameters with no literal between them"),
])
def test_templates_the_host_refuses(template: str, problem: str) -> None:
    assert host_rules.route_template_problems(template) == [problem]


def test_the_route_prefix_is_part_of_every_template() -> None:
    app = func.FunctionApp()

    @app.route(route="/things")
    def things(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    functions = functions_of(app)
    assert host_rules.problems(functions, route_prefix="") == []  # "/things" alone is a valid template
    assert host_rules.problems(functions, route_prefix="api") == [
        "function things: route template 'api//things': the separator '/' cannot appear twice in a row"]


# --- host.json ------------------------------------------------------------------------------------------------


def test_host_json_matches_the_official_schema() -> None:
    schema = json.loads(HOST_JSON_SCHEMA.read_text())
    assert schema["$id"] == "https://json.schemastore.org/host.json"
    assert host_json_problem(host_json()) is None
    assert HostConfig.load(ROOT / "host.json").route_prefix == route_prefix()


@pytest.mark.parametrize(("change", "problem"), [
    ({"version": "3.0"}, "host.json version does not match the host.json schema: '2.0' was expected"),
    ({"functionTimeout": "10 minutes"}, "host.json functionTimeout does not match the host.json schema"),
    ({"singleton": {"lockPeriod": "15s"}}, "host.json singleton.lockPeriod does not match the host.json schema"),
    ({"extensionBundle": {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": 4}},
     "host.json extensionBundle.version does not match the host.json schema: 4 is not of type 'string'"),
    ({"retry": {"strategy": "sometimes"}}, "host.json retry.strategy does not match the host.json schema"),
    ({"logging": {"logLevel": {"default": "Loud"}}}, "host.json logging.logLevel.default does not match"),
    ({"telemetryMode": "Loud"}, "host.json telemetryMode does not match the host.json schema"),
    ({"extension": {}}, "host.json (the document) does not match the host.json schema: Additional properties"),
])
def test_a_host_json_the_schema_refuses_is_refused_here_and_by_the_local_host(
        change: dict[str, Any], problem: str) -> None:
    document = {**host_json(), **change}
    found = host_json_problem(document)
    assert found and found.startswith(problem), found
    with pytest.raises(ConfigError) as error:
        FunctionHost(func.FunctionApp(), host_json=document)
    assert str(error.value).endswith(found)


def test_a_host_json_without_version_is_refused_like_the_real_host_does() -> None:
    # HostJsonFileConfigurationSource: "missing the required 'version' property"; an empty file is the default.
    document = {k: v for k, v in host_json().items() if k != "version"}
    with pytest.raises(ConfigError, match="'version' is a required property"):
        HostConfig.load(document)
    assert HostConfig.load({}) == HostConfig()
