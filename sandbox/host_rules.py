"""What the real Azure Functions runtime refuses in a v2-model Python app, checked before anything runs.

Why here and not only in Azure: a refused function is logged as a "function error" on Azure and simply never
runs; nothing fails loudly. Two programs read the app there, and this module states both sets of rules:

* the Python worker indexes it (`azure_functions_worker/loader.py` `index_function_app`: exactly one
  FunctionApp at the top of function_app.py, then `app.get_functions()`; `process_indexed_function` ->
  `functions.py` `Registry.add_indexed_function`: binding directions, Python parameters against bindings,
  annotations against the binding registry) and sends the host one RpcFunctionMetadata per function, whose
  `raw_bindings` are `Function.get_raw_bindings()`;
* the host validates that metadata (`WorkerFunctionMetadataProvider.ValidateMetadata`/`ValidateBindings`,
  `Utility.ValidateName`/`ValidateBinding`, `ScriptHost.ValidateFunction`/`ValidateHttpFunction`/
  `HttpRoutesConflict`, `ScriptBindingContext.GetMetadataEnumValue`) and each trigger's extension reads its
  properties (route template, schedule, queue name, `%SETTING%` references, the storage connection).

Sources: Azure/azure-functions-python-worker @7e6acf36 and Azure/azure-functions-host @89dc438d (the files
named above, plus FunctionDescriptorProvider.cs for unregistered binding types and
WebScriptHostHttpRoutesManager.cs for routes); Azure/azure-webjobs-sdk-extensions
`src/WebJobs.Extensions.Http/Routing/WebJobsRouteBuilder.cs` (prefix + '/' + route); dotnet/aspnetcore
`src/Http/Routing/src/Patterns/RoutePatternParser.cs` and `RouteParameterParser.cs` (route templates);
Azure/azure-sdk-for-net `sdk/extensions/Microsoft.Azure.WebJobs.Extensions.Clients/src/Shared/
StorageClientProvider.cs` (storage connections); Microsoft Learn "Azure Queue storage trigger for Azure
Functions" (identity-based connections) and "Timer trigger for Azure Functions" (NCRONTAB, `%setting%`).
Everything returns problems as sentences, so a test can list them and the local host can refuse.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import azure.functions as func
from azure.functions.decorators.core import Binding

from sandbox import ncrontab

HTTP_TRIGGER, TIMER_TRIGGER, QUEUE_TRIGGER = "httpTrigger", "timerTrigger", "queueTrigger"
RETURN = "$return"
DEFAULT_ROUTE_PREFIX = "api"
# Utility.cs: FunctionNameValidationRegex and BindingNameValidationRegex (note: no "_" in a binding name).
_FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,127}$(?<!^host$)", re.IGNORECASE)
_BINDING_NAME = re.compile(r"^([a-zA-Z][a-zA-Z0-9]{0,127}|\$return)$")
_DIRECTIONS = {"in", "out", "inout"}
# Microsoft.Azure.WebJobs.Extensions.Http AuthorizationLevel, parsed case-insensitively.
_AUTH_LEVELS = {"anonymous", "user", "function", "system", "admin"}
_RESERVED_ROUTES = ("admin", "runtime")
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_SETTING = re.compile(r"%([^%]+)%")
# Identity-based connection of a storage queue trigger (StorageClientProvider.TryGetServiceUri and the Azure
# client factory): <connection>__accountName, __queueServiceUri, or __serviceUri.
QUEUE_IDENTITY_SUFFIXES = ("__queueServiceUri", "__serviceUri", "__accountName")


@dataclass(frozen=True)
class FunctionMetadata:
    """One function as the worker reports it to the host (RpcFunctionMetadata): name, script file and the raw
    bindings, parsed, exactly as `Function.get_raw_bindings()` serialises them."""

    name: str
    script_file: str
    bindings: tuple[dict[str, Any], ...]
    user_function: Callable[..., Any]

    @property
    def trigger(self) -> dict[str, Any] | None:
        return next((b for b in self.bindings if _is_trigger(b)), None)


def find_app(module: ModuleType) -> func.FunctionRegister:
    """The one FunctionApp at the top of the script, as the worker's `index_function_app` finds it.

    Raises:
        ValueError: none, or more than one (the worker refuses both, with these words).
    """
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
    if len(apps) > 1:
        raise ValueError(f"More than one {type(apps[0]).__name__} or other top level function app instances "
                         f"are defined in {module.__name__}")
    if not apps:
        raise ValueError(f"Could not find top level function app instances in {module.__name__}")
    return apps[0]


def metadata(functions: Iterable[Any]) -> list[FunctionMetadata]:
    """What `process_indexed_function` sends the host for the functions `app.get_functions()` returned."""
    return [FunctionMetadata(f.get_function_name(), f.function_script_file,
                             tuple(json.loads(raw) for raw in f.get_raw_bindings()), f.get_user_function())
            for f in functions]


def problems(functions: list[FunctionMetadata], settings: Mapping[str, str] | None = None, *,
             route_prefix: str = DEFAULT_ROUTE_PREFIX) -> list[str]:
    """Everything the worker and the host would refuse, one sentence each, naming the function.

    Args:
        settings: the app settings; None checks the bindings alone (no `%SETTING%` or connection checks).
        route_prefix: host.json's extensions.http.routePrefix, which every HTTP route template starts with.
    """
    found = [f"function {f.name}: {p}" for f in functions for p in worker_problems(f)]
    found += [f"function {f.name}: {p}" for f in functions for p in binding_problems(f, settings, route_prefix)]
    return found + route_conflicts(functions)


# --- the worker (functions.py Registry.add_indexed_function) ------------------------------------------------


def worker_problems(function: FunctionMetadata) -> list[str]:
    """The Python worker's checks of one function's bindings against its Python signature."""
    found: list[str] = []
    bound: dict[str, dict[str, Any]] = {}
    return_type: str | None = None
    for binding in function.bindings:
        name, direction = binding.get("name"), str(binding.get("direction", "")).lower()
        if direction == "inout":
            found.append('"inout" bindings are not supported')
        if name == RETURN:
            if direction != "out":
                found.append('"$return" binding must have direction set to "out"')
            return_type = binding.get("type")
        else:
            bound[str(name)] = binding
    try:
        annotations = typing.get_type_hints(function.user_function)
    except Exception as exc:  # noqa: BLE001 - the worker fails on the same NameError/TypeError
        return [*found, f"its annotations cannot be resolved: {type(exc).__name__}: {exc}"]
    params = dict(inspect.signature(function.user_function).parameters)
    if "context" in params and "context" not in bound:
        params.pop("context")
        annotation = annotations.get("context")
        if annotation is not None and not (isinstance(annotation, type) and annotation.__name__ == "Context"):
            found.append('the "context" parameter is expected to be of type azure.functions.Context')
    if extra := sorted(set(params) - set(bound)):
        found.append(f"parameters {extra} are declared in Python but have no binding")
    if missing := sorted(set(bound) - set(params)):
        found.append(f"bindings {missing} have no parameter of that name in Python")
    for name in sorted(set(params) & set(bound)):
        if name in annotations and (problem := _annotation_problem(bound[name], annotations[name])):
            found.append(f"binding {name}: {problem}")
    if return_type and "return" in annotations:
        returned = annotations["return"]
        if not isinstance(returned, type):
            found.append(f"has invalid non-type return annotation {returned!r}")
        elif not _registry(return_type).check_output_type_annotation(returned):
            found.append(f'Python return annotation "{returned.__name__}" does not match binding type "{return_type}"')
    return found


def _annotation_problem(binding: dict[str, Any], annotation: Any) -> str | None:
    is_out_param = typing.get_origin(annotation) is func.Out or (isinstance(annotation, type)
                                                                 and annotation.__name__ == "Out")
    is_out_binding = str(binding.get("direction", "")).lower() == "out"
    if is_out_binding and not is_out_param:
        return 'declared with the "out" direction, but its Python annotation is not azure.functions.Out'
    if is_out_param and not is_out_binding:
        return 'declared with the "in" direction, but its Python annotation is azure.functions.Out'
    pytype = typing.get_args(annotation)[0] if is_out_param else annotation
    if not isinstance(pytype, type) and typing.get_origin(pytype) is None:
        return f"has invalid non-type annotation {annotation!r}"
    converter = _registry(binding["type"])
    if pytype in (str, bytes) and not getattr(converter, "has_implicit_output", lambda: False)():
        converter = _Generic  # the worker's "generic" binding takes str and bytes of any non-implicit type
    check = getattr(converter, "check_output_type_annotation" if is_out_param else "check_input_type_annotation", None)
    if check is None:  # e.g. an "http" binding used as an input: the worker fails on it
        return f'type "{binding["type"]}" cannot be an {"output" if is_out_param else "input"}'
    if not check(pytype):
        return f'type "{binding["type"]}" does not match its Python annotation {getattr(pytype, "__name__", pytype)}'
    return None


class _Generic:
    """The worker's GenericBinding: the converter of a binding type the library registers none for."""

    @staticmethod
    def check_input_type_annotation(pytype: type) -> bool:
        return isinstance(pytype, type) and issubclass(pytype, (str, bytes))

    @staticmethod
    def check_output_type_annotation(pytype: type) -> bool:
        return isinstance(pytype, type) and issubclass(pytype, (str, bytes, bytearray))


def _registry(binding_type: str) -> Any:
    return func.get_binding_registry().get(binding_type) or _Generic


# --- the host (WorkerFunctionMetadataProvider, Utility, ScriptHost, the extensions) --------------------------


def _is_trigger(binding: dict[str, Any]) -> bool:
    return str(binding.get("type", "")).lower().endswith("trigger") and \
        str(binding.get("direction", "")).lower() == "in"


def known_binding_types() -> frozenset[str]:
    """Binding types the azure.functions library can declare (each an extension of the bundle or the host)."""
    def subclasses(cls: type) -> Iterable[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    return frozenset(name.lower() for cls in subclasses(Binding) if (name := cls.get_binding_name()))


def binding_problems(function: FunctionMetadata, settings: Mapping[str, str] | None,
                     route_prefix: str = DEFAULT_ROUTE_PREFIX) -> list[str]:
    """The host's checks of one function's metadata, then of its trigger's properties."""
    found: list[str] = []
    if not _FUNCTION_NAME.match(function.name):
        found.append(f"'{function.name}' is not a valid function name (a letter, then up to 127 letters, "
                     "digits, '_' or '-'; not 'host')")
    names: set[str] = set()
    known = known_binding_types()
    for binding in function.bindings:
        name, direction = binding.get("name"), str(binding.get("direction", ""))
        if not isinstance(name, str) or not _BINDING_NAME.match(name):
            found.append(f"the binding name {name} is invalid (a letter, then up to 127 letters or digits: "
                         "rename the Python parameter, e.g. without '_')")
        if direction.lower() not in _DIRECTIONS:
            found.append(f"'{direction}' is not a valid binding direction")
        if str(name).lower() in names:
            found.append(f"multiple bindings with name '{name}' discovered; binding names must be unique")
        names.add(str(name).lower())
        if str(binding.get("type", "")).lower() not in known:
            found.append(f"the binding type '{binding.get('type')}' is not registered")
    triggers = [b for b in function.bindings if _is_trigger(b)]
    if not triggers:
        found.append("no trigger binding specified; a function must have a trigger input binding")
    elif len(triggers) > 1:
        found.append("multiple trigger bindings defined; a function can only have a single trigger binding")
    else:
        found += _trigger_problems(function, triggers[0], settings, route_prefix)
    return found


def _trigger_problems(function: FunctionMetadata, trigger: dict[str, Any],
                      settings: Mapping[str, str] | None, route_prefix: str) -> list[str]:
    kind = trigger["type"]
    if kind == HTTP_TRIGGER:
        level = trigger.get("authLevel")
        found = [] if level is None or str(level).lower() in _AUTH_LEVELS else \
            [f"invalid authLevel {level!r} (anonymous, function or admin)"]
        route = http_route(function)
        if route.strip("/").lower().startswith(_RESERVED_ROUTES):
            found.append(f"route '{route}' conflicts with one or more built-in routes (admin, runtime)")
        template = host_route_template(route, route_prefix)
        return found + [f"route template '{template}': {p}" for p in route_template_problems(template)]
    if kind == TIMER_TRIGGER:
        return _schedule_problems(str(trigger.get("schedule") or ""), settings)
    if kind == QUEUE_TRIGGER:
        return _queue_problems(trigger, settings)
    return []


def resolve(value: str, settings: Mapping[str, str]) -> tuple[str, list[str]]:
    """`value` with each `%NAME%` replaced by the app setting, and the names that are not set."""
    missing = [name for name in _SETTING.findall(value) if not settings.get(name)]
    return _SETTING.sub(lambda m: settings.get(m.group(1)) or "", value), missing


def _schedule_problems(schedule: str, settings: Mapping[str, str] | None) -> list[str]:
    if not schedule:
        return ["a timer trigger needs a schedule"]
    if settings is None and _SETTING.search(schedule):
        return []
    expression, missing = resolve(schedule, settings or {})
    if missing:
        return [f"'%{name}%' in the schedule does not resolve to a value: set app setting {name}" for name in missing]
    try:
        ncrontab.parse(expression)
    except ncrontab.CronError as exc:
        return [f"{exc} (from {schedule})" if schedule != expression else str(exc)]
    return []


def _queue_problems(trigger: dict[str, Any], settings: Mapping[str, str] | None) -> list[str]:
    """The queue name, once its `%SETTING%`s resolve (QueueClient name rules), and the storage connection."""
    written = str(trigger.get("queueName") or "")
    if not written:
        return ["a queue trigger needs a queueName"]
    if settings is None and _SETTING.search(written):
        return []
    queue, missing = resolve(written, settings or {})
    found = [f"'%{name}%' in the queue name does not resolve to a value: set app setting {name}" for name in missing]
    if not missing and not _QUEUE_NAME.match(queue):
        found.append(f"{queue!r} is not a valid queue name (3-63 lower-case letters, digits and single hyphens)")
    connection = trigger.get("connection") or "AzureWebJobsStorage"
    if settings is not None and not storage_connection_is_set(connection, settings):
        found.append(f"storage connection '{connection}' is not set: set {connection} (a connection string) "
                     f"or {connection}__queueServiceUri (identity-based)")
    return found


def storage_connection_is_set(connection: str, settings: Mapping[str, str]) -> bool:
    """Whether the queue extension finds a storage connection named `connection`.

    StorageClientProvider.Get reads the configuration section AzureWebJobs<name>, else <name>: a connection
    string as its value, or an identity-based connection under it (`__accountName` or `__queueServiceUri`,
    read by TryGetServiceUri; `__serviceUri`, read by the Azure client factory). Only an empty name means
    AzureWebJobsStorage: a named connection has no fallback to it.
    """
    return any(settings.get(prefix + connection + suffix) for prefix in ("AzureWebJobs", "")
               for suffix in ("", *QUEUE_IDENTITY_SUFFIXES))


# --- HTTP routes -----------------------------------------------------------------------------------------------


def http_route(function: FunctionMetadata) -> str:
    """The route the host serves: the trigger's, or the function name when none is given."""
    route = (function.trigger or {}).get("route")
    return str(route) if route and str(route).strip() else function.name


def http_methods(function: FunctionMetadata) -> frozenset[str]:
    """The trigger's methods in upper case; empty means every method."""
    return frozenset(str(m).upper() for m in (function.trigger or {}).get("methods") or ())


def route_conflicts(functions: list[FunctionMetadata]) -> list[str]:
    """ScriptHost.HttpRoutesConflict: the same route (case-insensitive, outer '/' ignored) with a common method
    (no methods means all); and a name used twice."""
    found: list[str] = []
    seen: list[FunctionMetadata] = []
    for function in functions:
        if function.trigger is None or function.trigger.get("type") != HTTP_TRIGGER:
            continue
        for other in seen:
            same_route = http_route(function).strip("/").lower() == http_route(other).strip("/").lower()
            methods, others = http_methods(function), http_methods(other)
            if same_route and (not methods or not others or methods & others):
                found.append(f"function {function.name}: its route conflicts with the route defined by "
                             f"function '{other.name}'")
            if function.name == other.name:
                found.append(f"function {function.name}: the function name must be unique within the app")
        seen.append(function)
    return found


def host_route_template(route: str, route_prefix: str) -> str:
    """The template the host hands ASP.NET Core: WebJobsRouteBuilder.BuildRouteTemplate joins the prefix and
    the route with '/' as written (so "/things" under "api" becomes "api//things")."""
    return f"{route_prefix}/{route}" if route_prefix else route


def route_template_problems(template: str) -> list[str]:
    """What RoutePatternParser.Parse (ASP.NET Core, called by `new Route(...)` for every HTTP function) refuses
    in a route template; it stops at the first problem, so this returns at most one."""
    if template.startswith("~/"):
        template = template[2:]
    elif template.startswith("/"):
        template = template[1:]
    elif template.startswith("~"):
        return ["a route template cannot start with '~'"]
    names: set[str] = set()
    segments: list[list[_Part]] = []
    index = 0
    while index < len(template):
        if template[index] == "/":
            return ["the separator '/' cannot appear twice in a row"]
        parts, index, problem = _parse_segment(template, index, names)
        if problem:
            return [problem]
        segments.append(parts)
        index += 1  # past the separator
    for i, parts in enumerate(segments):
        for j, part in enumerate(parts):
            if part.catch_all and (i != len(segments) - 1 or j != len(parts) - 1):
                return [f"the catch-all parameter '{{{part.text}}}' must be the last part of the last segment"]
    return []


@dataclass(frozen=True)
class _Part:
    """One literal or parameter of a route segment (RoutePatternPart)."""

    text: str
    parameter: bool = False
    catch_all: bool = False
    optional: bool = False


def _parse_segment(template: str, index: int, names: set[str]) -> tuple[list[_Part], int, str | None]:
    """ParseSegment: parts until the next '/' or the end; returns them, where it stopped, and any problem."""
    parts: list[_Part] = []
    while index < len(template) and template[index] != "/":
        if template[index] == "{" and not template.startswith("{{", index):
            part, index, problem = _parse_parameter(template, index, names)
        else:
            part, index, problem = _parse_literal(template, index)
        if problem:
            return parts, index, problem
        parts.append(part)
    return parts, index, _segment_problem(parts)


def _parse_literal(template: str, index: int) -> tuple[_Part, int, str | None]:
    start = index
    while index < len(template) and template[index] != "/":
        char = template[index]
        if char in "{}":
            if template.startswith(char * 2, index):
                index += 2
                continue
            if char == "}" or index + 1 >= len(template):
                return _Part(""), index, "a '{' or '}' has no partner (write '{{' or '}}' for a literal brace)"
            break  # the start of a parameter
        index += 1
    literal = template[start:index].replace("}}", "}").replace("{{", "{")
    if "?" in literal:
        return _Part(literal), index, f"the literal section '{literal}' cannot contain '?'"
    return _Part(literal), index, None


def _parse_parameter(template: str, index: int, names: set[str]) -> tuple[_Part, int, str | None]:
    start, index = index, index + 1
    while True:
        if index >= len(template):
            return _Part(""), index, "a '{' or '}' has no partner (write '{{' or '}}' for a literal brace)"
        if template[index] == "{":
            if not template.startswith("{{", index):
                return _Part(""), index, "a '{' inside a parameter must be written '{{'"
            index += 2
        elif template[index] == "}":
            if not template.startswith("}}", index):
                index += 1
                break
            index += 2
        else:
            index += 1
    text = template[start + 1:index - 1].replace("}}", "}").replace("{{", "{")
    catch_all, optional = text.startswith("*"), text.endswith("?")
    name, default = _parameter_name_and_default(text)
    if catch_all and optional:
        return _Part(text), index, f"the catch-all parameter '{{{text}}}' cannot be optional"
    if optional and default is not None:
        return _Part(text), index, f"the optional parameter '{{{text}}}' cannot have a default value"
    if not name or any(char in name for char in "/{}?*"):
        return _Part(text), index, f"'{name}' is not a valid parameter name"
    if name.lower() in names:
        return _Part(text), index, f"the parameter name '{name}' appears more than once"
    names.add(name.lower())
    return _Part(text, parameter=True, catch_all=catch_all, optional=optional and not catch_all), index, None


def _parameter_name_and_default(text: str) -> tuple[str, str | None]:
    """RouteParameterParser: `*`/`**` (catch-all), the name up to ':' (constraints) or '=' (default), '?'."""
    body = text[2:] if text.startswith("**") else text[1:] if text.startswith("*") else text
    body = body[:-1] if body.endswith("?") else body
    cut = next((i for i, char in enumerate(body) if char in ":=" and i > 0), len(body))
    name, rest, depth = body[:cut], body[cut:], 0
    for i, char in enumerate(rest):  # '=' outside a constraint's parentheses starts the default
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "=" and depth <= 0:
            return name, rest[i + 1:]
    return name, None


def _segment_problem(parts: list[_Part]) -> str | None:
    """IsSegmentValid: one catch-all alone; an optional parameter last, after '.'; no two parameters in a row."""
    shown = "".join(f"{{{p.text}}}" if p.parameter else p.text for p in parts)
    for i, part in enumerate(parts):
        if part.catch_all and len(parts) > 1:
            return f"the segment '{shown}' has a catch-all parameter and something else"
        if part.optional and len(parts) > 1 and (i != len(parts) - 1 or parts[i - 1].text != "."
                                                 or parts[i - 1].parameter):
            return f"in the segment '{shown}' an optional parameter must be last and follow a '.'"
        if part.parameter and i and parts[i - 1].parameter:
            return f"the segment '{shown}' has two parameters with no literal between them"
    return None


__all__ = ["DEFAULT_ROUTE_PREFIX", "HTTP_TRIGGER", "QUEUE_IDENTITY_SUFFIXES", "QUEUE_TRIGGER", "RETURN", "TIMER_TRIGGER",
           "FunctionMetadata", "binding_problems", "find_app", "host_route_template", "http_methods", "http_route",
           "known_binding_types",
           "metadata", "problems", "resolve", "route_conflicts", "route_template_problems",
           "storage_connection_is_set", "worker_problems"]
