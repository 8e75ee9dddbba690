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
    for blueprint in (function_app.health.bp, function_app.partner_center.bp, function_app.salesforce.bp,
                      function_app.status.bp, function_app.sync.bp):
        module.app.register_functions(blueprint)
    return host_rules.metadata(host_rules.find_app(module).get_functions())


def azure_settings(plan: str = "FlexConsumption") -> dict[str, str]:
    """The app settings infra/main.bicep writes: literal values and parameter defaults (overridden by
    main.parameters.json) as themselves, anything computed in Azure (a URI, a Key Vault reference) as set."""
    main = bicep("main.bicep")
    overrides = {name: p["value"] for name, p in
                 json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"].items()}
    settings: dict[str, str] = {}
    for name, value in app_settings().items():
        if isinstance(value, str) and value in main["parameters"]:
            value = overrides.get(value, main["parameters"][value].get("default"))
        settings[name] = value if isinstance(value, str) else "<computed in Azure>"
    assert overrides.get("planType", main["parameters"]["planType"]["default"]) == plan
    return settings


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
    assert host_rules.problems(functions) == []


def test_every_binding_resolves_with_the_app_settings_infra_writes() -> None:
    # Schedules (%COSELL_SF_POLL_SCHEDULE%, ...) resolve to valid NCRONTAB; queue connections find their
    # identity-based settings (COSELL_STORAGE__queueServiceUri).
    functions = the_app()
    assert host_rules.problems(functions, azure_settings()) == []
    timers = [f for f in functions if f.trigger and f.trigger["type"] == host_rules.TIMER_TRIGGER]
    assert timers and all(f.trigger and f.trigger["schedule"].startswith("%") for f in timers)


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
        assert only.startswith("function partner_center_reconcile: schedule %COSELL_PC_RECONCILE_SCHEDULE%")
        assert problem in only


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

        @app.route(route="/things/", methods=["POST"])
        def two(req: func.HttpRequest) -> func.HttpResponse:
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
         "function items: route 'items//{id}': the separator '/' cannot appear twice in a row"),
        ("same route", same_route_same_method,
         "function two: its route conflicts with the route defined by function 'one'"),
        ("extra parameter", extra_parameter,
         "function handler: parameters ['tenant'] are declared in Python but have no binding"),
        ("wrong annotation", wrong_annotation,
         'function handler: binding req: type "httpTrigger" does not match its Python annotation QueueMessage'),
        ("wrong return", wrong_return, "function handler: Python return annotation <class 'NoneType'> does not match "
                                       'binding type "http"'),
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
    assert str(error.value).startswith(f"Azure would refuse this app: {problem}")
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
    (({"direction": "IN", "type": "httpTrigger", "name": "req", "route": "a/{*rest}/b"}, _HTTP_OUT),
     "the catch-all parameter '{*rest}' must be in the last segment"),
    (({"direction": "IN", "type": "httpTrigger", "name": "req", "route": "a/{id}/{ID}"}, _HTTP_OUT),
     "the parameter name 'ID' appears more than once"),
    (({"direction": "IN", "type": "httpTrigger", "name": "req", "route": "a/{id"}, _HTTP_OUT),
     "segment '{id' has unbalanced braces"),
])
def test_raw_bindings_the_host_refuses(bindings: tuple[dict[str, Any], ...], problem: str) -> None:
    found = host_rules.problems(_raw(*bindings))
    assert any(problem in p for p in found), found


def test_templates_the_host_accepts() -> None:
    for route in ("status.json", "items/{id?}", "files/{*path}", "a/{id:int=3}", "partnercenter/webhook/test"):
        assert host_rules.route_template_problems(route) == [], route
