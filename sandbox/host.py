"""The local Azure Functions host: `python -m sandbox.host --port 7071`.

Why it exists: Azure Functions Core Tools (`func start`) cannot be installed everywhere this project
runs (tests, CI, the all-in-one demo). This host loads the real `function_app.py`, indexes it with
azure.functions' own API, and runs its HTTP, timer and queue triggers with the real host's rules
(routes and auth levels, NCRONTAB schedules in UTC, host.json queue settings, poison queues).

In-process use (tests, `make run`)::

    host = FunctionHost.from_target("function_app:app", port=0)
    host.start()            # raises ConfigError / Unavailable with one readable line
    requests.get(host.url + "/api/health")
    host.stop()
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import azure.functions as func
import azure.functions.timer as func_timer

from sandbox import ncrontab
from sandbox.host_config import HostConfig, resolve_settings
from sandbox.host_http import HttpFrontEnd, Route
from sandbox.host_index import (HTTP, QUEUE, THREAD_COUNT_SETTING, TIMER, HostedFunction, Worker, index_app,
                                log_invocation, refuse_what_azure_refuses, worker_threads)
from sandbox.host_queues import QueuePoller, connection_string
from shared.errors import ConfigError, ConnectorError
from shared.settings import load_local_settings

log = logging.getLogger("sandbox.host")

DEFAULT_TARGET = "function_app:app"
FUNCTION_KEY_SETTING = "COSELL_LOCAL_FUNCTION_KEY"
_PAST_DUE_AFTER = dt.timedelta(seconds=1)
"""An invocation this much later than its occurrence is reported as past due."""


class TimerRunner:
    """Fires one timer-triggered function on its schedule, one invocation at a time (as the real host,
    which holds a singleton lock per timer)."""

    def __init__(self, function: HostedFunction, schedule: ncrontab.Schedule, *, run_on_startup: bool,
                 worker: Worker) -> None:
        self.function = function
        self._worker = worker
        self.schedule = schedule
        self.run_on_startup = run_on_startup
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"host-timer-{function.name}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        if self.run_on_startup:
            self._fire(past_due=False)
        due = self.schedule.next_after(_now())
        while self._sleep_until(due):
            self._fire(past_due=_now() - due > _PAST_DUE_AFTER)
            # Occurrences missed while the function ran are skipped: the real host also counts from now.
            due = self.schedule.next_after(max(due, _now()))

    def _sleep_until(self, due: dt.datetime) -> bool:
        """Wait for `due`; False when the host stops first."""
        while (remaining := (due - _now()).total_seconds()) > 0:
            if self._stop.wait(remaining):
                return False
        return not self._stop.is_set()

    def _fire(self, *, past_due: bool) -> None:
        outcome = self._worker.invoke(self.function, func_timer.TimerRequest(past_due=past_due))
        log_invocation(self.function, outcome, self.schedule.expression + (" past due" if past_due else ""))


DISABLED_SETTING = "AzureWebJobs.{name}.Disabled"


def disabled(name: str, env: Mapping[str, str]) -> bool:
    """The app setting `AzureWebJobs.<FUNCTION_NAME>.Disabled` = true makes the host ignore the function's
    trigger: no timer, no queue listener, 404 on its route ("How to disable functions in Azure Functions").
    The sandbox's benchmarks use it to hold the syncs back while they measure the receiver."""
    return env.get(DISABLED_SETTING.format(name=name), "").strip().lower() in ("true", "1")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class FunctionHost:
    """Runs a `func.FunctionApp`'s HTTP, timer and queue triggers until `stop()`.

    Args:
        app: the FunctionApp (Blueprints already registered).
        host_json: the host.json to honour, as a path or as its parsed document (handy in tests);
            None means the real host's defaults.
        port: where HTTP functions are served; 0 picks a free port (see `url`).
        bind: the address to listen on; loopback unless you mean to expose it.
    """

    def __init__(self, app: func.FunctionApp, *, host_json: Path | Mapping[str, Any] | None = None,
                 port: int = 0, bind: str = "127.0.0.1") -> None:
        self.app = app
        self.config = HostConfig.load(host_json)
        self._port, self._bind = port, bind
        self._front_end: HttpFrontEnd | None = None
        self._timers: list[TimerRunner] = []
        self._pollers: list[QueuePoller] = []
        self._executor: ThreadPoolExecutor | None = None
        self._worker: Worker | None = None
        self.disabled: list[str] = []

    @classmethod
    def from_target(cls, target: str = DEFAULT_TARGET, *, host_json: Path | Mapping[str, Any] | None = None,
                    port: int = 0, bind: str = "127.0.0.1") -> FunctionHost:
        """Import `module:attribute`; host.json defaults to the one next to the module, like the real host."""
        module_name, app = load_target(target)
        if host_json is None:
            host_json = app_root(module_name) / "host.json"
        return cls(app, host_json=host_json, port=port, bind=bind)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:7071 (routes are under `/api/` by default)."""
        if self._front_end is None:
            raise RuntimeError("the host is not started")
        return f"http://{self._bind}:{self._front_end.port}"

    def start(self) -> FunctionHost:
        """Index the app, check every setting it uses (read from `os.environ` now), then start everything.

        Nothing starts unless everything is valid, so a bad setting never leaves half a host running.

        Raises:
            ConfigError: first whatever the real Functions host would refuse (sandbox/host_rules.py: bindings,
                routes, a missing `%SETTING%`, a bad schedule or queue name, an unset queue connection), then
                an unsupported binding or a connection only Azure can make.
            Unavailable: the port is taken or queue storage cannot be reached.
        """
        env = dict(os.environ)
        refuse_what_azure_refuses(self.app, env, self.config.route_prefix)
        indexed = index_app(self.app)
        functions = [f for f in indexed if not disabled(f.name, env)]
        self.disabled = [f.name for f in indexed if f not in functions]
        worker = self._worker = Worker(worker_threads(env))
        try:
            routes = [Route.compile(f, self.config.route_prefix) for f in functions if f.kind == HTTP]
            self._timers = [self._timer(f, env, worker) for f in functions if f.kind == TIMER]
            queue_functions = [f for f in functions if f.kind == QUEUE]
            if queue_functions:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.config.queues.batch_size * len(queue_functions), thread_name_prefix="host-invoke")
                self._pollers = [self._poller(f, env, self._executor, worker) for f in queue_functions]
            for poller in self._pollers:
                poller.prepare()
            self._front_end = HttpFrontEnd(routes, port=self._port, bind=self._bind,
                                           function_key=env.get(FUNCTION_KEY_SETTING) or None, worker=worker)
        except ConnectorError:
            self._release()
            raise
        self._front_end.start()
        for trigger in (*self._timers, *self._pollers):
            trigger.start()
        self._log_functions(routes)
        return self

    def stop(self) -> None:
        """Stop the server, timers and pollers and wait for invocations in flight; safe to call twice."""
        if self._front_end is not None:
            self._front_end.stop()
        for trigger in (*self._timers, *self._pollers):
            trigger.stop()
        self._release()

    def _release(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _timer(self, function: HostedFunction, env: Mapping[str, str], worker: Worker) -> TimerRunner:
        expression = resolve_settings(function.trigger.schedule, env, f"the schedule of {function.name}")
        try:
            schedule = ncrontab.parse(expression)
            schedule.next_after(_now())
        except ncrontab.CronError as exc:
            raise ConfigError(f"function {function.name}: {exc}") from None
        return TimerRunner(function, schedule, run_on_startup=bool(function.trigger.run_on_startup), worker=worker)

    def _poller(self, function: HostedFunction, env: Mapping[str, str], executor: ThreadPoolExecutor,
                worker: Worker) -> QueuePoller:
        queue_name = resolve_settings(function.trigger.queue_name, env, f"the queue name of {function.name}")
        connection = connection_string(function.trigger.connection, env, function.name)
        return QueuePoller(function, queue_name=queue_name, connection=connection, options=self.config.queues,
                           executor=executor, worker=worker)

    def _log_functions(self, routes: list[Route]) -> None:
        lines = [f"  {route.function.name}: {route.describe(self.url)}" for route in routes]
        lines += [f"  {timer.function.name}: timerTrigger '{timer.schedule.expression}' (UTC)"
                  + (", runs on startup" if timer.run_on_startup else "") for timer in self._timers]
        lines += [f"  {poller.function.name}: queueTrigger '{poller.queue_name}'" for poller in self._pollers]
        lines += [f"  {name}: disabled ({DISABLED_SETTING.format(name=name)})" for name in self.disabled]
        threads = self._worker.threads if self._worker else 0
        log.info("Functions (sync ones run on %d worker threads, %s):\n%s", threads, THREAD_COUNT_SETTING,
                 "\n".join(lines))

    def __enter__(self) -> FunctionHost:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def load_target(target: str) -> tuple[str, func.FunctionApp]:
    """Import `module:attribute` and check it is a FunctionApp.

    Raises:
        ConfigError: the target is malformed, the module cannot be found, or the attribute is wrong.
    """
    module_name, _, attribute = target.partition(":")
    app_root(module_name)  # a clear error when the module is not on the path
    app = getattr(importlib.import_module(module_name), attribute or "app", None)
    if not isinstance(app, func.FunctionApp):
        raise ConfigError(f"{target}: expected a func.FunctionApp, found {type(app).__name__}")
    return module_name, app


def app_root(module_name: str) -> Path:
    """The folder of the app's module, where host.json and local.settings.json live (found without importing)."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise ConfigError(f"cannot find the app module {module_name!r}: run from the repository root or pass --app")
    return Path(spec.origin).resolve().parent


def main(argv: list[str] | None = None) -> int:
    """Run the host until SIGINT/SIGTERM. Exit codes: 0 stopped, 1 storage or port unavailable, 2 bad config."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=7071, help="HTTP port (0 = any free port); default 7071")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on; default 127.0.0.1")
    parser.add_argument("--app", default=DEFAULT_TARGET, help=f"module:attribute of the app; default {DEFAULT_TARGET}")
    parser.add_argument("--host-json", type=Path, help="host.json to use; default: the one next to the app module")
    parser.add_argument("--settings-file", type=Path, help="default: local.settings.json next to the app module")
    parser.add_argument("--no-settings-file", action="store_true", help="take settings from the environment only")
    parser.add_argument("--verbose", action="store_true", help="also log tracebacks of failed invocations")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("azure").setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)

    try:
        if not args.no_settings_file:
            module_name = args.app.partition(":")[0]
            load_local_settings(args.settings_file or app_root(module_name) / "local.settings.json")
        host = FunctionHost.from_target(args.app, host_json=args.host_json, port=args.port, bind=args.bind)
        host.start()
    except ConfigError as exc:
        print(f"sandbox.host: {exc}", file=sys.stderr)
        return 2
    except ConnectorError as exc:
        print(f"sandbox.host: {exc}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    log.info("Host started: %s (Ctrl+C to stop)", host.url)
    while not stopping.wait(0.5):
        pass
    log.info("Stopping the host")
    host.stop()
    log.info("Host stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
