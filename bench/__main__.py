"""`make bench` / `python -m bench`: every benchmark, one table, also written to bench/RESULTS.md.

Rows, in the order they run: import time (fresh interpreters), sync latency through the real function app
on the local host (Partner Center -> Salesforce; Salesforce -> Partner Center through the nudge route and
through the poll), a steady-state poll with nothing changed, push from Salesforce, a burst of signed webhook
deliveries (bench/burst.py) on one host and on two, and the backfill (bench/backfill.py) of
2,000 and of 10,000 referrals, each in a fresh process: its time must grow linearly with the number of
records, its rate hold at the larger size, and its memory not grow (the backfill writes in batches of
2,000, so both runs hold full batches: only their number differs). `make soak` runs the memory check at
2,000 and 50,000 (`python -m bench --backfill-only --backfill 2000 50000`).

The targets are the issue's; they are checked here, never in timed tests. The exit code is 0 when the
benchmarks ran, whatever the verdicts: the table says which targets hold.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import burst, imports, latency, push, steady
from bench.world import EVERY_SECOND, QUIET, ROOT, BenchWorld

RESULTS = ROOT / "bench" / "RESULTS.md"
LATENCY_TARGET = 2.0
POLL_INTERVAL = 1.0
SF_CALLS_PER_RECORD = 1 / 150
MEMORY_GROWTH = 1.5
"""Flat memory: what the larger run added to its process stays within this factor of the smaller run's."""
TIME_GROWTH = 1.1
"""Linear cost: the larger backfill takes at most 10 % more than linear (×5.5 the time for ×5 the records)."""
BACKFILL_RATE = 150
"""Records a second the larger backfill keeps, in the sandbox."""

Row = tuple[str, str, str, str]


def _verdict(ok: bool) -> str:
    return "✔" if ok else "✖"


def _latency_row(name: str, result: latency.Latencies, target: float, target_text: str) -> Row:
    if not result.seconds:
        return name, f"no sample arrived ({result.missed} missed)", target_text, _verdict(False)
    missed = f" · {result.missed} missed" if result.missed else ""
    text = (f"p50 {result.p50:.2f} s · p95 {result.p95:.2f} s · max {result.max:.2f} s "
            f"({len(result.seconds)} syncs{missed})")
    return name, text, target_text, _verdict(result.p95 < target and not result.missed)


def latency_rows(world: BenchWorld, samples: int, polls: int) -> tuple[list[Row], steady.SteadyPoll]:
    world.start_host(poll=QUIET)
    pairs = latency.linked_pairs(world, latency.WAVE)
    rows = [_latency_row("PC→SF latency: Microsoft's change (webhook) → opportunity updated",
                         latency.pc_to_sf(world, pairs, samples), LATENCY_TARGET, "p95 < 2 s"),
            _latency_row("SF→PC latency: seller's save + nudge `POST /api/salesforce/changes` → referral updated",
                         latency.sf_to_pc_nudge(world, pairs, samples), LATENCY_TARGET, "p95 < 2 s")]
    quiet = steady.measure(world, polls)
    world.start_host(poll=EVERY_SECOND)
    world.wait_quiet(quiet_for=2.5)  # the new host's first poll hands on every opportunity once
    rows.append(_latency_row(f"SF→PC latency: seller's save → poll (every {POLL_INTERVAL:.0f} s) → referral updated",
                             latency.sf_to_pc_poll(world, pairs, samples), POLL_INTERVAL + LATENCY_TARGET,
                             f"p95 < poll interval + 2 s = {POLL_INTERVAL + LATENCY_TARGET:.0f} s"))
    return rows, quiet


def steady_row(result: steady.SteadyPoll) -> Row:
    per_poll = result.polls
    tables = ", ".join(f"{name} {n}" for name, n in sorted(result.table_writes_by_table.items())) or "none"
    text = (f"{result.polls} polls: Salesforce writes {result.sf_writes}, Partner Center writes {result.pc_writes}, "
            f"sync messages {result.queue_messages}, Table writes {result.table_writes} ({tables}); "
            f"reads per poll: {result.sf_calls / per_poll:.0f} Salesforce calls, "
            f"{result.table_reads / per_poll:.0f} Table reads")
    ok = not (result.sf_writes or result.pc_writes or result.queue_messages or result.table_writes)
    return "Steady-state poll, nothing changed", text, "writes 0", _verdict(ok)


def backfill_rows(sizes: list[int]) -> list[Row]:
    from bench import backfill

    results: list[dict[str, Any]] = [backfill.measure(size) for size in sizes]
    rows: list[Row] = []
    for result in results:
        per_record = result["sf_calls_per_record"]
        cpu = result["cpu_ms_per_record"]
        text = (f"{result['records_per_second']:,.0f} records/s ({result['seconds']:.0f} s) · "
                f"Partner Center calls {result['pc_calls']:,} · Salesforce calls {result['sf_calls']:,} "
                f"= {per_record:.4f}/record (1/{1 / per_record:,.0f}) · "
                f"Table operations {result['table_ops_per_record']:.3f}/record · CPU ms a record: connector "
                f"{cpu['connector']:.1f}, simulators {cpu['simulators']:.1f}, Azurite {cpu['azurite']:.1f} · "
                f"peak memory {result['peak_rss_mb']:.0f} MB, the run's own {_own(result):.1f} MB")
        rows.append((f"Backfill of {result['records']:,} new referrals", text, "Salesforce calls ≤ 1/150 a record",
                     _verdict(per_record <= SF_CALLS_PER_RECORD)))
    if len(results) > 1:
        small, large = results[0], results[-1]
        scale = large["records"] / small["records"]
        ratio = large["seconds"] / small["seconds"]
        rows.append(("Backfill time, linear in the number of records",
                     f"{small['seconds']:.0f} s at {small['records']:,} → {large['seconds']:.0f} s at "
                     f"{large['records']:,} (×{ratio:.1f} the time for ×{scale:.0f} the records)",
                     f"≤ ×{scale * TIME_GROWTH:.1f}", _verdict(ratio <= scale * TIME_GROWTH)))
        rows.append((f"Backfill rate at {large['records']:,} referrals", f"{large['records_per_second']:,.0f} records/s",
                     f"≥ {BACKFILL_RATE} records/s", _verdict(large["records_per_second"] >= BACKFILL_RATE)))
        growth = _own(large) / _own(small)
        rows.append(("Backfill memory, flat in the number of records",
                     f"the run's own memory {_own(small):.1f} MB at {small['records']:,} → {_own(large):.1f} MB "
                     f"at {large['records']:,} (×{growth:.2f} for ×{scale:.0f} the records; peak resident "
                     f"set {small['peak_rss_mb']:.0f} → {large['peak_rss_mb']:.0f} MB)",
                     f"growth ≤ ×{MEMORY_GROWTH}", _verdict(growth <= MEMORY_GROWTH)))
    return rows


def _own(result: dict[str, Any]) -> float:
    """What a backfill added to its process's resident set (its peak less the set before it ran)."""
    return max(result["peak_rss_mb"] - result["rss_before_mb"], 0.1)


def import_row(runs: int) -> Row:
    seconds = imports.measure(runs)
    ours = seconds["function_app"] - seconds["azure.functions"]
    return ("Import time (fresh interpreter, median of %d)" % runs,
            f"`function_app.py` {seconds['function_app'] * 1000:.0f} ms · `azure.functions` alone "
            f"{seconds['azure.functions'] * 1000:.0f} ms (the app's own: {ours * 1000:.0f} ms)", "", "")


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | result | target | |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {result} | {target} | {verdict} |" for name, result, target, verdict in rows]
    return "\n".join(lines)


ANALYSIS = "\n## "
"""Where the hand-written part of bench/RESULTS.md starts (profiles, growth): kept when the table is rewritten."""


def write_results(text: str, command: str, seconds: float) -> None:
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    previous = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    analysis = previous[previous.index(ANALYSIS):] if ANALYSIS in previous else ""
    RESULTS.write_text(
        "# Benchmark results\n\n"
        f"Command: `{command}` · date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC · "
        f"machine: {machine} · took {seconds / 60:.0f} min.\n\n"
        f"{text}\n\n"
        "How each row is measured: the docstrings of bench/latency.py, bench/steady.py, bench/imports.py, bench/push.py, bench/burst.py and "
        "bench/backfill.py. Latency runs through the real `function_app.py` on the local host (the "
        "repository's host.json with fast queue polling: 100 ms) against the simulators and Azurite on this "
        "machine, in waves of five syncs at once.\n" + analysis, encoding="utf-8")


def say(what: str) -> None:
    print(f"bench: {what} ...", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="syncs per latency row (default 200)")
    parser.add_argument("--backfill", type=int, nargs="+", default=[2000, 10_000],
                        help="backfill sizes; the memory row compares the first and the last (default 2000 10000: "
                             "both in full batches of 2,000, so only the number of batches differs)")
    parser.add_argument("--burst", type=int, default=1000, help="seller saves in the push burst (default 1000)")
    parser.add_argument("--burst-seconds", type=float, default=60.0, help="the burst's length (default 60)")
    parser.add_argument("--webhook-burst", type=int, default=1000,
                        help="signed Partner Center deliveries in the webhook burst (default 1000)")
    parser.add_argument("--polls", type=int, default=10, help="steady-state polls to count (default 10)")
    parser.add_argument("--import-runs", type=int, default=7, help="fresh interpreters per import (default 7)")
    parser.add_argument("--no-results", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--backfill-only", action="store_true",
                        help="only the backfill rows, printed (make soak: --backfill 2000 50000)")
    args = parser.parse_args(argv)
    if args.backfill_only:
        say(f"backfill of {' and '.join(f'{n:,}' for n in args.backfill)} referrals")
        print(table(backfill_rows(args.backfill)))
        return 0
    started = time.monotonic()
    say("import time")
    rows = [import_row(args.import_runs)]
    with BenchWorld() as world:
        say("latency and the steady-state poll (the real function app on the local host)")
        measured, quiet = latency_rows(world, args.samples, args.polls)
        rows += [*measured, steady_row(quiet)]
        say(f"push from Salesforce: latency and a burst of {args.burst:,} saves")
        rows += push.rows(world, samples=args.samples, calls_per_poll=quiet.sf_calls / quiet.polls,
                          saves=args.burst, seconds=args.burst_seconds, target=LATENCY_TARGET)
    say(f"a burst of {args.webhook_burst:,} webhook deliveries, on one host and on two")
    rows += burst.rows(args.webhook_burst)
    say(f"backfill of {' and '.join(f'{n:,}' for n in args.backfill)} referrals")
    rows += backfill_rows(args.backfill)
    text = table(rows)
    print(text)
    if not args.no_results:
        command = "make bench" if argv is None and os.environ.get("MAKELEVEL") else "python -m bench " + " ".join(
            sys.argv[1:] if argv is None else argv)
        write_results(text, command.strip(), time.monotonic() - started)
        print(f"\n(written to {RESULTS.relative_to(ROOT)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
