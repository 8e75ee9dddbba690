"""The local Functions host against the real Azurite: HTTP routes and keys, timers, queues and poison,
configuration errors, clean shutdown.

HTTP behaviour is checked in-process (`FunctionHost`); timers and queues through the `function_host`
fixture, i.e. `python -m sandbox.host` as a process, as developers and the other tests run it.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from sandbox.azurite import ACCOUNT, ACCOUNT_KEY, free_port
from sandbox.host import FunctionHost, main
from sandbox.host_index import REFUSED
from sandbox.host_queues import connection_string
from shared.errors import ConfigError
from tests.apps.host_sample_app import app as sample_app
from tests.fixtures.host import ROOT

SAMPLE = "tests.apps.host_sample_app:app"
KEY = "local-test-key"
NEVER = "0 0 0 1 JAN *"
FAST_QUEUES = {"version": "2.0", "extensions": {"queues": {
    "maxDequeueCount": 3, "visibilityTimeout": "00:00:00", "maxPollingInterval": "00:00:00.200", "batchSize": 8}}}


def unique_queue() -> str:
    return "host-" + uuid.uuid4().hex[:12]


def sample_env(markers: Path, queue: str, schedule: str = NEVER) -> dict[str, str]:
    return {"HOST_SAMPLE_MARKERS": str(markers), "HOST_SAMPLE_SCHEDULE": schedule, "HOST_SAMPLE_QUEUE": queue}


def records(markers: Path, kind: str) -> list[dict[str, Any]]:
    path = markers / f"{kind}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return result


def queue_client(azurite: str, name: str, *, encoded: bool = True) -> QueueClient:
    if encoded:
        return QueueClient.from_connection_string(azurite, name, message_encode_policy=TextBase64EncodePolicy(),
                                                  message_decode_policy=TextBase64DecodePolicy())
    return QueueClient.from_connection_string(azurite, name)


def peek(client: QueueClient) -> list[Any]:
    """The visible messages of a queue; none when the queue does not exist (yet)."""
    try:
        return list(client.peek_messages(max_messages=32))
    except ResourceNotFoundError:
        return []


@pytest.fixture(scope="module")
def keyed_host(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunctionHost]:
    """The sample app in-process, with COSELL_LOCAL_FUNCTION_KEY set (so function-level routes need it).

    The host reads its settings at start; they are removed again once the startup run of the timer has
    written its marker, so they do not leak into the other tests of this module.
    """
    markers = tmp_path_factory.mktemp("markers")
    env = {**sample_env(markers, unique_queue()), "AzureWebJobsStorage": azurite, "COSELL_STORAGE": azurite,
           "COSELL_LOCAL_FUNCTION_KEY": KEY}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        host = FunctionHost(sample_app).start()
        wait_until(lambda: records(markers, "tick"), what="the startup run of the timer")
    yield host
    host.stop()


# --- HTTP -------------------------------------------------------------------------------------------------

def test_anonymous_route_gets_its_route_parameter_without_a_key(keyed_host: FunctionHost) -> None:
    response = requests.get(f"{keyed_host.url}/api/hello/Ada", timeout=5)
    assert response.status_code == 200
    assert response.text == "Hello, Ada"
    assert response.headers["X-Sample"] == "yes"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_function_level_route_needs_the_key_as_code_or_header(keyed_host: FunctionHost) -> None:
    url = f"{keyed_host.url}/api/items/42"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, params={"code": "wrong"}, timeout=5).status_code == 401
    by_code = requests.get(url, params={"code": KEY, "x": "1"}, timeout=5)
    by_header = requests.delete(url, headers={"x-functions-key": KEY}, timeout=5)
    assert by_code.status_code == by_header.status_code == 200
    assert by_code.json() == {"route": {"id": "42"}, "method": "GET", "params": {"code": KEY, "x": "1"}}
    assert by_code.headers["Content-Type"] == "application/json; charset=utf-8"
    assert by_header.json()["method"] == "DELETE"


def test_optional_route_parameter_may_be_left_out(keyed_host: FunctionHost) -> None:
    response = requests.get(f"{keyed_host.url}/api/items", params={"code": KEY}, timeout=5)
    assert response.json()["route"] == {}


def test_literal_route_wins_over_a_parameter_and_inherits_the_apps_auth_level(keyed_host: FunctionHost) -> None:
    assert requests.get(f"{keyed_host.url}/api/items/new", timeout=5).status_code == 401
    response = requests.get(f"{keyed_host.url}/api/items/new", params={"code": KEY}, timeout=5)
    assert response.text == "the literal route"


def test_unknown_route_is_404_and_wrong_method_is_405(keyed_host: FunctionHost) -> None:
    assert requests.get(f"{keyed_host.url}/api/nothing/here", timeout=5).status_code == 404
    assert requests.get(f"{keyed_host.url}/hello/Ada", timeout=5).status_code == 404  # no /api prefix
    response = requests.post(f"{keyed_host.url}/api/hello/Ada", timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


def test_async_function_gets_the_body_and_sets_the_status(keyed_host: FunctionHost) -> None:
    response = requests.post(f"{keyed_host.url}/api/echo", data=b"\x00binary\xff", timeout=5)
    assert response.status_code == 201
    assert response.content == b"\x00binary\xff"
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_an_exception_is_a_500_with_a_short_body_and_one_log_line(
        keyed_host: FunctionHost, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="sandbox.host"):
        response = requests.get(f"{keyed_host.url}/api/boom", headers={"x-request-id": "req-123"}, timeout=5)
    assert response.status_code == 500
    assert len(response.content) < 100 and b"RuntimeError" not in response.content
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executed boom")]
    assert "GET /api/boom" in line and "-> 500" in line and "request-id req-123" in line
    assert "RuntimeError: the sample function fails on purpose" in line and " ms " in line


def test_the_key_never_reaches_the_log(keyed_host: FunctionHost, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="sandbox.host"):
        requests.get(f"{keyed_host.url}/api/items/7", params={"code": KEY}, timeout=5)
        requests.get(f"{keyed_host.url}/api/items/7", params={"code": "guess"}, timeout=5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("Executed item" in m and "GET /api/items/7" in m for m in messages)
    assert any("-> 401" in m for m in messages)
    assert not any(KEY in m or "guess" in m for m in messages)


def test_a_connection_is_kept_alive_and_a_chunked_body_is_read_whole(keyed_host: FunctionHost) -> None:
    """HTTP/1.1 as Kestrel serves it: several requests on one connection, Content-Length or chunked bodies."""
    connection = http.client.HTTPConnection("127.0.0.1", int(keyed_host.url.rsplit(":", 1)[1]), timeout=5)
    try:
        connection.request("GET", "/api/hello/Ada")
        first = connection.getresponse()
        assert (first.status, first.read(), first.will_close) == (200, b"Hello, Ada", False)
        local_port = connection.sock.getsockname()[1]
        connection.request("POST", "/api/echo", body=iter([b"two ", b"chunks"]), encode_chunked=True)
        echoed = connection.getresponse()
        assert (echoed.status, echoed.read()) == (201, b"two chunks")
        connection.request("GET", "/api/hello/Grace")  # nothing of the chunked body was left unread
        assert connection.getresponse().read() == b"Hello, Grace"
        assert connection.sock.getsockname()[1] == local_port, "every request went over the first connection"
        # TCP_NODELAY on the host's side, as Kestrel's default: else a kept-alive answer's body, written after
        # its headers, waits for this side's delayed ACK (40 ms a request).
        [served] = [s for s in keyed_host._front_end._server._connections if s.getpeername()[1] == local_port]
        assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        connection.close()


def test_stop_does_not_wait_for_an_idle_kept_alive_connection(
        sample_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    before = set(threading.enumerate())
    host = FunctionHost(sample_app).start()
    connection = http.client.HTTPConnection("127.0.0.1", int(host.url.rsplit(":", 1)[1]), timeout=5)
    connection.request("GET", "/api/hello/x")
    assert connection.getresponse().read() == b"Hello, x"  # the connection stays open, its thread waiting
    started = time.monotonic()
    host.stop()
    assert time.monotonic() - started < 3, "stop waited for the kept-alive connection's 30 s timeout"
    assert set(threading.enumerate()) - before == set()
    connection.close()


def test_sync_functions_share_the_workers_pool_of_python_threadpool_thread_count(
        function_host: Callable[..., Any], azurite: str, tmp_path: Path) -> None:
    """As the Python worker: every sync invocation runs on one pool of PYTHON_THREADPOOL_THREAD_COUNT threads,
    however many messages a batch hands over at once."""
    queue = unique_queue()
    client = queue_client(azurite, queue)
    client.create_queue()
    for n in range(6):
        client.send_message(f"slow-{n}")
    host = function_host(SAMPLE, env={**sample_env(tmp_path, queue), "PYTHON_THREADPOOL_THREAD_COUNT": "2"},
                         host_json=FAST_QUEUES)
    done = wait_until(lambda: len(found := records(tmp_path, "work")) >= 6 and found, what="six messages")
    assert host.stop() == 0
    assert len({r["thread"] for r in done}) == 2
    assert "sync ones run on 2 worker threads, PYTHON_THREADPOOL_THREAD_COUNT" in host.log()
    overlapping = max(sum(1 for other in done if other["started"] <= r["started"] < other["at"]) for r in done)
    assert overlapping == 2, "never more than two invocations at once"


def test_without_a_key_setting_function_routes_are_open(function_host: Callable[..., Any], tmp_path: Path) -> None:
    host = function_host(SAMPLE, env={**sample_env(tmp_path, unique_queue()), "COSELL_LOCAL_FUNCTION_KEY": None})
    assert requests.get(f"{host.url}/api/items/1", timeout=5).json()["route"] == {"id": "1"}
    assert host.stop() == 0
    assert "Host stopped" in host.log()


def test_the_real_function_app_is_served(function_host: Callable[..., Any]) -> None:
    host = function_host(settings_file=ROOT / "local.settings.example.json")
    response = requests.get(f"{host.url}/api/health", timeout=10)
    assert response.status_code == 200 and response.json()["storage"] == "ok"
    host.wait_for_log(r"Executed health \[httpTrigger GET /api/health\] -> 200")


# --- timers ------------------------------------------------------------------------------------------------

def test_timer_runs_on_startup_then_on_its_schedule(function_host: Callable[..., Any], tmp_path: Path) -> None:
    host = function_host(SAMPLE, env=sample_env(tmp_path, unique_queue(), schedule="* * * * * *"))
    ticks = wait_until(lambda: len(found := records(tmp_path, "tick")) >= 4 and found, what="four ticks")
    assert host.stop() == 0
    assert ticks[0]["past_due"] is False  # the startup run; later ones are past due only if over 1 s late
    scheduled = [tick["at"] for tick in ticks[1:]]
    assert len({int(moment) for moment in scheduled}) == len(scheduled), "one scheduled run per second"
    assert all(later - earlier > 0.5 for earlier, later in zip(scheduled, scheduled[1:]))
    assert "Executed tick [timerTrigger * * * * * *] Succeeded" in host.log()


# --- queues ------------------------------------------------------------------------------------------------

def test_failing_message_goes_to_poison_after_max_dequeue_count_tries(
        function_host: Callable[..., Any], azurite: str, tmp_path: Path) -> None:
    queue = unique_queue()
    host = function_host(SAMPLE, env=sample_env(tmp_path, queue), host_json=FAST_QUEUES)
    sent = queue_client(azurite, queue).send_message("fail")
    queue_client(azurite, queue, encoded=False).send_message("not base64!")
    poison = queue_client(azurite, f"{queue}-poison", encoded=False)
    moved = wait_until(lambda: len(found := peek(poison)) >= 2 and found, what="two poison messages")
    unchanged = [base64.b64encode(b"fail").decode(), "not base64!"]
    assert sorted(message.content for message in moved) == sorted(unchanged)
    tries = [r for r in records(tmp_path, "work") if r["id"] == sent.id]
    assert [t["dequeue_count"] for t in tries] == [1, 2, 3]
    assert len(records(tmp_path, "work")) == 3, "the non-base64 message never reached the function"
    assert not peek(queue_client(azurite, queue))
    host.wait_for_log(rf"Moved message {sent.id} of queue {queue} to {queue}-poison: it failed 3 times")


def test_good_messages_are_processed_once_in_parallel_and_deleted(
        function_host: Callable[..., Any], azurite: str, tmp_path: Path) -> None:
    queue = unique_queue()
    client = queue_client(azurite, queue)
    client.create_queue()
    bodies = [f"slow-{n}" for n in range(4)]
    for body in bodies:
        client.send_message(body)
    host = function_host(SAMPLE, env=sample_env(tmp_path, queue), host_json=FAST_QUEUES)
    done = wait_until(lambda: len(found := records(tmp_path, "work")) >= 4 and found, what="four messages")
    wait_until(lambda: not peek(client), what="an empty queue")
    time.sleep(0.5)  # a message that was not deleted would come back right away (visibilityTimeout 0)
    assert sorted(r["body"] for r in records(tmp_path, "work")) == bodies
    assert {r["dequeue_count"] for r in done} == {1}
    assert max(r["started"] for r in done) < min(r["at"] for r in done), "the batch ran in parallel"
    assert len({r["thread"] for r in done}) == 4
    with pytest.raises(ResourceNotFoundError):  # nothing was ever poisoned, so the host never created it
        queue_client(azurite, f"{queue}-poison").get_queue_properties()
    assert host.stop() == 0


def test_a_disabled_function_is_ignored_as_azure_ignores_it(
        azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`AzureWebJobs.<name>.Disabled` = true: no queue listener, no timer, 404 on the route; the rest runs."""
    queue = unique_queue()
    client = queue_client(azurite, queue)
    client.create_queue()
    client.send_message("held")
    for name, value in {**sample_env(tmp_path, queue, schedule="* * * * * *"), "AzureWebJobsStorage": azurite,
                        "COSELL_STORAGE": azurite, "AzureWebJobs.work.Disabled": "true",
                        "AzureWebJobs.tick.Disabled": "True", "AzureWebJobs.hello.Disabled": "1",
                        "AzureWebJobs.echo.Disabled": "false"}.items():
        monkeypatch.setenv(name, value)
    host = FunctionHost(sample_app, host_json=FAST_QUEUES).start()
    try:
        assert requests.get(f"{host.url}/api/hello/Ada", timeout=5).status_code == 404
        assert requests.post(f"{host.url}/api/echo", data=b"hi", timeout=5).status_code == 201  # "false": enabled
        time.sleep(1.5)  # several polls and ticks would have happened by now
        assert records(tmp_path, "work") == [] and records(tmp_path, "tick") == []
        assert [m.content for m in peek(client)] == ["held"]
        assert sorted(host.disabled) == ["hello", "tick", "work"]
    finally:
        host.stop()


# --- configuration errors and shutdown ---------------------------------------------------------------------

def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["--app", SAMPLE, "--port", "0", *args])
    error = capsys.readouterr().err.strip()
    return code, error


@pytest.fixture
def sample_settings(monkeypatch: pytest.MonkeyPatch, azurite: str, tmp_path: Path) -> dict[str, str]:
    env = {**sample_env(tmp_path, unique_queue()), "AzureWebJobsStorage": azurite, "COSELL_STORAGE": azurite}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.mark.parametrize(("missing", "function", "where"), [
    ("HOST_SAMPLE_SCHEDULE", "tick", "schedule"),
    ("HOST_SAMPLE_QUEUE", "work", "queue name"),
])
def test_a_missing_percent_setting_is_one_line_naming_it(
        sample_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        missing: str, function: str, where: str) -> None:
    monkeypatch.delenv(missing)
    code, error = run_main(["--no-settings-file"], capsys)
    assert code == 2
    assert error == (f"sandbox.host: {REFUSED} function {function}: '%{missing}%' in the {where} does not resolve "
                     f"to a value: set app setting {missing}")


def test_a_bad_schedule_names_the_function(sample_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOST_SAMPLE_SCHEDULE", "0 */5 * * *")
    code, error = run_main(["--no-settings-file"], capsys)
    assert code == 2
    assert error.startswith(f"sandbox.host: {REFUSED} function tick: schedule '0 */5 * * *' has 5 fields")
    assert error.endswith("(from %HOST_SAMPLE_SCHEDULE%)") and "\n" not in error


def test_a_malformed_settings_file_or_host_json_exits_2_with_one_line(
        sample_settings: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text("{not json")
    code, error = run_main(["--settings-file", str(settings)], capsys)
    assert code == 2 and "local.settings.json is not valid JSON" in error and "\n" not in error
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"extensions": {"queues": {"visibilityTimeout": "30s"}}}))
    code, error = run_main(["--no-settings-file", "--host-json", str(host_json)], capsys)
    assert code == 2
    assert error == ("sandbox.host: host.json extensions.queues.visibilityTimeout: '30s' is not a timespan "
                     "like \"00:00:30\" (hh:mm:ss)")


def test_unreachable_storage_says_what_to_do(sample_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    monkeypatch.setenv("COSELL_STORAGE", f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};"
                       f"AccountKey={ACCOUNT_KEY};QueueEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")
    code, error = run_main(["--no-settings-file"], capsys)
    assert code == 1
    assert error.startswith(f"sandbox.host: cannot reach queue storage at http://127.0.0.1:{port}/{ACCOUNT} "
                            "for function work")
    assert "start Azurite" in error and ACCOUNT_KEY not in error and "\n" not in error


def test_an_unknown_app_module_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--app", "tests.apps.no_such_app:app", "--no-settings-file"]) == 2
    assert "cannot find the app module 'tests.apps.no_such_app'" in capsys.readouterr().err


def test_route_prefix_comes_from_host_json_and_stop_leaves_no_thread(
        sample_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST_SAMPLE_SCHEDULE", "* * * * * *")
    before = set(threading.enumerate())
    host = FunctionHost(sample_app, host_json={"version": "2.0", "extensions": {"http": {"routePrefix": "/v1/"}}}).start()
    assert requests.get(f"{host.url}/v1/hello/x", timeout=5).text == "Hello, x"
    assert requests.get(f"{host.url}/api/hello/x", timeout=5).status_code == 404
    assert {t.name for t in set(threading.enumerate()) - before} >= {"host-http", "host-timer-tick", "host-queue-work"}
    host.stop()
    assert set(threading.enumerate()) - before == set()


def test_queue_connection_settings_resolve_like_the_real_queue_extension() -> None:
    # AzureWebJobs<name> first, then <name>; no name means AzureWebJobsStorage; a named one has no fallback.
    both = {"COSELL_STORAGE": "cosell", "AzureWebJobsStorage": "web-jobs"}
    assert connection_string("COSELL_STORAGE", both, "work") == "cosell"
    assert connection_string("COSELL_STORAGE", {**both, "AzureWebJobsCOSELL_STORAGE": "prefixed"}, "work") == "prefixed"
    assert connection_string(None, both, "work") == "web-jobs"
    with pytest.raises(ConfigError, match="connection setting COSELL_STORAGE is not set"):
        connection_string("COSELL_STORAGE", {"AzureWebJobsStorage": "web-jobs"}, "work")
    identity = {"COSELL_STORAGE": "", "COSELL_STORAGE__accountName": "prod", "AzureWebJobsStorage": "web-jobs"}
    with pytest.raises(ConfigError, match="COSELL_STORAGE__accountName asks for an identity-based connection"):
        connection_string("COSELL_STORAGE", identity, "work")


def test_a_queue_trigger_without_its_own_connection_is_refused_as_azure_would(
        sample_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("COSELL_STORAGE")  # AzureWebJobsStorage is still set: the real host does not fall back to it
    code, error = run_main(["--no-settings-file"], capsys)
    assert code == 2
    assert error == (f"sandbox.host: {REFUSED} function work: storage connection 'COSELL_STORAGE' is not set: set "
                     "COSELL_STORAGE (a connection string) or COSELL_STORAGE__queueServiceUri (identity-based)")


def _apps_the_local_host_refuses() -> list[tuple[func.FunctionApp, str]]:
    catch_all, blob, context = func.FunctionApp(), func.FunctionApp(), func.FunctionApp()

    @catch_all.route(route="files/{*path}")
    def files(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse()

    @blob.route(route="doc")
    @blob.blob_input(arg_name="doc", path="docs/one.json", connection="AzureWebJobsStorage")
    def with_blob(req: func.HttpRequest, doc: func.InputStream) -> func.HttpResponse:
        return func.HttpResponse()

    @context.route(route="ctx")
    def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return func.HttpResponse()

    return [(catch_all, "function files: route segment '{*path}' uses more than {name} and {name?}"),
            (blob, "function with_blob: the local host does not run blob bindings ('doc')"),
            (context, "function with_context: the local host passes only 'req', not context")]


@pytest.mark.parametrize(("app", "message"), _apps_the_local_host_refuses())
def test_what_the_local_host_cannot_run_is_refused_at_start(app: func.FunctionApp, message: str) -> None:
    host = FunctionHost(app)
    with pytest.raises(ConfigError) as error:
        host.start()
    assert str(error.value).startswith(message)
    host.stop()
