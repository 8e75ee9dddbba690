"""`make run` and `make demo`: the whole sandbox as a developer starts it, and what it prints.

The sandbox runs as `python -m sandbox.run` in a child process on free ports with a state folder of the
test's own; the tests look at its output, its exit code, and at /proc for anything it left running.
The sync line format and the sync log tail are checked in-process against the session's Azurite.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.azurite import free_port
from sandbox.synclines import SyncLogTail, format_line
from shared.models.records import SyncLogEntry, SyncOutcome
from shared.sync.engine import PC_TO_SF, SF_TO_PC

ROOT = Path(__file__).resolve().parent.parent
READY = "Ready: the co-sell connector runs locally"


class SandboxProcess:
    """One `python -m sandbox.run` child, its output in a file."""

    def __init__(self, state_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.output_path = state_dir / "run-output.txt"
        command = [sys.executable, "-m", "sandbox.run", "--dir", str(state_dir), "--port", str(self.port),
                   "--pc-port", "0", "--sf-port", "0", *args]
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} was not printed (exit code {self.process.poll()}):\n{self.output()}")
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sandbox.run did not exit within {timeout} s:\n{self.output()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., SandboxProcess]]:
    """Starts `sandbox.run` children; whatever they and their children left is killed after the test."""
    started: list[SandboxProcess] = []

    def start(*args: str) -> SandboxProcess:
        started.append(SandboxProcess(tmp_path, *args))
        return started[-1]

    yield start
    for sandbox in started:
        family = descendants(sandbox.process.pid)
        sandbox.kill()
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _process_table() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            table[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return table


def _cmdline(pid: int) -> str | None:
    """The command line of a live (not zombie) process, or None."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return None
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its command line."""
    table = _process_table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in table.items():
            if ppid == parent and child not in found:
                found[child] = _cmdline(child) or ""
                frontier.append(child)
    return found


def still_running(family: dict[int, str]) -> dict[int, str]:
    """The processes of `family` still alive with the same command line (a pid may be reused)."""
    return {pid: cmd for pid, cmd in family.items() if cmd and _cmdline(pid) == cmd}


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _the_family(sandbox: SandboxProcess) -> dict[int, str]:
    family = descendants(sandbox.process.pid)
    commands = " | ".join(family.values())
    assert "azurite" in commands, f"no Azurite child: {commands}"
    assert "sandbox.host" in commands, f"no Functions host child: {commands}"
    return family


def test_demo_plays_the_seed_scenarios_and_leaves_nothing_running(start_sandbox: Callable[..., SandboxProcess],
                                                                   tmp_path: Path) -> None:
    started = time.monotonic()
    sandbox = start_sandbox("--demo", "--exit-after-demo", "--demo-timeout", "30")
    sandbox.wait_for(READY, timeout=60)
    family = _the_family(sandbox)
    settings = json.loads((tmp_path / "local.settings.json").read_text())["Values"]
    info = json.loads((tmp_path / "sandbox.json").read_text())

    code = sandbox.wait(timeout=max(5.0, 90 - (time.monotonic() - started)))
    output = sandbox.output()

    assert code == 0, output
    assert time.monotonic() - started < 90
    # Every scenario step, each followed by what was seen on the other side.
    for number, seen in [(1, "Partner Center: referral"), (2, "Salesforce: opportunity"),
                         (3, "is Active/Accepted"), (4, "Amount is 75,000 USD"), (5, "is Closed/Won")]:
        step = output.index(f"[{number}/5]")
        assert seen in output[step:], f"step {number} printed no {seen!r}:\n{output}"
    assert "Salesforce: Referral Identifier" in output and "marker ✔" in output
    assert "Demo complete: 5 of 5 steps observed" in output
    # The sync lines: both directions, the fields that moved, the seed waiting for a solution.
    assert re.search(r"PC → SF  created .*\"Woodgrove Bank - Azure landing zone\"", output), output
    assert re.search(r"PC → SF  updated .*dealValue 40000→75000", output), output
    assert re.search(r"SF → PC  updated .*stage accepted→won", output), output
    assert re.search(r"SF → PC  skipped .*\"Litware - Security assessment\".*Microsoft solution", output), output
    assert f"Status page      http://127.0.0.1:{sandbox.port}/api/status?code=" in output
    # The settings a developer can reuse, pointing at the simulators, with the function key the host enforced.
    assert settings["PARTNER_CENTER_API_URL"].startswith(info["partner_center_url"])
    assert settings["SALESFORCE_LOGIN_URL"] == info["salesforce_url"]
    assert settings["COSELL_LOCAL_FUNCTION_KEY"] == info["function_key"] and settings["COSELL_DRY_RUN"] == "false"
    assert settings["AzureWebJobsStorage"].startswith("DefaultEndpointsProtocol=http;")
    # Nothing left behind.
    assert not still_running(family), still_running(family)
    assert not listening(sandbox.port)
    assert not (tmp_path / "sandbox.json").exists()


def test_make_demo_plays_against_the_running_sandbox_then_sigint_stops_everything(
        start_sandbox: Callable[..., SandboxProcess], tmp_path: Path) -> None:
    sandbox = start_sandbox("--no-seed")
    sandbox.wait_for(READY, timeout=60)
    family = _the_family(sandbox)
    ports = [sandbox.port] + [int(p) for p in re.findall(r"https://127\.0\.0\.1:(\d+)/_sandbox/state", sandbox.output())]
    assert len(ports) == 3 and all(listening(port) for port in ports)

    demo = subprocess.run([sys.executable, "-m", "sandbox.demo", "--dir", str(tmp_path), "--timeout", "30"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert f"Playing against the sandbox at http://127.0.0.1:{sandbox.port}" in demo.stdout
    assert "Demo complete: 5 of 5 steps observed" in demo.stdout
    sandbox.wait_for("stage accepted→won", timeout=10)  # the sync lines show in the sandbox's own output

    sandbox.process.send_signal(signal.SIGINT)

    assert sandbox.wait(timeout=10) == 0
    assert sandbox.output().rstrip().endswith("Stopped.")
    assert not still_running(family), still_running(family)
    assert [port for port in ports if listening(port)] == []


def test_a_host_that_dies_stops_the_sandbox_with_its_reason(start_sandbox: Callable[..., SandboxProcess]) -> None:
    sandbox = start_sandbox("--no-seed")
    sandbox.wait_for(READY, timeout=60)
    family = _the_family(sandbox)
    host = next(pid for pid, command in family.items() if "sandbox.host" in command)

    os.kill(host, signal.SIGKILL)

    assert sandbox.wait(timeout=15) == 1
    assert "sandbox.run: the Functions host stopped unexpectedly: (killed by SIGKILL" in sandbox.output()
    assert not still_running(family), still_running(family)


def test_a_port_in_use_is_one_clear_line(start_sandbox: Callable[..., SandboxProcess]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sandbox = start_sandbox("--port", str(port))  # the last --port wins
        code = sandbox.wait(timeout=20)
    errors = [line for line in sandbox.output().splitlines() if line.startswith("sandbox.run:")]
    assert code == 2
    assert len(errors) == 1 and f"port {port} is in use" in errors[0], sandbox.output()
    assert "Traceback" not in sandbox.output()


def _entry(at: dt.datetime, **fields: object) -> SyncLogEntry:
    return SyncLogEntry(at=at, **{"direction": SF_TO_PC, "outcome": SyncOutcome.UPDATED, **fields})


def test_a_sync_line_says_direction_record_fields_and_duration() -> None:
    at = dt.datetime(2026, 5, 1, 12, 0, 3, tzinfo=dt.timezone.utc)
    entry = _entry(at, direction=PC_TO_SF, opportunity_id="006Hs000000000QIAQ",
                   referral_id="951ed306-fb1f-477e-9106-72fd403e5620", duration_ms=1530.0,
                   changes={"dealValue": [40000, 75000.0, "salesforce"], "notes": [None, "x" * 40, "salesforce"]})

    line = format_line(entry, "Fabrikam - Dynamics 365 rollout")

    assert line.startswith(at.astimezone().strftime("%H:%M:%S") + "  PC → SF  updated")
    assert '"Fabrikam - Dynamics 365 rollout"  opp 006Hs000000000QIAQ ref 951ed306' in line
    assert "dealValue 40000→75000, notes ∅→xxxxxxxxxxxxxxxxxxxxx…" in line
    assert line.endswith("1.5 s")
    skipped = format_line(_entry(at, outcome=SyncOutcome.SKIPPED, opportunity_id="006Hs0000000009IAA",
                                 message="Not shared with Partner Center yet: Add a solution.", duration_ms=84),
                          None)
    assert "SF → PC  skipped    opp 006Hs0000000009IAA  Not shared with Partner Center yet: Add a solution.  84 ms" \
        in skipped


def test_the_tail_prints_each_row_once_late_rows_too_and_a_repeated_wait_once(azurite: str,
                                                                              table_prefix: str) -> None:
    from shared.store import Store

    synclog = Store.from_connection_string(azurite, prefix=table_prefix).synclog
    now = dt.datetime.now(dt.timezone.utc)
    lines: list[str] = []
    tail = SyncLogTail(synclog, lines.append, lambda e: f"name of {e.opportunity_id}", since=now - dt.timedelta(minutes=1))
    synclog.append(_entry(now - dt.timedelta(minutes=5), opportunity_id="006old"))  # before the sandbox: history
    synclog.append(_entry(now, opportunity_id="006a", changes={"dealValue": [1, 2, "partner_center"]}))
    wait = dict(outcome=SyncOutcome.SKIPPED, opportunity_id="006w", message="Add a solution.")
    synclog.append(_entry(now + dt.timedelta(seconds=1), **wait))

    assert tail.poll() == 2
    assert tail.poll() == 0
    synclog.append(_entry(now - dt.timedelta(seconds=2), opportunity_id="006late"))  # a slower processor's row
    synclog.append(_entry(now + dt.timedelta(seconds=60), **wait))  # the reconcile's next try: same wait
    assert tail.poll() == 2

    assert [re.search(r"opp (\S+)", line).group(1) for line in lines] == ["006a", "006w", "006late"]  # type: ignore[union-attr]
    assert '"name of 006a"' in lines[0] and "dealValue 1→2" in lines[0]
