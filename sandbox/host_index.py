"""The app's functions as the local host sees them, and how one invocation runs and is logged.

Why azure.functions' own indexing API (`get_functions()`, `get_trigger()`, ...): it is what the real
Python worker calls, so defaults (route = function name, the app's auth level) and errors (a function
without a trigger, two functions with one name) are the real ones, not our reading of the decorators.
Before anything runs, `refuse_what_azure_refuses` applies every rule the real worker and host apply
(sandbox/host_rules.py, with the same settings), so the local host never runs an app Azure would not start;
only then does `index_app` check what this host itself cannot run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from sandbox import host_rules
from shared.errors import ConfigError

log = logging.getLogger("sandbox.host")

HTTP, TIMER, QUEUE = "httpTrigger", "timerTrigger", "queueTrigger"
_HTTP_OUTPUT = "http"
REFUSED = "the real Functions host would refuse this app:"
_indexed: weakref.WeakKeyDictionary[func.FunctionApp, list[Any]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class HostedFunction:
    """One function of the app: its name, its trigger binding, and how to call it.

    Attributes:
        trigger: the azure.functions trigger object (HttpTrigger, TimerTrigger, QueueTrigger), read for
            its settings (route, schedule, queue_name, ...); its `name` is the parameter it is passed as.
    """

    name: str
    trigger: Any
    user_function: Callable[..., Any]

    @property
    def kind(self) -> str:
        return self.trigger.type


@dataclass(frozen=True)
class Outcome:
    """What one invocation produced: a result or the exception it raised, and how long it took."""

    invocation_id: str
    result: Any
    error: Exception | None
    duration_ms: float


def refuse_what_azure_refuses(app: func.FunctionApp, settings: Mapping[str, str], route_prefix: str) -> None:
    """Check the app's functions as the real Python worker reports them against the real host's rules.

    Args:
        settings: the app settings the host would run with (`%SETTING%` references, queue connections).
        route_prefix: host.json's routePrefix, part of every route template the host parses.

    Raises:
        ConfigError: the first problem, and how many more there are.
    """
    problems = host_rules.problems(host_rules.metadata(_functions(app)), settings, route_prefix=route_prefix)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{REFUSED} {problems[0]}{more}")


def index_app(app: func.FunctionApp) -> list[HostedFunction]:
    """The app's functions, checked for what the local host can run.

    Raises:
        ConfigError: a trigger or binding the local host does not run, or a parameter it cannot fill.
    """
    return [_hosted(function) for function in _functions(app)]


def _functions(app: func.FunctionApp) -> list[Any]:
    """`app.get_functions()`, once per app.

    Why cached per app: `FunctionApp.get_functions()` records names to reject duplicates, so a second
    call on the same app object reports every function as a duplicate; the real worker calls it once.
    """
    if app not in _indexed:
        try:
            _indexed[app] = app.get_functions()
        except ValueError as exc:  # the library's own indexing errors (no trigger, duplicate name)
            raise ConfigError(f"the app does not index: {exc}") from None
    return _indexed[app]


def _hosted(function: Any) -> HostedFunction:
    name = function.get_function_name()
    trigger = function.get_trigger()
    if trigger.type not in (HTTP, TIMER, QUEUE):
        raise ConfigError(f"function {name}: the local host runs http, timer and queue triggers, not {trigger.type}")
    for binding in function.get_bindings():
        if binding is not trigger and binding.type != _HTTP_OUTPUT:
            raise ConfigError(f"function {name}: the local host does not run {binding.type} bindings "
                              f"({binding.name!r}); use the SDK through shared/runtime.py instead")
    user_function = function.get_user_function()
    parameters = inspect.signature(user_function).parameters
    if trigger.name not in parameters:
        raise ConfigError(f"function {name}: its trigger binding is named {trigger.name!r} but the Python "
                          f"function has no parameter of that name")
    unfilled = [p for p, spec in parameters.items() if p != trigger.name and spec.default is inspect.Parameter.empty
                and spec.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if unfilled:
        raise ConfigError(f"function {name}: the local host passes only {trigger.name!r}, "
                          f"not {', '.join(unfilled)}")
    return HostedFunction(name, trigger, user_function)


def invoke(function: HostedFunction, value: Any) -> Outcome:
    """Call the user function with its trigger value; async functions get their own event loop.

    An exception is caught and returned, never raised: like the real host, one failing invocation
    must not take the host down. Its traceback is logged at debug level (`--verbose`).
    """
    invocation_id = str(uuid.uuid4())
    started = time.perf_counter()
    result: Any = None
    error: Exception | None = None
    try:
        result = function.user_function(**{function.trigger.name: value})
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything; the host reports it
        error = exc
        log.debug("Exception in %s (invocation %s)", function.name, invocation_id, exc_info=True)
    return Outcome(invocation_id, result, error, (time.perf_counter() - started) * 1000)


THREAD_COUNT_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"


def worker_threads(env: Mapping[str, str]) -> int:
    """The Python worker's thread count for sync functions: `PYTHON_THREADPOOL_THREAD_COUNT`, else Python's own
    `ThreadPoolExecutor` default, min(32, CPUs + 4), which the worker keeps on Python 3.9+ (azure-functions-
    python-worker `dispatcher._get_sync_tp_max_workers`). A value below 1 or not a number is ignored with a
    warning, as the worker does."""
    value = env.get(THREAD_COUNT_SETTING, "").strip()
    if value:
        if value.isdigit() and int(value) >= 1:
            return int(value)
        log.warning("%s must be an integer of at least 1; using the default", THREAD_COUNT_SETTING)
    return min(32, (os.cpu_count() or 1) + 4)


class Worker:
    """The language worker's side of invocations: every sync function (HTTP, queue, timer) runs on one pool of
    threads, first come first served; async functions run in the caller's thread on an event loop of their own.

    Why: the real host hands every invocation to the Python worker, which runs sync functions on a single
    `ThreadPoolExecutor` ("Improve throughput performance of Python apps in Azure Functions"). Running each in
    a thread of its own, as this host did, let 50 requests and 64 queue messages contend for the GIL at once:
    the slowest of a burst waited longest, and the sandbox measured its own scheduling, not the connector.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="worker")

    def invoke(self, function: HostedFunction, value: Any) -> Outcome:
        if inspect.iscoroutinefunction(function.user_function):
            return invoke(function, value)
        return self._pool.submit(invoke, function, value).result()

    def stop(self) -> None:
        """Wait for the invocations in flight (call after the triggers stopped handing out new ones)."""
        self._pool.shutdown(wait=True)


def log_invocation(function: HostedFunction, outcome: Outcome, detail: str, result: str | None = None) -> None:
    """The one line per invocation: function, trigger, what it was about, result, duration, ids.

    Args:
        detail: trigger-specific context without secrets (method and path without the query string,
            queue name and message id, ...).
        result: the outcome in words; "Succeeded"/"Failed" when not given.
    """
    words = result or ("Failed" if outcome.error else "Succeeded")
    if outcome.error is not None:
        words += f" ({type(outcome.error).__name__}: {str(outcome.error)[:200]})"
    level = logging.ERROR if outcome.error is not None else logging.INFO
    log.log(level, "Executed %s [%s %s] %s in %.0f ms (invocation %s)", function.name, function.kind, detail,
            words, outcome.duration_ms, outcome.invocation_id)


__all__ = ["HTTP", "QUEUE", "REFUSED", "THREAD_COUNT_SETTING", "TIMER", "HostedFunction", "Outcome", "Worker",
           "index_app", "invoke", "log_invocation", "refuse_what_azure_refuses", "worker_threads"]
