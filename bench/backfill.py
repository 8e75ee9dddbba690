"""Backfill benchmark: `run(n)` backfills `n` referrals from Microsoft that have no opportunity yet.

Each referral has its own customer (a new account), one customer contact (a new contact and a contact
role) and one solution (a solutions row): the heaviest creation path, five Salesforce records a referral.
The simulators run in a child process, so the memory measured here is the connector's alone: it should
stay flat as `n` grows, since referrals are streamed page by page and written batch by batch. Azurite is a
real one of its own.

Speed and memory come from one untraced run in a fresh process (`measure(n)`): memory is the process's
peak resident set, and what the run added to it. tracemalloc (`--trace-memory`) gives Python's own peak
but slows this process down about fourfold (every allocation is recorded), which the rate would then
measure.

Run alone: `python -m bench.backfill 10000` prints the numbers as JSON. `make bench` (owned by the bench
harness) calls `measure(n)` and puts the numbers in its table.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.world import cpu_seconds, resident_mb

ROOT = Path(__file__).resolve().parent.parent
SALESFORCE_OBJECTS = ("Account", "Contact", "Opportunity", "OpportunityContactRole", "Microsoft_Solution__c")


def referral(index: int) -> dict[str, Any]:
    """One incoming referral with a customer, a contact and a solution of its own."""
    return {
        "name": f"Bench deal {index}",
        "customerProfile": {"name": f"Bench customer {index}",
                            "team": [{"firstName": "Pat", "lastName": f"Lee {index}",
                                      "email": f"buyer{index}@bench.example"}]},
        "details": {"dealValue": 1000 + index, "currency": "USD", "closingDateTime": "2027-06-30T00:00:00Z",
                    "requirements": {"solutions": [{"id": f"bench-solution-{index % 7}", "name": "Bench solution",
                                                    "type": "Service"}]}},
    }


class _RequestProfiles:
    """cProfile of every request the simulators serve, merged.

    The simulators answer each connection in a thread of its own, and cProfile sees only the thread that
    enabled it, so each request gets a profile of its own (from its body read to its answer sent; not the
    wait for the next request on a kept-alive connection), merged at the end.
    """

    def __init__(self) -> None:
        import threading

        self.profiles: list[Any] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        """Profile the requests of every simulator server created after this call."""
        from sandbox.httpsim import SimServer

        make_handler = SimServer._handler_class
        profiles = self

        def handler_class(server: SimServer) -> Any:
            base: Any = make_handler(server)

            class Profiled(base):  # type: ignore[misc, valid-type]
                def _profiled(self) -> None:
                    profile = cProfile.Profile()
                    profile.enable()
                    try:
                        base._serve(self)
                    finally:
                        profile.disable()
                        with profiles._lock:
                            profiles.profiles.append(profile)

                do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _profiled

            return Profiled

        SimServer._handler_class = handler_class  # type: ignore[method-assign]

    def dump(self, path: str) -> None:
        import pstats

        with self._lock:
            profiles = list(self.profiles)
        if profiles:
            pstats.Stats(*profiles).dump_stats(path)


def _world(ca_dir: str, n: int, profile_to: str | None = None) -> None:
    """The child process (`python -m bench.backfill --world CA_DIR N`): both simulators, `n` referrals in
    Partner Center; prints the connector's settings as one JSON line, then answers one line per question
    read from stdin ("api": the org's API usage, "cpu": its CPU seconds so far, "records": record counts)
    until "stop" or end of input.
    With `profile_to`, every request served is profiled (setting the referrals up is not) and the merged
    profile is written there at the end."""
    from sandbox.ca import SandboxCA
    from sandbox.partner_center import PartnerCenterSim
    from sandbox.salesforce import SalesforceSim

    profiles = _RequestProfiles() if profile_to else None
    if profiles is not None:
        profiles.install()
    ca = SandboxCA.load_or_create(ca_dir)
    pc = PartnerCenterSim(ca).start()
    sf = SalesforceSim(ca, multi_currency=True, currencies=["USD", "EUR"]).start()
    try:
        for index in range(n):
            pc.create_incoming(referral(index))
        print(json.dumps({**pc.settings_env(), **sf.credentials.settings_env()}), flush=True)
        for question in sys.stdin:
            if question.strip() == "api":
                print(json.dumps(sf.org.api.used), flush=True)
            elif question.strip() == "cpu":
                print(json.dumps(time.process_time()), flush=True)
            elif question.strip() == "records":
                print(json.dumps({name: sf.org.count(name) for name in SALESFORCE_OBJECTS}), flush=True)
            else:
                break
    finally:
        pc.stop()
        sf.stop()
        if profiles is not None and profile_to:
            profiles.dump(profile_to)


class _World:
    """The simulators' process, seen from the benchmark."""

    def __init__(self, ca_dir: Path, n: int, profile_to: Path | None = None) -> None:
        profile = ["--profile-world", str(profile_to)] if profile_to else []
        self.process = subprocess.Popen([sys.executable, "-m", "bench.backfill", "--world", str(ca_dir), str(n),
                                         *profile], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.env: dict[str, str] = self._answer()

    def _answer(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulators' process ended (exit code {self.process.wait()})")
        return json.loads(line)

    def ask(self, question: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(question + "\n")
        self.process.stdin.flush()
        return self._answer()

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _peak_rss_mb() -> float:
    """This process's peak resident set so far (ru_maxrss: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def measure(n: int) -> dict[str, Any]:
    """`run(n)` in a fresh interpreter, so its peak resident set is its own (not an earlier run's)."""
    done = subprocess.run([sys.executable, "-m", "bench.backfill", str(n)], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the backfill of {n:,} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(n: int, *, batch_size: int | None = None, page_size: int | None = None, memory: bool = False,
        profile: Path | None = None) -> dict[str, Any]:
    """Backfill `n` new referrals against fresh simulators and a fresh Azurite; return the measurements.

    Args:
        n: referrals to backfill.
        batch_size: the backfill's batch size (default: the command's).
        page_size: `$top` of the referral listing (default: the command's).
        memory: also trace Python's allocations for their peak (tracemalloc: slows this process down about
            fourfold, so the rate is not comparable).
        profile: a folder: cProfile the connector's run (wall time, `connector.prof`) and every request the
            simulators serve (their threads' CPU time, `simulators.prof`); read them with `pstats`.

    Returns:
        `records`, `seconds`, `records_per_second`, `cpu_ms_per_record` (CPU milliseconds a record of the
        connector's process, the simulators' and Azurite's: steadier than wall time on a shared machine),
        `pc_calls` (referrals API requests: list pages and patches), `sf_calls` and `sf_calls_per_record`
        (the org's API usage, as Salesforce counts it), `table_ops` and `table_ops_per_record` (storage
        requests, a transaction counting once), `rss_before_mb` and `peak_rss_mb` (this process's resident
        set before the run and its peak: the run's own when the process ran nothing else, as in
        `measure`), `peak_memory_mb` (tracemalloc's peak during the run, with `memory`), `records_created`
        (Salesforce records per object) and the report's counts.
    """
    from azure.data.tables import TableServiceClient

    from sandbox.azurite import Azurite
    from shared.mapping import Mapping
    from shared.partner_center import PartnerCenterClient
    from shared.partner_center.transport import TimeoutSession
    from shared.salesforce import SalesforceClient
    from shared.settings import load_settings
    from shared.store import QueueSender, Store
    from shared.sync.backfill_runner import BATCH_SIZE, PAGE_SIZE, Backfill

    counts = {"pc": 0, "table": 0}

    def count_pc(response: Any, *args: Any, **kwargs: Any) -> None:
        if "/referrals" in response.url:
            counts["pc"] += 1

    def count_table(response: Any) -> None:
        counts["table"] += 1

    with tempfile.TemporaryDirectory() as tmp, Azurite() as azurite:
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
        world = _World(Path(tmp) / "ca", n, profile / "simulators.prof" if profile is not None else None)
        try:
            with _environment({**world.env, "REQUESTS_CA_BUNDLE": str(Path(tmp) / "ca" / "ca.pem"),
                               "AzureWebJobsStorage": azurite.connection_string}):
                settings = load_settings()
                store = Store(TableServiceClient.from_connection_string(azurite.connection_string,
                                                                        raw_response_hook=count_table),
                              prefix="bench")
                session = TimeoutSession()
                session.hooks["response"].append(count_pc)
                salesforce = SalesforceClient.from_settings(settings)
                backfill = Backfill(store=store, salesforce=salesforce,
                                    partner_center=PartnerCenterClient.from_settings(settings, store=store,
                                                                                     session=session),
                                    mapping=Mapping.load(settings.mapping_path, describe=salesforce.org_schema),
                                    queues=QueueSender.from_connection_string(azurite.connection_string),
                                    batch_size=batch_size or BATCH_SIZE, page_size=page_size or PAGE_SIZE)
                sf_before, table_before = world.ask("api"), counts["table"]
                cpu_before = (time.process_time(), world.ask("cpu"), cpu_seconds(azurite.pid))
                rss_before = round(resident_mb(os.getpid()), 1) or _peak_rss_mb()  # no /proc: the peak so far
                if memory:
                    tracemalloc.start()
                profiler = cProfile.Profile() if profile is not None else None
                started = time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                report = backfill.run()
                seconds = time.perf_counter() - started
                if profiler is not None and profile is not None:
                    profiler.disable()
                    profiler.dump_stats(profile / "connector.prof")
                peak = tracemalloc.get_traced_memory()[1] if memory else None
                tracemalloc.stop()
                cpu_after = (time.process_time(), world.ask("cpu"), cpu_seconds(azurite.pid))
                sf_calls = world.ask("api") - sf_before
                created = world.ask("records")
        finally:
            world.stop()
    table_ops = counts["table"] - table_before
    return {
        "records": n, "batch_size": batch_size or BATCH_SIZE, "page_size": page_size or PAGE_SIZE, "seconds": round(seconds, 2),
        "records_per_second": round(n / seconds, 1),
        "pc_calls": counts["pc"], "sf_calls": sf_calls, "sf_calls_per_record": round(sf_calls / n, 5),
        "records_per_sf_call": round(n / sf_calls, 1) if sf_calls else None,
        "table_ops": table_ops, "table_ops_per_record": round(table_ops / n, 4),
        "rss_before_mb": rss_before, "peak_rss_mb": _peak_rss_mb(),
        "peak_memory_mb": round(peak / 2**20, 1) if peak is not None else None, "traced": memory,
        "records_created": created, "report": dict(report.counts),
        "cpu_ms_per_record": {name: round((after - before) * 1000 / n, 2) for name, before, after in
                              zip(("connector", "simulators", "azurite"), cpu_before, cpu_after, strict=True)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description="The backfill benchmark.")
    parser.add_argument("records", type=int, nargs="?", default=10_000, help="referrals to backfill")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--page-size", type=int, default=None, help="`$top` of the referral listing")
    parser.add_argument("--trace-memory", action="store_true",
                        help="also trace Python's allocations (tracemalloc; about four times slower)")
    parser.add_argument("--profile", metavar="DIR", type=Path, default=None,
                        help="write connector.prof and simulators.prof (cProfile) to DIR")
    parser.add_argument("--world", metavar="CA_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--profile-world", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.world:
        _world(args.world, args.records, args.profile_world)
        return
    print(json.dumps(run(args.records, batch_size=args.batch_size, page_size=args.page_size,
                         memory=args.trace_memory and args.profile is None, profile=args.profile), indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
