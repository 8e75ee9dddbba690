"""Chaos convergence: both sides edit at random while every failure the simulators can make happens; once
the faults stop and one reconcile has run, every pair agrees, nothing is duplicated, and every change that
should have survived did.

What runs: the real function app on the local host (its own Azurite, both simulators, the webhook
registered, the Salesforce poll every second) and, next to it, a second instance of the app's processors
that dies at random calls (`tests/fixtures/chaos.py` says why and how). Faults, injected between the
operations: Partner Center 429 with Retry-After, 5xx, dropped connections and slow answers; the same on
Salesforce's REST API, plus UNABLE_TO_LOCK_ROW; webhooks duplicated, delayed, reordered and dropped; and
some of the seller's saves commit seconds after their time stamp (see `Chaos._seller`).

Rounds: seed pairs are created first; then each round makes random operations on both sides, stops the
faults, waits for quiet, runs one reconcile, waits again, checks that every pair that does not agree has
a dead letter saying why, replays the dead letters, waits, and checks everything (see `check_pair` for the
rules: what the mapping's directions and conflict policies say must hold).

Settings (environment): CHAOS_SEED, CHAOS_ROUNDS, CHAOS_OPERATIONS (per round), CHAOS_SEED_PAIRS and
CHAOS_KILL_PROBABILITY; `make soak` runs longer. The seed is printed with the counts; a failure names it
and prints the sync log of the pairs concerned. Regressions found here are replayed deterministically in
tests/test_chaos_regressions.py.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import requests

from sandbox.azurite import Azurite
from sandbox.ca import SandboxCA
from sandbox.partner_center import CLOSING_OFFSETS_HOURS, PartnerCenterSim
from sandbox.salesforce import SalesforceSim
from sandbox.sf_org import RecordError
from shared.settings import APP_ROOT, load_settings
from tests.fixtures.chaos import (
    CrashingInstance,
    LineCounter,
    Pair,
    poison_depth,
    queue_depth,
    wait_quiet,
)
from tests.fixtures.connector import EVERY_SECOND, HOST_JSON, QUIET, seller_opportunity

if TYPE_CHECKING:
    from azure.storage.queue import QueueServiceClient

    from shared.mapping import Mapping
    from shared.runtime import Services
    from tests.fixtures.host import RunningHost

SEED = int(os.environ.get("CHAOS_SEED", "8"))
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "2"))
OPERATIONS = int(os.environ.get("CHAOS_OPERATIONS", "45"))
SEED_PAIRS = int(os.environ.get("CHAOS_SEED_PAIRS", "6"))
FAULT_RATE = 0.6
"""The chance that an operation is followed by a fault."""
KILL_PROBABILITY = float(os.environ.get("CHAOS_KILL_PROBABILITY", "0.02"))
"""The chance that any one call of the crashing instance kills it (a sync makes about ten calls)."""
LATE_COMMIT_RATE = 0.2
"""The share of the seller's saves that commit seconds after their time stamp."""
PACE = 0.35
"""The longest pause between two operations (seconds): syncs run between and during them."""
QUIET_FOR = 3.5
QUIET_TIMEOUT = 240.0

SF, PC = "salesforce", "partner_center"
ACCEPTED_STAGES = ("Qualification", "Needs Analysis", "Proposal/Price Quote", "Negotiation/Review")
ASSISTANCE = ("GeneralOrOther", "CustomerTechnicalArchitecture", "ProofOfConceptOrDemo", "QuotesOrLicensing",
              "PostSalesCustomerSuccess", "WorkloadSpecificValueProposition")
CURRENCIES = ("USD", "EUR")
SELLER_FIELDS = ("Name", "Amount", "CurrencyIsoCode", "CloseDate", "Description", "How_can_Microsoft_help__c")
MICROSOFT_FIELDS = ("dealValue", "currency", "notes", "closingDateTime", "name")


@dataclass
class World:
    pc: PartnerCenterSim
    sf: SalesforceSim
    host: RunningHost
    connection_string: str
    ca: SandboxCA


@pytest.fixture
def chaos_world(sandbox_ca: SandboxCA, sf_sim_factory: Callable[..., SalesforceSim],
                function_host: Callable[..., RunningHost], monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The connector as `connector` runs it, with this process's environment holding the same settings."""
    with Azurite() as azurite:
        pc = PartnerCenterSim(sandbox_ca, delivery_delays=(0.3, 0.6, 1.0)).start()
        pc.refuse_closed_edits = True  # stricter than the reference: the connector must never need closed edits
        sf = sf_sim_factory(multi_currency=True, currencies=list(CURRENCIES))
        env = {**pc.settings_env(), **sf.credentials.settings_env(), "AzureWebJobsStorage": azurite.connection_string,
               "COSELL_SF_POLL_SCHEDULE": EVERY_SECOND, "COSELL_PC_RECONCILE_SCHEDULE": QUIET,
               "COSELL_MAPPING_FILE": str(APP_ROOT / "mappings" / "salesforce.json")}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        host = function_host(env=env, host_json=HOST_JSON)
        answer = requests.post(f"{host.url}/api/partnercenter/webhook", timeout=30,
                               json={"url": f"{host.url}/api/partnercenter/events", "overwrite": True})
        assert answer.status_code in (200, 201), answer.text
        yield World(pc, sf, host, azurite.connection_string, sandbox_ca)
        host.stop()
        pc.stop()


@dataclass
class Counts:
    operations: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    pairs_checked: int = 0
    fields_checked: int = 0
    quiet_waits: list[float] = field(default_factory=list)


class Chaos:
    """Drives both sides at random, injects the faults, keeps the model, and checks it at quiet points."""

    def __init__(self, world: World, services: Services, rng: random.Random) -> None:
        from azure.storage.queue import QueueServiceClient

        self.world, self.services, self.rng = world, services, rng
        self.mapping: Mapping = services.mapping
        self.pairs: list[Pair] = []
        self.counts = Counts()
        self.round = 0
        self._numbers = itertools.count(1)
        self.queues: QueueServiceClient = QueueServiceClient.from_connection_string(world.connection_string)
        self.http = requests.Session()
        self.http.verify = str(world.ca.ca_pem_path)

    # -- the seller ---------------------------------------------------------------------------------

    def _seller(self, pair: Pair, write: Callable[[], Any]) -> Any:
        """A seller's save: on a locked row (a fault, or a row still committing) wait and save again.

        Some saves commit late (`LATE_COMMIT_RATE`): the row keeps its time stamp but shows only seconds
        later, as a save whose triggers and flows run long does, which the poll's look-back must catch. Only
        the seller's saves: an API write Salesforce has answered is committed, so the connector reads its own.
        The seller's next save of the same deal comes after that commit, as in the browser, where a save
        returns when it is committed.
        """
        self._committed(pair)
        org = self.world.sf.org
        late = self.rng.uniform(1.0, 4.0) if self.rng.random() < LATE_COMMIT_RATE else None

        def save() -> Any:
            with org.lock:  # the late commit is this save's, not a write the connector makes meanwhile
                if late is not None:
                    org.late_commits[:] = [late]
                try:
                    return write()
                finally:
                    org.late_commits.clear()

        deadline = time.monotonic() + 30
        while True:
            try:
                result = save()
            except RecordError as exc:
                if exc.code != "UNABLE_TO_LOCK_ROW" or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
                continue
            if late is not None:
                self.counts.faults["sf late commit (a seller's save)"] += 1
                pair.committing_until = time.monotonic() + late
            return result

    @staticmethod
    def _committed(pair: Pair) -> None:
        """Wait until the seller's last save of this deal is visible (the seller sees what they saved)."""
        time.sleep(max(0.0, pair.committing_until - time.monotonic()))

    def seller_create(self) -> None:
        number = next(self._numbers)
        org = self.world.sf.org
        amount, currency = self.rng.randrange(1000, 900000, 100), self.rng.choice(CURRENCIES)
        close, notes = self._date(), f"Seller's first note {number}"
        assistance = self.rng.choice(ASSISTANCE)
        with org.lock:  # the seller's setup is one save here: a write fault must not split it
            faults, org.lock_faults = org.lock_faults, 0
            try:
                opportunity_id = seller_opportunity(
                    self.world.sf, name=f"Chaos {number} - seller deal", amount=amount, CurrencyIsoCode=currency,
                    CloseDate=close, Description=notes, How_can_Microsoft_help__c=assistance)
            finally:
                org.lock_faults = faults
        pair = Pair(SF, self.round, opportunity_id=opportunity_id)
        pair.created = {"name": f"Chaos {number} - seller deal", "dealValue": self._canonical_sf("Amount", amount),
                        "currency": currency, "closingDate": close, "notes": notes, "assistance": assistance}
        self.pairs.append(pair)
        self.counts.operations["seller creates an opted-in opportunity"] += 1

    def seller_edit(self, pair: Pair) -> None:
        number = next(self._numbers)
        values: dict[str, Any] = {}
        for name in self.rng.sample(SELLER_FIELDS, self.rng.randint(1, 3)):
            values[name] = {
                "Name": f"Chaos deal {number} renamed",
                "Amount": self.rng.randrange(1000, 900000, 100),
                "CurrencyIsoCode": self.rng.choice(CURRENCIES),
                "CloseDate": self._date(),
                "Description": f"Seller note {number}: café ✓ <b>bold</b>",
                "How_can_Microsoft_help__c": self.rng.choice(ASSISTANCE),
            }[name]
        self._seller_update(pair, values)
        self.counts.operations["seller edits fields"] += 1
        self._maybe_nudge(pair)

    def seller_stage(self, pair: Pair) -> None:
        number = next(self._numbers)
        moves = {"open": ("accept", "win", "decline"), "accepted": ("win", "lose", "move")}[pair.phase]
        move = self.rng.choice(moves)
        if move in ("accept", "move"):
            values: dict[str, Any] = {"StageName": self.rng.choice(ACCEPTED_STAGES)}
        elif move == "win":
            values = {"StageName": "Closed Won"}
        else:
            values = {"StageName": "Closed Lost"}
            if self.rng.random() < 0.8:
                values["Decline_Reason__c"] = f"Reason {number}: budget moved"
        self._seller_update(pair, values)
        pair.phase = self._phase(values["StageName"])
        pair.closed = pair.phase in ("won", "lost")
        self.counts.operations[f"seller stage move ({move})"] += 1
        self._maybe_nudge(pair)

    def seller_solutions(self, pair: Pair) -> None:
        sf = self.world.sf
        assert pair.opportunity_id
        if pair.solutions and self.rng.random() < 0.4:
            solution = self.rng.choice(pair.solutions)
            self._committed(pair)
            rows = sf.query(f"SELECT Id FROM Microsoft_Solution__c WHERE Opportunity__c = '{pair.opportunity_id}' "
                            f"AND Solution_Id__c = '{solution}'")
            assert rows, f"the seller's solution {solution} is not on {pair.opportunity_id}"
            for row in rows:
                self._seller(pair, lambda row=row: sf.delete("Microsoft_Solution__c", row["Id"]))
            pair.solutions.remove(solution)
            self.counts.operations["seller removes a solution"] += 1
        else:
            solution = f"chaos-solution-{next(self._numbers)}"
            self._seller(pair, lambda: sf.create("Microsoft_Solution__c", {
                "Opportunity__c": pair.opportunity_id, "Name": f"Solution {solution}", "Solution_Id__c": solution,
                "Solution_Type__c": "Service"}))
            pair.solutions.append(solution)
            self.counts.operations["seller adds a solution"] += 1
        pair.ask("solutions", SF, sorted(pair.solutions))
        self._maybe_nudge(pair)

    def seller_edits_closed(self, pair: Pair) -> None:
        """An edit Partner Center cannot take any more: it must be put back to Partner Center's value."""
        number = next(self._numbers)
        values = self.rng.choice([{"Amount": self.rng.randrange(1000, 900000, 100)},
                                  {"Description": f"Edited after closing {number}"},
                                  {"StageName": "Qualification"}])
        self._seller_update(pair, values)
        self.counts.operations["seller edits a closed opportunity"] += 1

    def _seller_update(self, pair: Pair, values: dict[str, Any]) -> None:
        assert pair.opportunity_id
        sf = self.world.sf
        self._seller(pair, lambda: sf.update("Opportunity", pair.opportunity_id, values))
        record = {**values, "Microsoft_Solutions__r": None}
        for key, value in self.mapping.sf_values(record).items():
            sf_field = getattr(self.mapping.field(key), "sf_field", None)
            if sf_field in values:
                pair.ask(key, SF, value)

    def _maybe_nudge(self, pair: Pair) -> None:
        if self.rng.random() < 0.3:
            answer = requests.post(f"{self.world.host.url}/api/salesforce/changes",
                                   json={"ids": [pair.opportunity_id]}, timeout=30)
            assert answer.status_code == 202, answer.text
            self.counts.operations["nudges"] += 1

    # -- Microsoft ----------------------------------------------------------------------------------

    def microsoft_incoming(self) -> None:
        number = next(self._numbers)
        details = {"dealValue": self.rng.randrange(1000, 900000, 100), "currency": self.rng.choice(CURRENCIES),
                   "notes": f"Microsoft's note {number}",
                   "closingDateTime": self._closing() if self.rng.random() < 0.7 else None,
                   "requirements": {"industries": [{"id": "Retail"}], "products": [], "services": [], "solutions": [
                       {"id": f"ms-solution-{number}", "name": f"Microsoft solution {number}", "type": "Service"}]}}
        referral = self.world.pc.create_incoming({
            "name": f"Chaos {number} - Microsoft referral",
            "customerProfile": {"name": f"Chaos Customer {number}",
                                "address": {"country": "US", "city": "Seattle"},
                                "team": [{"firstName": "Jonas", "lastName": f"Weber {number}",
                                          "email": f"jonas.{number}@customer.example", "phoneNumber": None,
                                          "contactPreference": {"locale": "de-DE",
                                                                "disableNotifications": False}}]},
            "details": details})
        pair = Pair(PC, self.round, referral_id=referral["id"])
        created = self.mapping.pc_values(referral)
        pair.created = {key: created[key] for key in ("name", "dealValue", "currency", "notes", "solutions")}
        if details["closingDateTime"]:
            pair.created["closingDate"] = created["closingDate"]
        self.pairs.append(pair)
        self.counts.operations["Microsoft sends a referral"] += 1

    def microsoft_update(self, pair: Pair) -> None:
        assert pair.referral_id
        number = next(self._numbers)
        changes: dict[str, Any] = {"details": {}}
        for name in self.rng.sample(MICROSOFT_FIELDS, self.rng.randint(1, 3)):
            if name == "name":
                changes["name"] = f"Chaos referral {number} renamed by Microsoft"
            else:
                changes["details"][name] = {
                    "dealValue": self.rng.randrange(1000, 900000, 100), "currency": self.rng.choice(CURRENCIES),
                    "notes": f"Microsoft note {number}", "closingDateTime": self._closing()}[name]
        referral = self.world.pc.update_as_microsoft(pair.referral_id, changes)
        values = self.mapping.pc_values(referral)
        for key in self._touched_keys(changes):
            pair.ask(key, PC, values[key])
        self.counts.operations["Microsoft updates a referral"] += 1

    def microsoft_expire(self, pair: Pair) -> None:
        assert pair.referral_id
        self.world.pc.expire(pair.referral_id)
        pair.ask("stage", PC, "lost")
        pair.closed = pair.closed_by_microsoft = True
        self.counts.operations["the referral expires"] += 1

    def _touched_keys(self, changes: dict[str, Any]) -> list[str]:
        paths = {"name": "name", "details.dealValue": "dealValue", "details.currency": "currency",
                 "details.notes": "notes", "details.closingDateTime": "closingDate"}
        given = [name for name in changes if name != "details"] + [f"details.{k}" for k in changes["details"]]
        return [paths[p] for p in given]

    # -- faults -------------------------------------------------------------------------------------

    def inject_fault(self) -> None:
        pc, sf = self.world.pc.url, self.world.sf.url
        kind = self.rng.choice(["pc 429", "pc 5xx", "pc reset", "pc slow", "sf 5xx", "sf reset", "sf slow",
                                "sf row lock", "webhook duplicate", "webhook delay", "webhook reorder", "webhook drop"])
        count = self.rng.randint(1, 3)
        method = self.rng.choice([None, "GET", "PATCH", "POST"])
        referrals = {"path": "/v1.0/engagements/referrals", "method": method, "count": count}
        rest = {"path": "/services/data/", "method": self.rng.choice([None, "GET", "PATCH", "POST"]), "count": count}
        if kind == "pc 429":
            self._post(f"{pc}/_sandbox/faults", {"kind": "status", "status": 429, "retry_after": 1, **referrals})
        elif kind == "pc 5xx":
            self._post(f"{pc}/_sandbox/faults", {"kind": "status", "status": self.rng.choice([500, 502, 503]),
                                                 **referrals})
        elif kind == "pc reset":
            self._post(f"{pc}/_sandbox/faults", {"kind": "reset", **referrals})
        elif kind == "pc slow":
            self._post(f"{pc}/_sandbox/faults", {"kind": "slow", "delay": self.rng.uniform(0.5, 2.0), **referrals})
        elif kind == "sf 5xx":
            self._post(f"{sf}/_sandbox/faults", {"kind": "status", "status": self.rng.choice([500, 503]), **rest})
        elif kind == "sf reset":
            self._post(f"{sf}/_sandbox/faults", {"kind": "reset", **rest})
        elif kind == "sf slow":
            self._post(f"{sf}/_sandbox/faults", {"kind": "slow", "delay": self.rng.uniform(0.5, 2.0), **rest})
        elif kind == "sf row lock":
            self._post(f"{sf}/_sandbox/lock-rows", {"count": count})
        else:
            self._post(f"{pc}/_sandbox/webhook-faults", {"kind": kind.split()[1], "count": count,
                                                         "delay": self.rng.uniform(1.0, 4.0)})
        self.counts.faults[kind] += 1

    def stop_faults(self) -> None:
        """No new fault from here on: pending ones are cleared (a held, reordered webhook is then lost)."""
        pc, sf = self.world.pc.url, self.world.sf.url
        for url in (f"{pc}/_sandbox/faults", f"{sf}/_sandbox/faults", f"{pc}/_sandbox/webhook-faults"):
            self.http.delete(url, timeout=30).raise_for_status()
        self._post(f"{sf}/_sandbox/lock-rows", {"count": 0})

    def faults_applied(self) -> dict[str, int]:
        pc = self.http.get(f"{self.world.pc.url}/_sandbox/faults", timeout=30).json()["injected"]
        sf = self.http.get(f"{self.world.sf.url}/_sandbox/faults", timeout=30).json()["injected"]
        deliveries = self.http.get(f"{self.world.pc.url}/_sandbox/deliveries", timeout=30).json()["deliveries"]
        return {"Partner Center HTTP faults answered": pc, "Salesforce HTTP faults answered": sf,
                "webhooks dropped": sum(1 for d in deliveries if d["status"] == "dropped"),
                "webhook deliveries": len(deliveries)}

    def _post(self, url: str, body: dict[str, Any]) -> None:
        self.http.post(url, json={k: v for k, v in body.items() if v is not None}, timeout=30).raise_for_status()

    # -- rounds -------------------------------------------------------------------------------------

    def operation(self) -> None:
        open_pairs = [p for p in self.pairs if p.born < self.round and not p.closed]
        closed = [p for p in self.pairs if p.closed_at_start]
        choices: list[tuple[float, Callable[[], None]]] = [(1.0, self.seller_create), (1.0, self.microsoft_incoming)]
        if open_pairs:
            pick = lambda: self.rng.choice(open_pairs)  # noqa: E731 - chosen when the operation runs
            choices += [(5.0, lambda: self.seller_edit(pick())), (1.5, lambda: self.seller_stage(pick())),
                        (1.0, lambda: self.seller_solutions(pick())), (4.0, lambda: self.microsoft_update(pick())),
                        (0.5, lambda: self.microsoft_expire(pick()))]
        if closed:
            choices.append((0.7, lambda: self.seller_edits_closed(self.rng.choice(closed))))
        weights, actions = zip(*choices)
        self.rng.choices(actions, weights=weights)[0]()

    def run_round(self, operations: int, *, creates_only: bool = False) -> None:
        self.round += 1
        for _ in range(operations):
            if creates_only:
                self.rng.choice([self.seller_create, self.microsoft_incoming])()
            else:
                self.operation()
            if self.rng.random() < FAULT_RATE:
                self.inject_fault()
            time.sleep(self.rng.uniform(0, PACE))
        self.stop_faults()

    def busy(self, instance: CrashingInstance) -> str | None:
        depth = queue_depth(self.queues)
        if depth:
            return f"{depth} message(s) in the sync queues"
        if self.world.pc.pending_deliveries():
            return "webhook deliveries pending"
        with self.world.sf.org.lock:
            self.world.sf.org.commit_due()
            if self.world.sf.org.pending_count():
                return "Salesforce rows still committing"
        if instance.busy:
            return "the crashing instance is syncing"
        return None

    def quiet(self, instance: CrashingInstance) -> None:
        self.counts.quiet_waits.append(wait_quiet(lambda: self.busy(instance), quiet_for=QUIET_FOR,
                                                  timeout=QUIET_TIMEOUT))

    def settle(self, instance: CrashingInstance) -> None:
        """Quiet, one reconcile, quiet; every disagreement explained by a dead letter; replay; quiet; check."""
        from shared.sync.reconcile import reconcile
        from shared.sync.replay import replay

        self.quiet(instance)
        reconcile(self.services)
        self.quiet(instance)
        store = self.services.store
        letters = {letter.key: letter for letter in store.dead_letters.list()}
        self._find_partners()
        for letter in letters.values():
            assert letter.reason.strip(), f"dead letter {letter.key} has no reason"
            self.counts.dead_letters[letter.kind] += 1
            self.counts.reasons[_reason_kind(letter.reason)] += 1
        unexplained = [f"{problem} (no dead letter for it)" for pair in self.pairs
                       for problem in self.disagreements(pair)
                       if f"referral-{pair.referral_id}" not in letters
                       and f"opportunity-{pair.opportunity_id}" not in letters]
        assert not unexplained, _report(f"round {self.round}: pairs disagree without a dead letter", unexplained)
        if letters:
            list(replay(store, self.services.queues))
            self.quiet(instance)
        again = [f"{letter.key}: {letter.reason}" for letter in store.dead_letters.list()]
        assert not again, _report(f"round {self.round}: replayed dead letters failed again", again)
        assert poison_depth(self.queues) == 0, "messages ended in a poison queue"
        problems = self.verify()
        assert not problems, _report(f"round {self.round}: the model does not hold", problems + self._history(problems))

    # -- checks -------------------------------------------------------------------------------------

    def _find_partners(self) -> None:
        """Fill in the side the connector created (found by the id the creating side carries)."""
        by_reference = {r.get("externalReferenceId"): r["id"] for r in self.world.pc.referrals.values()
                        if r.get("externalReferenceId")}
        for pair in self.pairs:
            if pair.referral_id is None and pair.opportunity_id in by_reference:
                pair.referral_id = by_reference[pair.opportunity_id]
            if pair.opportunity_id is None and pair.referral_id:
                rows = self.world.sf.query(f"SELECT Id FROM Opportunity WHERE Referral_Identifier__c = "
                                           f"'{pair.referral_id}'")
                pair.opportunity_id = rows[0]["Id"] if rows else None

    def _values(self, pair: Pair) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
        if pair.referral_id is None or pair.opportunity_id is None:
            return None
        referral = self.world.pc.referrals[pair.referral_id]
        opportunity = self.world.sf.query(self.mapping.opportunity_query([pair.opportunity_id]))[0]
        return referral, self.mapping.pc_values(referral), self.mapping.sf_values(opportunity)

    def disagreements(self, pair: Pair) -> list[str]:
        """What a pair disagrees on, by the mapping alone (for the dead-letter check before the replay)."""
        values = self._values(pair)
        if values is None:
            return [f"{self._name(pair)}: not linked"]
        _, pc, sf = values
        return [f"{self._name(pair)}: {key} {pc[key]!r} in Partner Center, {sf[key]!r} in Salesforce"
                for key in pc if pc[key] != sf[key] and self.mapping.field(key).direction.value == "both"]

    def verify(self) -> list[str]:
        """Every rule, for every pair, and no duplicates anywhere; then the pairs' new snapshots."""
        self._find_partners()
        problems = self._duplicates()
        for pair in self.pairs:
            values = self._values(pair)
            if values is None:
                problems.append(f"{self._name(pair)}: not linked")
                continue
            referral, pc, sf = values
            link = self.services.store.links.get_by_referral(pair.referral_id or "")
            if link is None or link.opportunity_id != pair.opportunity_id:
                problems.append(f"{self._name(pair)}: the link is {link}")
            problems += [f"{self._name(pair)}: {p}" for p in check_pair(self.mapping, pair, pc, sf)]
            self.counts.pairs_checked += 1
            self.counts.fields_checked += len(pc)
            pair.snapshot = {key: {PC: pc[key], SF: sf[key]} for key in pc}
            pair.asked, pair.history, pair.created = {}, {}, {}
            pair.closed_at_start = referral["status"] == "Closed"
            pair.closed, pair.closed_by_microsoft = pair.closed_at_start, False
            pair.phase, pair.solutions = sf["stage"], list(sf["solutions"])
        return problems

    def _duplicates(self) -> list[str]:
        problems = []
        references = Counter(r.get("externalReferenceId") for r in self.world.pc.referrals.values()
                             if r.get("externalReferenceId"))
        problems += [f"{n} referrals carry externalReferenceId {ref}" for ref, n in references.items() if n > 1]
        opportunities = self.world.sf.query("SELECT Id, Referral_Identifier__c FROM Opportunity")
        identifiers = Counter(o["Referral_Identifier__c"] for o in opportunities if o["Referral_Identifier__c"])
        problems += [f"{n} opportunities carry Referral_Identifier__c {ref}" for ref, n in identifiers.items() if n > 1]
        if len(self.world.pc.referrals) != len(self.pairs):
            problems.append(f"{len(self.world.pc.referrals)} referrals for {len(self.pairs)} pairs")
        if len(opportunities) != len(self.pairs):
            problems.append(f"{len(opportunities)} opportunities for {len(self.pairs)} pairs")
        contacts = Counter(c["Email"] for c in self.world.sf.query("SELECT Email FROM Contact") if c["Email"])
        problems += [f"{n} contacts have the e-mail {email}" for email, n in contacts.items() if n > 1]
        roles = Counter((r["OpportunityId"], r["ContactId"])
                        for r in self.world.sf.query("SELECT OpportunityId, ContactId FROM OpportunityContactRole"))
        problems += [f"contact {c} has {n} roles on {o}" for (o, c), n in roles.items() if n > 1]
        accounts = Counter(a["Name"] for a in self.world.sf.query("SELECT Name FROM Account"))
        problems += [f"{n} accounts are named {name}" for name, n in accounts.items() if n > 1]
        rows = Counter((r["Opportunity__c"], r["Solution_Id__c"])
                       for r in self.world.sf.query("SELECT Opportunity__c, Solution_Id__c FROM Microsoft_Solution__c"))
        problems += [f"solution {s} is on {o} {n} times" for (o, s), n in rows.items() if n > 1]
        return problems

    def _history(self, problems: list[str]) -> list[str]:
        """The sync log of the pairs named in `problems`, oldest first: what each sync moved where."""
        named = [p for p in self.pairs if any(f"referral {p.referral_id}" in problem for problem in problems)]
        ids = {p.referral_id for p in named} | {p.opportunity_id for p in named}
        entries = [e for e in self.services.store.synclog.iter_recent() if {e.referral_id, e.opportunity_id} & ids]
        return [f"sync log {e.at:%H:%M:%S.%f} {e.direction} {e.outcome.value} {e.referral_id} {e.opportunity_id} "
                f"{e.changes} {e.message}" for e in reversed(entries)]

    # -- helpers ------------------------------------------------------------------------------------

    def _date(self) -> str:
        return (dt.date(2027, 1, 1) + dt.timedelta(days=self.rng.randrange(0, 700))).isoformat()

    def _closing(self) -> str:
        """A closing date as Partner Center writes it: a user's local midnight, in UTC (offsets -3 h to +10 h)."""
        offset = dt.timedelta(hours=self.rng.choice(CLOSING_OFFSETS_HOURS))
        midnight = dt.datetime.combine(dt.date.fromisoformat(self._date()), dt.time(), dt.timezone.utc)
        return (midnight - offset).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _phase(self, stage: str) -> str:
        return self.mapping.stage.sf_value({"StageName": stage})

    def _canonical_sf(self, sf_field: str, value: Any) -> Any:
        key = next(f.key for f in self.mapping.fields if getattr(f, "sf_field", None) == sf_field)
        return self.mapping.field(key).sf_value({sf_field: value})

    @staticmethod
    def _name(pair: Pair) -> str:
        return f"pair (opportunity {pair.opportunity_id}, referral {pair.referral_id}, from {pair.origin})"


def check_pair(mapping: Mapping, pair: Pair, pc: dict[str, Any], sf: dict[str, Any]) -> list[str]:
    """The rules, per mapped field, for a pair at a quiet point.

    - A pair created in this round: the values its creator gave are on both sides; fields that flow both
      ways, or from one side, agree.
    - Fields that flow both ways agree. The value is the one the only side that changed it asked for; one
      of the two when both did (the conflict policy chose); unchanged when neither did. Once a referral is
      closed, Partner Center's value (Salesforce edits are put back). When Microsoft closed it in this round
      while the seller edited, only agreement is certain (the edit may have been refused as too late).
    - Fields that flow to Partner Center only: Salesforce keeps the seller's value, never overwritten;
      Partner Center has it, unless Microsoft changed that field itself (then the engine leaves Microsoft's
      value alone: merge.py's one-way rule), or the referral is closed (then it keeps what it had, and
      Salesforce may be put back to it where the engine can write the field: the solutions rows). When
      Microsoft closed it in this round, any value the seller gave the field before may have gone through.
    - Fields that flow to Salesforce only: Salesforce has Partner Center's value, or the seller's own
      (left alone, as above).
    """
    problems = []
    for rule in mapping.fields:
        key, direction = rule.key, rule.direction.value
        p, s = pc[key], sf[key]
        asked = pair.asked.get(key, {})
        where = f"{key}: Partner Center {p!r}, Salesforce {s!r}"
        if pair.snapshot is None:
            if key in pair.created and not p == s == pair.created[key]:
                problems.append(f"{where}, created as {pair.created[key]!r}")
            elif p != s:
                problems.append(f"{where}: a new pair disagrees")
            continue
        before_pc, before_sf = pair.snapshot[key][PC], pair.snapshot[key][SF]
        if direction == "both":
            if p != s:
                problems.append(f"{where}: they disagree")
            elif pair.closed_at_start:
                if p != before_pc:
                    problems.append(f"{where}: a closed referral changed (was {before_pc!r})")
            elif pair.closed_by_microsoft and SF in asked:
                pass  # agreement is what is certain
            elif asked and p not in asked.values():
                problems.append(f"{where}: lost the change(s) {asked}")
            elif not asked and p != before_pc:
                problems.append(f"{where}: changed with nobody asking (was {before_pc!r})")
        elif direction == "to_partner_center":
            seller = asked.get(SF, before_sf)
            closed = pair.closed_at_start or pair.closed_by_microsoft
            if s != seller and not (closed and s == p):  # a closed referral's value may be put back
                problems.append(f"{where}: the seller's {seller!r} was overwritten")
            if pair.closed_at_start:
                allowed = [before_pc]
            elif pair.closed_by_microsoft:  # any of the seller's values may have gone through before it
                allowed = [before_pc, *pair.history.get(key, []), *asked.values()]
            elif asked:
                allowed = list(asked.values())
            else:
                allowed = [before_pc]
            if p not in allowed:
                problems.append(f"{where}: expected one of {allowed!r}")
        elif s != p and s != asked.get(SF, before_sf):
            problems.append(f"{where}: Salesforce has neither Partner Center's value nor the seller's")
    return problems


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0][:80]


def _report(title: str, problems: list[str]) -> str:
    shown = "\n  ".join(problems[:60])
    more = f"\n  ... and {len(problems) - 60} more" if len(problems) > 60 else ""
    return f"{title} (CHAOS_SEED={SEED}):\n  {shown}{more}"


def _host_counts(log: str) -> Counter[str]:
    patterns = {"queue retries (sync re-queued with back-off)": "failed (attempt",
                "Partner Center client retries (429/5xx/reset)": ", retry ",
                "Salesforce row-lock retries": "locked, retrying",
                "messages to a poison queue": "-poison"}
    return Counter({name: sum(1 for line in log.splitlines() if pattern in line)
                    for name, pattern in patterns.items()})


def test_chaos_converges(chaos_world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from shared.runtime import Services

    started = time.monotonic()
    rng = random.Random(SEED)
    services = Services()
    settings = load_settings()
    chaos = Chaos(chaos_world, services, rng)
    instance = CrashingInstance(chaos_world.connection_string, settings, services.mapping,
                                random.Random(SEED + 1), KILL_PROBABILITY)
    counter = LineCounter({"queue retries (sync re-queued with back-off)": "failed (attempt",
                           "Partner Center client retries (429/5xx/reset)": ", retry ",
                           "Salesforce row-lock retries": "locked, retrying"})
    logging.getLogger("shared").addHandler(counter)
    for name in ("shared", "tests.chaos"):
        logging.getLogger(name).setLevel(logging.INFO)
    instance.start()
    try:
        chaos.run_round(SEED_PAIRS, creates_only=True)
        chaos.settle(instance)
        for _ in range(ROUNDS):
            chaos.run_round(OPERATIONS)
            chaos.settle(instance)
    finally:
        instance.stop()
        logging.getLogger("shared").removeHandler(counter)

    entries = list(services.store.synclog.iter_recent())
    outcomes = Counter(entry.outcome.value for entry in entries)
    retries = _host_counts(chaos_world.host.log()) + counter.counts
    counts = chaos.counts
    lines = [
        f"chaos: seed {SEED}, {chaos.round} rounds, {time.monotonic() - started:.0f} s",
        f"  operations: {sum(counts.operations.values())} ({_listed(counts.operations)})",
        f"  faults injected: {sum(counts.faults.values())} ({_listed(counts.faults)}); "
        + _listed(Counter(chaos.faults_applied())),
        f"  instance kills: {sum(instance.fuse.kills.values())} (messages it finished: {instance.processed})",
        f"  retries: {_listed(retries)}",
        f"  conflicts settled by policy: {outcomes.get('conflict', 0)}; sync log: {_listed(outcomes)}",
        f"  dead letters (all replayed and converged): {sum(counts.dead_letters.values())} "
        f"({_listed(counts.dead_letters)}) reasons: {_listed(counts.reasons)}",
        f"  checked: {counts.pairs_checked} pair checks, {counts.fields_checked} field checks, "
        f"{len(chaos.pairs)} pairs at the end; waits for quiet: {', '.join(f'{w:.0f} s' for w in counts.quiet_waits)}",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert counts.pairs_checked >= len(chaos.pairs)
    assert sum(counts.faults.values()) > 0 and sum(counts.operations.values()) > 0
    assert chaos_world.pc.closed_edits_refused == 0, "the connector sent a change to a closed referral"


def _listed(counter: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()) if count) or "none"

