"""`make run`: the whole connector on one machine, with nothing to configure.

It starts, in this order: Azurite (in memory), the Partner Center and Salesforce simulators (HTTPS from the
sandbox CA kept in `.sandbox/ca`, on ports 7081/7082 when free), and the local Functions host serving the
real `function_app.py` as a child process (`python -m sandbox.host`, port 7071 unless `--port`), with the
settings a developer would put in local.settings.json: they are written to `.sandbox/local.settings.json`,
so `python -m sandbox.host --settings-file .sandbox/local.settings.json` or `func start` (with `--no-host`)
run against the same simulators. Then it registers the Partner Center webhook through the app's own
`POST /api/partnercenter/webhook`, seeds demo data, and prints one line per sync from the sync log until
Ctrl-C (or SIGTERM), which stops every part it started.

`--demo` then plays the seed's scenarios (sandbox/demo.py); with `--exit-after-demo` it stops afterwards
and exits 0 only when every step was observed on the other side.

Exit codes: 0 stopped cleanly (or the demo passed), 1 the demo failed or a part died while running,
2 the sandbox could not start (a port in use, Azurite missing, a part that did not come up).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import requests

from sandbox.actors import INFO_FILE, Actors, SandboxInfo
from sandbox.azurite import Azurite
from sandbox.ca import SandboxCA
from sandbox.demo import STEP_TIMEOUT, Demo, seed
from shared.errors import ConfigError, ConnectorError, Unavailable
from shared.settings import PUSH_POLL_SCHEDULE

if TYPE_CHECKING:
    from sandbox.partner_center import PartnerCenterSim
    from sandbox.salesforce import SalesforceSim
    from sandbox.synclines import SyncLogTail
    from shared.models.records import SyncLogEntry

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = ROOT / ".sandbox"
DEFAULT_PORT = 7071
PARTNER_CENTER_PORT = 7081
SALESFORCE_PORT = 7082
POLL_SCHEDULE = PUSH_POLL_SCHEDULE
"""The Salesforce change poll, as a partner deploys it with push: every 15 minutes, a safety net. A seller's
edit reaches the app at once through the simulator's outbound messages (its Flows post to the app)."""
RECONCILE_SCHEDULE = "0 * * * * *"
"""The reconcile (the safety net for lost webhooks): every minute."""
HOST_START_TIMEOUT = 60.0
HOST_STOP_TIMEOUT = 15.0
_CONNECTOR_PREFIXES = ("PARTNER_CENTER_", "SALESFORCE_", "COSELL_")


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (with SO_REUSEADDR, as the servers use)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _choose_port(explicit: int | None, default: int, what: str) -> int:
    """`explicit` when given (it must be free; 0 = any), else `default` when free, else any free port."""
    if explicit is None:
        return default if port_free(default) else 0
    if explicit and not port_free(explicit):
        raise ConfigError(f"port {explicit} for the {what} is in use: stop what listens there or pick another port")
    return explicit


class Sandbox:
    """Every part of the sandbox, started in order and stopped in reverse, each exactly once.

    Args:
        state_dir: where the CA, the generated settings, the host's log and `sandbox.json` live.
        port: the Functions host's HTTP port.
        pc_port / sf_port: the simulators' ports (None: 7081/7082 when free, else any; 0: any).
        run_host: start the local host as a child process; False waits for one the developer starts.
        write: where progress lines go.
    """

    def __init__(self, state_dir: Path, *, port: int, pc_port: int | None, sf_port: int | None,
                 run_host: bool, write: Callable[[str], None]) -> None:
        self.state_dir, self.port, self.run_host, self.write = state_dir, port, run_host, write
        self._pc_port, self._sf_port = pc_port, sf_port
        self.function_key = secrets.token_urlsafe(18)
        self.azurite: Azurite | None = None
        self.pc: PartnerCenterSim | None = None
        self.sf: SalesforceSim | None = None
        self.host: subprocess.Popen[bytes] | None = None
        self.tail: SyncLogTail | None = None
        self.info: SandboxInfo | None = None
        self.actors: Actors | None = None

    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings_path(self) -> Path:
        return self.state_dir / "local.settings.json"

    @property
    def host_log(self) -> Path:
        return self.state_dir / "host.log"

    # Start ----------------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start every part in order; on a failure raise (ConfigError / Unavailable / ConnectorError) and leave
        what did start to `stop()`, which the caller always runs."""
        from sandbox.partner_center import PartnerCenterSim
        from sandbox.salesforce import SalesforceSim

        if not port_free(self.port):
            raise ConfigError(f"port {self.port} is in use (another `make run`, `func start` or sandbox.host?): "
                              "stop it or pass --port N")
        pc_port = _choose_port(self._pc_port, PARTNER_CENTER_PORT, "Partner Center simulator")
        sf_port = _choose_port(self._sf_port, SALESFORCE_PORT, "Salesforce simulator")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ca = SandboxCA.load_or_create(self.state_dir / "ca")
        self.azurite = Azurite()  # kept before it starts: an interrupt during the start still stops it
        self.azurite.start()
        self.write(f"  Azurite          tables :{self.azurite.table_port}  queues :{self.azurite.queue_port}  "
                   f"blobs :{self.azurite.blob_port}  (in memory)")
        self.pc = PartnerCenterSim(ca, port=pc_port).start()
        self.write(f"  Partner Center   {self.pc.url}  (simulator)")
        self.sf = SalesforceSim(ca, port=sf_port, multi_currency=True, currencies=["USD", "EUR"],
                                outbound_endpoint=f"{self.host_url}/api/salesforce/outbound?code={self.function_key}",
                                outbound_verify=str(ca.ca_pem_path)).start()
        self.write(f"  Salesforce       {self.sf.url}  (simulator; its Flows push outbound messages to "
                   f"{self.host_url}/api/salesforce/outbound, the poll runs every 15 minutes as a safety net)")
        self._write_settings(self.settings())
        self.write(f"  Settings         {self._shown(self.settings_path)}")
        self.info = SandboxInfo(pid=os.getpid(), host_url=self.host_url, function_key=self.function_key,
                                partner_center_url=self.pc.url, salesforce_url=self.sf.url,
                                ca_pem=str(ca.ca_pem_path))
        self.actors = Actors(self.info)
        if self.run_host:
            self._start_host()
            self.write(f"  Functions host   {self.host_url}  (real function_app.py; log {self._shown(self.host_log)})")
        else:
            self._wait_for_developer_host()
        self._register_webhook()
        self.info.save(self.state_dir)
        return self

    def settings(self) -> dict[str, str]:
        """What a developer would put in local.settings.json to run the app against this sandbox."""
        assert self.azurite and self.pc and self.sf
        return {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "PYTHON_THREADPOOL_THREAD_COUNT": "16",  # as infra/main.bicep sets it: the syncs wait on I/O
            "AzureWebJobsFeatureFlags": "EnableWorkerIndexing",
            "AzureWebJobsStorage": self.azurite.connection_string,
            "COSELL_STORAGE": self.azurite.connection_string,  # the queue triggers' connection: no default
            **self.pc.settings_env(),
            **self.sf.credentials.settings_env(),
            "COSELL_MAPPING_FILE": "mappings/salesforce.json",
            "COSELL_SF_POLL_SCHEDULE": POLL_SCHEDULE,
            "COSELL_PC_RECONCILE_SCHEDULE": RECONCILE_SCHEDULE,
            "COSELL_DRY_RUN": "false",
            "COSELL_LOCAL_FUNCTION_KEY": self.function_key,
            "COSELL_PUBLIC_URL": self.host_url,
        }

    def _write_settings(self, values: dict[str, str]) -> None:
        document = {"IsEncrypted": False, "Values": values, "Host": {"LocalHttpPort": self.port}}
        tmp = self.settings_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(self.settings_path)

    def _start_host(self) -> None:
        """`python -m sandbox.host` with exactly the generated settings (a developer's exported connector
        settings must not send the sandbox's host to a real tenant or another storage account)."""
        env = {name: value for name, value in os.environ.items()
               if not (name.startswith(_CONNECTOR_PREFIXES) or name in ("AzureWebJobsStorage", "REQUESTS_CA_BUNDLE"))}
        env.update(self.settings())
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "sandbox.host", "--port", str(self.port),
                   "--settings-file", str(self.settings_path)]
        with self.host_log.open("wb") as log:
            self.host = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + HOST_START_TIMEOUT
        while not self._host_answers():
            if self.host.poll() is not None:
                raise ConfigError(f"the Functions host did not start: {self.host_failure()}")
            if time.monotonic() > deadline:
                raise Unavailable(f"the Functions host did not answer within {HOST_START_TIMEOUT:.0f} s "
                                  f"(see {self._shown(self.host_log)})")
            time.sleep(0.2)

    def _wait_for_developer_host(self) -> None:
        # A variable exported in the shell wins over the file (sandbox.host and func start both keep it).
        clashes = sorted(name for name, value in self.settings().items() if os.environ.get(name, value) != value)
        unset = "".join(f"-u {name} " for name in clashes)
        prefix = f"env {unset}" if clashes else ""
        self.write(f"  Waiting for your Functions host at {self.host_url}: in another terminal run\n"
                   f"      {prefix}python -m sandbox.host --port {self.port} --settings-file "
                   f"{self._shown(self.settings_path)}\n"
                   f"    or, with Azure Functions Core Tools:\n"
                   f"      cp {self._shown(self.settings_path)} local.settings.json && {prefix}func start --port {self.port}")
        while not self._host_answers():
            time.sleep(1)
        self.write(f"  Functions host   {self.host_url}  (yours)")

    def _host_answers(self) -> bool:
        try:
            requests.get(self.host_url + "/api/health", timeout=2)
        except requests.RequestException:
            return False
        return True

    def host_failure(self) -> str:
        """Why the host stopped: its own one-line reason (`sandbox.host: ...`), else the last line of a crash."""
        try:
            lines = [line.strip() for line in self.host_log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        code = self.host.returncode if self.host else None
        reason = next((line for line in reversed(lines) if line.startswith("sandbox.host:")), None)
        if reason is None and lines and code is not None and code > 0:
            reason = lines[-1]  # a traceback's last line names the exception
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return f"{reason + ' ' if reason else ''}({how}, log {self._shown(self.host_log)})"

    def _register_webhook(self) -> None:
        """Through the app's own route, as an operator would; the URL defaults to the app's receiver."""
        assert self.actors
        answer = self.actors.app("POST", "partnercenter/webhook", json={"overwrite": True})
        if answer.status_code not in (200, 201):
            raise ConnectorError(f"webhook registration through POST /api/partnercenter/webhook answered "
                                 f"{answer.status_code}: {answer.text[:300]}")
        outcome = answer.json()
        self.write(f"  Webhook          {outcome.get('action')} via POST /api/partnercenter/webhook -> "
                   f"{outcome.get('url')} ({', '.join(outcome.get('events') or [])})")

    def follow_sync_log(self, write: Callable[[str], None], since: dt.datetime) -> SyncLogTail:
        """Print one line per sync from now on."""
        from sandbox.synclines import SyncLogTail
        from shared.store import Store

        assert self.azurite
        store = Store.from_connection_string(self.azurite.connection_string)
        self.tail = SyncLogTail(store.synclog, write, self._name_of, since=since).start()
        return self.tail

    def _name_of(self, entry: SyncLogEntry) -> str | None:
        """The record's name, read from the simulators in this process (no API call is counted)."""
        if self.sf and entry.opportunity_id:
            record = self.sf.record("Opportunity", entry.opportunity_id)
            if record:
                return str(record.get("Name"))
        if self.pc and entry.referral_id:
            referral = self.pc.referrals.get(entry.referral_id)
            if referral:
                return str(referral.get("name"))
        return None

    def host_alive(self) -> bool:
        return self.host is None or self.host.poll() is None

    # Stop -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every part that started, newest first; safe to call after a failed start."""
        steps: list[tuple[str, Callable[[], None]]] = [
            ("sync log", lambda: self.tail and self.tail.stop()),
            ("Functions host", self._stop_host),
            ("sandbox.json", lambda: (self.state_dir / INFO_FILE).unlink(missing_ok=True) if self.info else None),
            ("HTTP session", lambda: self.actors and self.actors.close()),
            ("Partner Center simulator", lambda: self.pc and self.pc.stop()),
            ("Salesforce simulator", lambda: self.sf and self.sf.stop()),
            ("Azurite", lambda: self.azurite and self.azurite.stop()),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - one part failing to stop must not leave the others running
                self.write(f"  (could not stop the {what} cleanly: {type(exc).__name__}: {exc})")
        self.tail = self.host = self.pc = self.sf = self.azurite = self.actors = None

    def _stop_host(self) -> None:
        if self.host is None or self.host.poll() is not None:
            return
        self.host.terminate()
        try:
            self.host.wait(HOST_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.host.kill()
            self.host.wait()

    @staticmethod
    def _shown(path: Path) -> str:
        """A path as a developer would type it from the repository root."""
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)


class _Printer:
    """print() that flushes and never interleaves two threads' lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            print(line, flush=True)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP stop the sandbox the way Ctrl-C does."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Functions host port; default {DEFAULT_PORT}")
    parser.add_argument("--pc-port", type=int, help=f"Partner Center simulator port (default {PARTNER_CENTER_PORT} "
                                                    "when free, else any; 0 = any)")
    parser.add_argument("--sf-port", type=int, help=f"Salesforce simulator port (default {SALESFORCE_PORT} when free, "
                                                    "else any; 0 = any)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="state folder: CA, generated local.settings.json, host log (default .sandbox)")
    parser.add_argument("--no-host", action="store_true",
                        help="do not start the Functions host: wait for yours (func start / python -m sandbox.host)")
    parser.add_argument("--no-seed", action="store_true", help="start without the demo data")
    parser.add_argument("--demo", action="store_true", help="play the seed's scenarios once everything runs")
    parser.add_argument("--exit-after-demo", action="store_true", help="with --demo: stop after it (exit 0 = passed)")
    parser.add_argument("--demo-timeout", type=float, default=STEP_TIMEOUT, help="seconds each demo step may take")
    args = parser.parse_args(argv)
    if args.port <= 0:
        parser.error("--port must be a port number (the webhook URL is built from it)")
    args.demo = args.demo or args.exit_after_demo
    return args


def _ready(sandbox: Sandbox, write: Callable[[str], None]) -> None:
    assert sandbox.info and sandbox.pc and sandbox.sf
    write("")
    write("Ready: the co-sell connector runs locally. Ctrl-C stops everything.")
    write(f"  Status page      {sandbox.info.status_url}")
    write(f"  Health           {sandbox.host_url}/api/health")
    write(f"  Partner Center   {sandbox.pc.url}/_sandbox/state  (act as Microsoft: POST /_sandbox/referrals)")
    write(f"  Salesforce       {sandbox.sf.url}/_sandbox/state  (act as a seller: /_sandbox/seller/sobjects/...)")
    write("  Demo             make demo  (in another terminal)")
    write("Sync log (one line per sync: time, direction, outcome, record, fields before→after, duration):")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # arrows and ✔ on a terminal that cannot show them
    write = _Printer()
    logging.getLogger("azure").setLevel(logging.ERROR)  # the SDK's retry chatter would break the one-line-per-sync view
    # Ctrl-C even when started from a shell that ignores SIGINT for background jobs; SIGTERM/SIGHUP alike.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    sandbox = Sandbox(args.dir, port=args.port, pc_port=args.pc_port, sf_port=args.sf_port,
                      run_host=not args.no_host, write=write)
    code = 0
    try:
        write("Starting the co-sell connector sandbox")
        started_at = dt.datetime.now(dt.timezone.utc)
        try:
            sandbox.start()
        except ConnectorError as exc:
            print(f"sandbox.run: {exc}", file=sys.stderr, flush=True)
            return 2
        assert sandbox.actors
        sandbox.follow_sync_log(write, started_at)
        if not args.no_seed:
            write("Seeding demo data:")
            seed(sandbox.actors, write)
        _ready(sandbox, write)
        if args.demo:
            code = _play(sandbox, write, args.demo_timeout)
            if args.exit_after_demo:
                _last_lines(sandbox)
                return code
        while sandbox.host_alive():
            time.sleep(0.5)
        print(f"sandbox.run: the Functions host stopped unexpectedly: {sandbox.host_failure()}", file=sys.stderr,
              flush=True)
        return 1
    except KeyboardInterrupt:
        return code
    except ConnectorError as exc:
        print(f"sandbox.run: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean stop short
        write("Stopping: Functions host, simulators, Azurite")
        sandbox.stop()
        write("Stopped.")


def _play(sandbox: Sandbox, write: Callable[[str], None], timeout: float) -> int:
    from sandbox.demo import StepFailed

    assert sandbox.actors
    try:
        Demo(sandbox.actors, write, timeout=timeout).play()
    except StepFailed as exc:
        print(f"sandbox.run: demo {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def _last_lines(sandbox: Sandbox) -> None:
    """Before stopping after the demo: let the last syncs reach the log, and print them."""
    if sandbox.tail is None:
        return
    sandbox.tail.stop()
    deadline = time.monotonic() + 8
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        if sandbox.tail.poll():
            quiet_since = time.monotonic()


if __name__ == "__main__":
    sys.exit(main())
