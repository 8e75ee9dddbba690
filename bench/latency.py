"""Sync latency through the real function app: Partner Center -> Salesforce and Salesforce -> Partner Center.

Each sample is one change of the deal value on one side, timed from the moment it is made until the other
side holds it, read from the simulators every 5 ms:

- Partner Center -> Salesforce: Microsoft updates a referral (the simulator sends the webhook at once);
  until the opportunity's Amount has the new value. Path: webhook receiver, queue, processor.
- Salesforce -> Partner Center through the nudge route: the seller saves the opportunity and a Flow
  calls `POST /api/salesforce/changes` with its id (the Salesforce poll is off, so only the nudge counts);
  until the referral's dealValue has it.
- Salesforce -> Partner Center through the poll (every second): the seller saves, nothing else.

Samples run in waves of `WAVE` pairs at once (a few syncs in flight, as when several sellers work), and
each wave starts once the previous one's echoes (the webhook of the connector's own PATCH) are through.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.world import BenchWorld, wait_for

WAVE = 5
SAMPLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Pair:
    referral_id: str
    opportunity_id: str


@dataclass
class Latencies:
    """Seconds per sample, and how many samples never arrived within SAMPLE_TIMEOUT."""

    seconds: list[float]
    missed: int = 0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def max(self) -> float:
        return max(self.seconds)


def linked_pairs(world: BenchWorld, count: int) -> list[Pair]:
    """`count` referrals from Microsoft, each synced to an opportunity by the app."""
    pc, sf = world.partner_center, world.salesforce
    referrals = [pc.create_incoming({"name": f"Bench latency {i}", "customerProfile": {"name": f"Latency customer {i}"}})
                 for i in range(count)]

    def opportunity_of(referral_id: str) -> str | None:
        rows = sf.query(f"SELECT Id FROM Opportunity WHERE Referral_Identifier__c = '{referral_id}'")
        return rows[0]["Id"] if rows else None

    pairs = [Pair(r["id"], wait_for(lambda r=r: opportunity_of(r["id"]), timeout=60, what="the opportunity"))
             for r in referrals]
    world.wait_quiet()
    return pairs


def _measure(world: BenchWorld, pairs: list[Pair], samples: int, change: Callable[[Pair, int], None],
             arrived: Callable[[Pair, int], bool]) -> Latencies:
    values = itertools.count(200_000, 100)
    result = Latencies([])
    for start in range(0, samples, WAVE):
        wave = [(pair, next(values)) for pair in pairs[:min(WAVE, samples - start)]]
        began: dict[str, float] = {}
        for pair, value in wave:
            began[pair.referral_id] = time.perf_counter()
            change(pair, value)
        waiting = list(wave)
        deadline = time.monotonic() + SAMPLE_TIMEOUT
        while waiting and time.monotonic() < deadline:
            for pair, value in list(waiting):
                if arrived(pair, value):
                    result.seconds.append(time.perf_counter() - began[pair.referral_id])
                    waiting.remove((pair, value))
            time.sleep(0.005)
        result.missed += len(waiting)
        world.wait_quiet(quiet_for=0.5)
    return result


class Sides:
    """The changes and checks of each direction, on the simulators in this process."""

    def __init__(self, world: BenchWorld) -> None:
        self.world, self.pc, self.sf = world, world.partner_center, world.salesforce

    def amount(self, pair: Pair, value: int) -> bool:
        record = self.sf.record("Opportunity", pair.opportunity_id)
        return record is not None and record["Amount"] == value

    def deal_value(self, pair: Pair, value: int) -> bool:
        return self.pc.referrals[pair.referral_id]["details"]["dealValue"] == value

    def microsoft(self, pair: Pair, value: int) -> None:
        self.pc.update_as_microsoft(pair.referral_id, {"details": {"dealValue": value}})

    def seller(self, pair: Pair, value: int) -> None:
        self.sf.update("Opportunity", pair.opportunity_id, {"Amount": value})

    def seller_and_nudge(self, pair: Pair, value: int) -> None:
        self.seller(pair, value)
        self.world.app("POST", "salesforce/changes", json={"ids": [pair.opportunity_id]}).raise_for_status()


def pc_to_sf(world: BenchWorld, pairs: list[Pair], samples: int) -> Latencies:
    """Microsoft's change -> the opportunity (the host may poll Salesforce or not: no poll is involved)."""
    sides = Sides(world)
    return _measure(world, pairs, samples, sides.microsoft, sides.amount)


def sf_to_pc_nudge(world: BenchWorld, pairs: list[Pair], samples: int) -> Latencies:
    """The seller's save plus the nudge -> the referral; run it on a host whose poll is off (QUIET)."""
    sides = Sides(world)
    return _measure(world, pairs, samples, sides.seller_and_nudge, sides.deal_value)


def sf_to_pc_poll(world: BenchWorld, pairs: list[Pair], samples: int) -> Latencies:
    """The seller's save -> the referral, found by the poll; run it on a host polling every second."""
    sides = Sides(world)
    return _measure(world, pairs, samples, sides.seller, sides.deal_value)


__all__ = ["Latencies", "Pair", "Sides", "linked_pairs", "pc_to_sf", "sf_to_pc_nudge", "sf_to_pc_poll"]
