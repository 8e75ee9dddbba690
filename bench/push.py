"""Push from Salesforce (outbound messages), measured through the real function app.

Rows:

- Seller's save -> referral updated through push: the simulator's Flows post an outbound message to
  `/api/salesforce/outbound` after the commit; timed from the save until Partner Center holds the value.
  Once with the poll off, once with the poll on its push-time default (every 15 minutes), to show it is
  push that delivers.
- Salesforce API calls a day for an idle org: the poll's calls per poll (measured by the steady-state row)
  times the number of polls a day of each default schedule, before (every minute, no push) and after (push
  configured: every 15 minutes). Push costs no API call: an idle org sends no outbound message.
- A burst: `burst` seller saves on as many linked pairs (set up by the backfill, in this process) spread
  over `burst_seconds`; every save must reach Partner Center, and none twice: each referral's deal value is
  the saved one, and the connector's sync log has exactly one Salesforce -> Partner Center update per pair.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass

from bench import latency
from bench.world import QUIET, BenchWorld, wait_for
from sandbox.ncrontab import parse
from shared.settings import PUSH_POLL_SCHEDULE

POLL_WITHOUT_PUSH = "0 */1 * * * *"
"""The poll's default without push (COSELL_SF_POLL_SCHEDULE in local.settings.example.json and infra)."""
BURST_TIMEOUT = 900.0
"""Seconds after the last save for the rest to arrive: a burst above Partner Center's pace (the client-side
COSELL_PC_RATE_LIMIT) queues up, and every save must still arrive."""


def _push_to(world: BenchWorld) -> None:
    """Point the simulator's outbound messages at the running host (as an admin sets the endpoint URL)."""
    world.salesforce.outbox.clear_faults()
    world.salesforce.outbox.endpoint = f"{world.host_url}/api/salesforce/outbound"


def push_latency(world: BenchWorld, samples: int, *, poll: str) -> latency.Latencies:
    """Seller's save -> referral, delivered by push, on a host whose poll runs on `poll`."""
    world.start_host(poll=poll)
    _push_to(world)
    pairs = latency.linked_pairs(world, latency.WAVE)
    return latency.sf_to_pc_poll(world, pairs, samples)  # the seller only saves: whatever delivers, delivers


def polls_a_day(schedule: str) -> int:
    """How often an NCRONTAB schedule fires in one (UTC) day."""
    parsed = parse(schedule)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    moment, count = start - dt.timedelta(microseconds=1), 0
    while (moment := parsed.next_after(moment)) < start + dt.timedelta(days=1):
        count += 1
    return count


@dataclass(frozen=True)
class IdleCalls:
    calls_per_poll: float
    before: int
    after: int


def idle_calls(calls_per_poll: float) -> IdleCalls:
    """Salesforce calls a day for an idle org, at the default schedules without and with push."""
    return IdleCalls(calls_per_poll, round(calls_per_poll * polls_a_day(POLL_WITHOUT_PUSH)),
                     round(calls_per_poll * polls_a_day(PUSH_POLL_SCHEDULE)))


@dataclass
class Burst:
    saves: int
    seconds: float
    arrived: int
    twice: int
    latencies: latency.Latencies


def _backfilled_pairs(world: BenchWorld, count: int) -> list[latency.Pair]:
    """`count` referrals from Microsoft, linked to new opportunities by the backfill (no host running, so
    no webhook syncs them one by one), ready for the burst."""
    from shared.runtime import Services
    from shared.sync.backfill_runner import Backfill

    world.stop_host()
    pc, sf = world.partner_center, world.salesforce
    sf.outbox.endpoint = None
    ids = [pc.create_incoming({"name": f"Bench burst {i}", "customerProfile": {"name": f"Burst customer {i}"}})["id"]
           for i in range(count)]
    wait_for(lambda: pc.pending_deliveries() == 0, timeout=60, what="the refused webhooks to give up")
    Backfill.from_services(Services()).run()
    wanted = set(ids)
    rows = sf.query("SELECT Id, Referral_Identifier__c FROM Opportunity WHERE Referral_Identifier__c != null")
    return [latency.Pair(r["Referral_Identifier__c"], r["Id"]) for r in rows if r["Referral_Identifier__c"] in wanted]


def burst(world: BenchWorld, saves: int, seconds: float) -> Burst:
    """`saves` seller saves (distinct pairs) evenly over `seconds`, pushed to a host polling every 15 min."""
    from shared.store import Store
    from shared.sync.engine import SF_TO_PC

    pairs = _backfilled_pairs(world, saves)
    world.start_host(poll=PUSH_POLL_SCHEDULE)
    _push_to(world)
    store = Store.from_connection_string(world.azurite.connection_string)
    logged_before = len(store.synclog.recent(100_000))
    sides = latency.Sides(world)
    began: dict[str, float] = {}
    waiting: dict[str, tuple[latency.Pair, int]] = {}
    result = latency.Latencies([])
    started = time.perf_counter()
    for i, pair in enumerate(pairs):
        while time.perf_counter() < started + i * seconds / len(pairs):
            _collect(sides, waiting, began, result)
            time.sleep(0.002)
        value = 300_000 + i
        began[pair.referral_id] = time.perf_counter()
        sides.seller(pair, value)
        waiting[pair.referral_id] = (pair, value)
    took = time.perf_counter() - started
    deadline = time.monotonic() + BURST_TIMEOUT
    while waiting and time.monotonic() < deadline:
        _collect(sides, waiting, began, result)
        time.sleep(0.01)
    result.missed = len(waiting)
    world.wait_quiet(quiet_for=2.0)
    entries = store.synclog.recent(100_000)  # newest first: this burst's entries lead
    updates = Counter(entry.opportunity_id for entry in entries[:len(entries) - logged_before]
                      if entry.direction == SF_TO_PC and entry.outcome.value == "updated")
    return Burst(len(pairs), took, len(pairs) - result.missed, sum(1 for n in updates.values() if n > 1), result)


def _collect(sides: latency.Sides, waiting: dict[str, tuple[latency.Pair, int]], began: dict[str, float],
             result: latency.Latencies) -> None:
    for referral_id, (pair, value) in list(waiting.items()):
        if sides.deal_value(pair, value):
            result.seconds.append(time.perf_counter() - began[referral_id])
            del waiting[referral_id]


Row = tuple[str, str, str, str]


def rows(world: BenchWorld, *, samples: int, calls_per_poll: float, saves: int, seconds: float,
         target: float) -> list[Row]:
    """The push rows of `make bench`."""
    def latency_row(name: str, result: latency.Latencies) -> Row:
        if not result.seconds:
            return name, f"no sample arrived ({result.missed} missed)", f"p95 < {target:.0f} s", "✖"
        missed = f" · {result.missed} missed" if result.missed else ""
        return (name, f"p50 {result.p50:.2f} s · p95 {result.p95:.2f} s · max {result.max:.2f} s "
                      f"({len(result.seconds)} syncs{missed})", f"p95 < {target:.0f} s",
                "✔" if result.p95 < target and not result.missed else "✖")

    found = [latency_row("SF→PC latency: seller's save → push (outbound message), poll off → referral updated",
                         push_latency(world, samples, poll=QUIET)),
             latency_row("SF→PC latency: the same with the poll at its push-time default (every 15 min)",
                         push_latency(world, samples, poll=PUSH_POLL_SCHEDULE))]
    idle = idle_calls(calls_per_poll)
    found.append(("Salesforce API calls a day, idle org, default schedules",
                  f"before (poll every minute): {idle.before:,} · after (push + poll every 15 min): {idle.after:,} "
                  f"({idle.calls_per_poll:.0f} calls a poll; push: 0 for an idle org)", "fewer",
                  "✔" if idle.after < idle.before else "✖"))
    if saves <= 0:
        return found
    result = burst(world, saves, seconds)
    lat = result.latencies
    text = (f"{result.saves:,} saves in {result.seconds:.0f} s: {result.arrived:,} reached Partner Center, "
            f"{result.twice} twice · p50 {lat.p50:.2f} s · p99 {lat.percentile(99):.2f} s · max {lat.max:.2f} s"
            if lat.seconds else f"{result.saves:,} saves: none arrived")
    found.append((f"Burst of {result.saves:,} seller saves through push", text, "every one once, none twice",
                  "✔" if result.arrived == result.saves and not result.twice else "✖"))
    return found


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.push [--samples N] [--burst N]`: only these rows (a quick run while developing)."""
    import argparse

    from bench import steady

    parser = argparse.ArgumentParser(prog="python -m bench.push", description=main.__doc__)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--burst-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    with BenchWorld() as world:
        world.start_host(poll=QUIET)
        latency.linked_pairs(world, latency.WAVE)
        quiet = steady.measure(world, 3)
        for row in rows(world, samples=args.samples, calls_per_poll=quiet.sf_calls / quiet.polls,
                        saves=args.burst, seconds=args.burst_seconds, target=2.0):
            print(" | ".join(row), flush=True)
    return 0


__all__ = ["Burst", "IdleCalls", "burst", "idle_calls", "polls_a_day", "push_latency", "rows"]

if __name__ == "__main__":
    raise SystemExit(main())
