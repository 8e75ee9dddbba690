"""The sandbox the benchmarks measure: Azurite, both simulators in this process, and the real
`function_app.py` on the local host as a child process, the way `make run` runs it.

Why the simulators in this process: the benchmarks act as the seller and as Microsoft through the
simulators' own methods (no HTTP, no API usage counted) and read both sides without disturbing them.
The host is a separate process, so its queue polling, thread pool and cold caches are the real ones.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import requests

from sandbox.azurite import Azurite
from sandbox.ca import SandboxCA
from sandbox.partner_center import PartnerCenterSim
from sandbox.salesforce import SalesforceSim

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
FAST_QUEUES = {"maxPollingInterval": "00:00:00.100", "visibilityTimeout": "00:00:01"}
"""host.json's queue settings with fast polling: an idle queue is looked at every 100 ms, not every 2 s."""
QUIET = "0 0 0 1 1 *"
"""A timer schedule that does not fire while a benchmark runs (midnight on 1 January)."""
EVERY_SECOND = "* * * * * *"
_READY = re.compile(r"Host started: (http://\S+)")
_CONNECTOR_PREFIXES = ("PARTNER_CENTER_", "SALESFORCE_", "COSELL_")


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used, from /proc (0 where there is none: not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int) -> float:
    """A process's resident set (VmRSS) in MB, from /proc (0 where there is none)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else 0.0


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class BenchWorld:
    """Start with `with BenchWorld() as world:`; `start_host(poll=...)` (re)starts the function app."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="cosell-bench-")
        self.folder = Path(self._tmp.name)
        self.azurite = Azurite()
        self.pc: PartnerCenterSim | None = None
        self.sf: SalesforceSim | None = None
        self.host: subprocess.Popen[bytes] | None = None
        self.host_url = ""
        self.env: dict[str, str] = {}
        self._saved_env = dict(os.environ)

    def __enter__(self) -> BenchWorld:
        try:
            self.azurite.start()
            ca = SandboxCA.load_or_create(self.folder / "ca")
            self.pc = PartnerCenterSim(ca, delivery_delays=(0.3, 0.6, 1.0)).start()
            self.sf = SalesforceSim(ca, multi_currency=True, currencies=["USD", "EUR"]).start()
            self.env = {**self.pc.settings_env(), **self.sf.credentials.settings_env(),
                        "AzureWebJobsStorage": self.azurite.connection_string,
                        # The queue triggers name COSELL_STORAGE, which the host does not default.
                        "COSELL_STORAGE": self.azurite.connection_string,
                        "COSELL_MAPPING_FILE": str(ROOT / "mappings" / "salesforce.json"),
                        # The worker's thread pool as infra/main.bicep deploys it (Python's default is CPUs + 4).
                        "PYTHON_THREADPOOL_THREAD_COUNT": "16"}
            for name in [n for n in os.environ if n.startswith(_CONNECTOR_PREFIXES)]:
                del os.environ[name]
            os.environ.update(self.env)  # this process's clients reach the same simulators and storage
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_host()
        for part in (self.pc, self.sf):
            if part is not None:
                part.stop()
        self.azurite.stop()
        os.environ.clear()
        os.environ.update(self._saved_env)
        self._tmp.cleanup()

    @property
    def partner_center(self) -> PartnerCenterSim:
        assert self.pc is not None
        return self.pc

    @property
    def salesforce(self) -> SalesforceSim:
        assert self.sf is not None
        return self.sf

    def start_host(self, *, poll: str, settings: Mapping[str, str] | None = None) -> None:
        """Start the real app on the local host with the repository's host.json, fast polling, and the
        Salesforce poll on `poll`; (re)register the webhook through the app's own route."""
        self.stop_host()
        self.host, self.host_url = self.spawn_host(poll=poll, name="host", settings=settings)
        answer = self.app("POST", "partnercenter/webhook",
                          json={"url": f"{self.host_url}/api/partnercenter/events", "overwrite": True})
        answer.raise_for_status()

    def spawn_host(self, *, poll: str, name: str,
                   settings: Mapping[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
        """One more local host on the same simulators and Azurite (its log: `<name>.log` in `folder`), with
        `settings` as further app settings; returns its process and URL once it listens. The caller stops it
        (`stop_process`)."""
        host_json = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
        host_json["extensions"]["queues"].update(FAST_QUEUES)
        host_json_path = self.folder / "host.json"
        host_json_path.write_text(json.dumps(host_json), encoding="utf-8")
        env = {n: v for n, v in os.environ.items() if not n.startswith(_CONNECTOR_PREFIXES)}
        env.update(self.env, COSELL_SF_POLL_SCHEDULE=poll, COSELL_PC_RECONCILE_SCHEDULE=QUIET,
                   PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
        env.update(settings or {})
        log_path = self.folder / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sandbox.host", "--port", "0", "--no-settings-file",
                 "--host-json", str(host_json_path)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

        def started() -> str | None:
            if process.poll() is not None:
                raise RuntimeError(f"the host exited: {log_path.read_text(errors='replace')[-2000:]}")
            found = _READY.search(log_path.read_text(errors="replace"))
            return found.group(1) if found else None

        try:
            return process, wait_for(started, timeout=60, what="the Functions host to start")
        except BaseException:
            stop_process(process)
            raise

    def stop_host(self) -> None:
        if self.host is not None:
            stop_process(self.host)

    def app(self, method: str, route: str, **kwargs: Any) -> requests.Response:
        """Call one of the app's HTTP routes."""
        return requests.request(method, f"{self.host_url}/api/{route}", timeout=30, **kwargs)

    def queue_depth(self) -> int:
        """Messages in the sync queues, hidden ones included."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.queue import QueueServiceClient

        service = QueueServiceClient.from_connection_string(self.azurite.connection_string)
        total = 0
        for name in ("referral-changes", "opportunity-changes"):
            try:
                total += service.get_queue_client(name).get_queue_properties().approximate_message_count or 0
            except ResourceNotFoundError:
                continue
        return total

    def wait_quiet(self, *, quiet_for: float = 1.5, timeout: float = 120) -> None:
        """Until no sync is queued, no webhook is on its way, and that held for `quiet_for` seconds."""
        quiet_since: float | None = None

        def quiet() -> bool:
            nonlocal quiet_since
            busy = self.queue_depth() > 0 or self.partner_center.pending_deliveries() > 0
            now = time.monotonic()
            quiet_since = None if busy else (quiet_since or now)
            return quiet_since is not None and now - quiet_since >= quiet_for

        wait_for(quiet, timeout=timeout, what="the connector to be quiet", every=0.1)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a host finishes what it runs), then SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


__all__ = ["EVERY_SECOND", "QUIET", "BenchWorld", "stop_process", "wait_for"]
