"""`python -m shared backfill` against both simulators and Azurite: a tenant with referrals linked by
externalReferenceId, by Referral Identifier, and (most of them) without an opportunity.

Each test checks the end state on both sides: one opportunity and one link per referral, no duplicate
account, contact, contact role or solutions row, a base per pair that makes the next sync NO_CHANGE.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from sandbox.azurite import Azurite
from sandbox.salesforce import SalesforceSim
from shared.cli import main
from shared.models.records import SyncOutcome
from shared.runtime import services
from shared.store import OPPORTUNITY_QUEUE, REFERRAL_QUEUE
from shared.sync.backfill_runner import CURSOR, Backfill
from tests.fixtures.connector import SyncWorld, seller_opportunity

CUSTOMERS = 40
MATCHED = 8
"""Customers 00..07 already have an account in Salesforce; customer 08 has two (a person must choose)."""
TWICE = "Customer 08"
SALESFORCE_OBJECTS = ("Account", "Contact", "Opportunity", "OpportunityContactRole", "Microsoft_Solution__c")


class Interrupted(Exception):
    """Stands for a kill: raised by the checkpoint hook."""


@dataclass
class Queues:
    """Records what the backfill hands to the normal sync (the queue client itself is tested elsewhere)."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def send(self, queue: str, payload: dict[str, Any]) -> None:
        self.sent.append((queue, payload))

    def ids(self, queue: str) -> list[str]:
        key = "referral_id" if queue == REFERRAL_QUEUE else "opportunity_id"
        return [payload[key] for name, payload in self.sent if name == queue]


@dataclass
class Tenant:
    """What exists before the first run."""

    by_external: dict[str, str]
    """Referral id -> the opportunity its externalReferenceId names (made by an earlier connector)."""
    by_field: dict[str, str]
    """Referral id -> the opportunity whose Referral Identifier holds it."""
    new: list[str]
    """Referrals without an opportunity."""
    opted_in: list[str]
    """Opted-in opportunities without a referral."""

    @property
    def referrals(self) -> list[str]:
        return [*self.by_external, *self.by_field, *self.new]


def new_referral(index: int) -> dict[str, Any]:
    """A referral from Microsoft; customers, e-mails and solutions repeat across referrals."""
    return {
        "name": f"Deal {index}",
        "customerProfile": {"name": f"Customer {index % CUSTOMERS:02d}",
                            "team": [{"firstName": "Pat", "lastName": f"Lee {index}",
                                      "email": f"person{index % 250}@customer.example"}]},
        "details": {"dealValue": 1000 + index,
                    "closingDateTime": None if index % 50 == 0 else "2027-03-01T00:00:00Z",
                    "requirements": {"solutions": [{"id": f"sol-{index % 3}", "name": f"Solution {index % 3}",
                                                    "type": "Service"}]}},
        "inviteContext": {"notes": "Call the CIO first" if index % 100 == 1 else None},
    }


def build_tenant(world: SyncWorld, *, linked: int = 30, new: int = 390) -> Tenant:
    sf, pc = world.sf, world.pc
    for k in range(MATCHED):
        sf.create("Account", {"Name": f"Customer {k:02d}", "BillingCountry": "United States"})
    for _ in range(2):
        sf.create("Account", {"Name": TWICE, "BillingCountry": "United States"})
    for k in range(10):
        sf.create("Contact", {"LastName": f"Known {k}", "Email": f"person{k}@customer.example"})
    by_external = {}
    for i in range(linked):
        opportunity = seller_opportunity(sf, name=f"Ext {i} - Deal", amount=5000 + i)
        referral = pc.create_incoming({"name": f"Ext {i} - Deal", "externalReferenceId": opportunity,
                                       "customerProfile": {"name": f"Ext {i} Ltd"},
                                       "details": {"closingDateTime": "2027-01-31T00:00:00Z"}})
        by_external[referral["id"]] = opportunity
    by_field = {}
    for i in range(linked):
        referral = pc.create_incoming({"name": f"Field {i}", "customerProfile": {"name": f"Field {i} Ltd"},
                                       "details": {"closingDateTime": "2027-02-28T00:00:00Z"}})
        account = sf.create("Account", {"Name": f"Field {i} Ltd", "BillingCountry": "United States"})
        by_field[referral["id"]] = sf.create("Opportunity", {
            "Name": f"Field {i}", "AccountId": account, "StageName": "Prospecting", "CloseDate": "2027-01-31",
            "Amount": 10000, "Referral_Identifier__c": referral["id"]})
    fresh = [pc.create_incoming(new_referral(i))["id"] for i in range(new)]
    opted_in = [seller_opportunity(sf, name=f"Opted {i} - Deal") for i in range(3)]
    seller_opportunity(sf, name="Not opted - Deal", opt_in=False)
    return Tenant(by_external, by_field, fresh, opted_in)


def backfill(world: SyncWorld, queues: Queues, **options: Any) -> Backfill:
    engine = world.engine
    return Backfill(store=world.store, partner_center=engine.pc, salesforce=engine.sf, mapping=engine.mapping,
                    queues=queues, **options)


def snapshot(sf: SalesforceSim) -> dict[str, dict[str, str]]:
    """Every record's SystemModstamp, per object: equal snapshots mean nothing was written."""
    return {name: {row["Id"]: row["SystemModstamp"] for row in sf.query(f"SELECT Id, SystemModstamp FROM {name}")}
            for name in SALESFORCE_OBJECTS}


def assert_converged(world: SyncWorld, tenant: Tenant) -> dict[str, str]:
    """One opportunity and one link per referral, nothing doubled; returns referral id -> opportunity id."""
    sf = world.sf
    rows = sf.query("SELECT Id, Referral_Identifier__c FROM Opportunity WHERE Referral_Identifier__c != null")
    per_referral = Counter(row["Referral_Identifier__c"] for row in rows)
    assert set(per_referral) == set(tenant.referrals)
    assert set(per_referral.values()) == {1}, [k for k, n in per_referral.items() if n > 1]
    opportunities = {row["Referral_Identifier__c"]: row["Id"] for row in rows}
    for referral_id, opportunity_id in {**tenant.by_external, **tenant.by_field}.items():
        assert opportunities[referral_id] == opportunity_id
    links = {link.referral_id: link.opportunity_id for link in world.store.links.list()}
    assert links == opportunities
    states = {state.referral_id: state for state in world.store.state.list()}
    assert set(states) == set(tenant.referrals)
    # Each base was recorded at the referral's current version: the reconcile sees nothing to queue.
    assert all(state.referral_etag == world.referral(rid)["eTag"] for rid, state in states.items())

    accounts = Counter((row["Name"], row["BillingCountry"])
                       for row in sf.query("SELECT Name, BillingCountry FROM Account WHERE Name LIKE 'Customer%'"))
    assert accounts == {**{(f"Customer {k:02d}", "United States"): 1 for k in range(CUSTOMERS)},
                        (TWICE, "United States"): 2}
    contacts = Counter(row["Email"] for row in sf.query("SELECT Email FROM Contact WHERE Email != null"))
    assert set(contacts.values()) == {1}
    new = {opportunities[r] for r in tenant.new}
    roles = Counter((row["OpportunityId"], row["ContactId"])
                    for row in sf.query("SELECT OpportunityId, ContactId FROM OpportunityContactRole"))
    assert set(roles.values()) == {1}
    assert Counter(o for o, _ in roles if o in new) == {o: 1 for o in new}
    keys = Counter(row["Solution_Key__c"] for row in sf.query(
        "SELECT Solution_Key__c FROM Microsoft_Solution__c WHERE Solution_Key__c != null"))
    assert set(keys.values()) == {1} and len(keys) == len(tenant.new)
    return opportunities


def test_backfill_links_creates_and_a_second_run_does_nothing(sync_world: SyncWorld) -> None:
    tenant = build_tenant(sync_world)
    queues = Queues()

    report = backfill(sync_world, queues).run()

    assert report.listed == 450 and report.batches == 1
    assert report.counts["link"] == 60 and report.counts["create"] == 390
    assert report.counts["already_linked"] == report.counts["ambiguous"] == report.counts["handed_off"] == 0
    assert report.counts["accounts_created"] == CUSTOMERS - MATCHED - 1  # one each, the shared name none
    opportunities = assert_converged(sync_world, tenant)
    assert sorted(queues.ids(OPPORTUNITY_QUEUE)) == sorted(tenant.opted_in)  # the linked ones are not queued
    assert queues.ids(REFERRAL_QUEUE) == []

    sf = sync_world.sf
    first, ambiguous = tenant.new[0], tenant.new[8]
    created = sync_world.opportunity(opportunities[first])
    assert created["StageName"] == "Prospecting" and created["Amount"] == 1000
    assert created["AccountId"] is not None and "Created from Partner Center referral" in created["Audit__c"]
    undecided = sync_world.opportunity(opportunities[ambiguous])
    assert undecided["AccountId"] is None and f"{TWICE} (" in undecided["Audit__c"]
    # A referral without a closing date got the default one; the first merge sent it to Partner Center.
    assert sync_world.referral(first)["details"]["closingDateTime"].startswith(created["CloseDate"])
    linked = sync_world.opportunity(tenant.by_external[next(iter(tenant.by_external))])
    assert linked["Referral_Identifier__c"] == next(iter(tenant.by_external))

    # The base recorded with each link makes the next sync of every kind of pair a no-op.
    before = snapshot(sf)
    samples = [first, ambiguous, tenant.new[50], next(iter(tenant.by_external)), next(iter(tenant.by_field))]
    for referral_id in samples:
        assert sync_world.engine.sync_referral(referral_id).outcome is SyncOutcome.NO_CHANGE, referral_id
        assert sync_world.engine.sync_opportunity(opportunities[referral_id]).outcome is SyncOutcome.NO_CHANGE
    assert snapshot(sf) == before

    # A second run finds the cursor finished; a restart goes through everything and writes nothing.
    used = sf.org.api.used
    assert backfill(sync_world, Queues()).run().already_finished is not None
    assert sf.org.api.used == used
    again = backfill(sync_world, Queues()).run(restart=True)
    assert again.counts["already_linked"] == 450 and again.counts["create"] == again.counts["link"] == 0
    assert sf.org.api.used - used == 1  # the opted-in query; every referral was known from the links table
    assert snapshot(sf) == before
    assert_converged(sync_world, tenant)


def test_an_interrupted_run_resumes_without_duplicates(sync_world: SyncWorld) -> None:
    tenant = build_tenant(sync_world, linked=10, new=180)

    def stop_at(stage: str, number: int) -> Any:
        def hook(at: str, batch: int) -> None:
            if (at, batch) == (stage, number):
                raise Interrupted(f"{stage} {number}")
        return hook

    # Killed after batch 2's Salesforce writes, before its links: opportunities exist, unlinked.
    with pytest.raises(Interrupted):
        backfill(sync_world, Queues(), batch_size=50, checkpoint=stop_at("written", 2)).run()
    cursor = sync_world.store.cursors.get(CURSOR)
    assert cursor is not None and cursor.value["in_flight"]["create"]
    # Killed again in the resumed run, after that batch's links but before its sync state.
    with pytest.raises(Interrupted):
        backfill(sync_world, Queues(), batch_size=50, checkpoint=stop_at("linked", 1)).run()
    # A restart lists every referral again, and still finishes the interrupted batch.
    queues = Queues()
    report = backfill(sync_world, queues, batch_size=50).run(restart=True)

    assert report.resumed and report.counts["already_linked"] == 50 and report.counts["link"] == 50
    assert report.counts["ambiguous"] == report.counts["handed_off"] == 0
    assert_converged(sync_world, tenant)
    assert sync_world.store.cursors.get(CURSOR).value["finished_at"]
    assert sorted(queues.ids(OPPORTUNITY_QUEUE)) == sorted(tenant.opted_in)
    for referral_id in (tenant.new[60], tenant.new[99], tenant.new[-1]):
        assert sync_world.engine.sync_referral(referral_id).outcome is SyncOutcome.NO_CHANGE


def test_the_creation_path_costs_at_most_a_150th_of_a_salesforce_call_per_referral(sync_world: SyncWorld) -> None:
    for i in range(2000):
        sync_world.pc.create_incoming({**new_referral(i), "customerProfile": {
            "name": f"Company {i}", "team": [{"firstName": "Pat", "lastName": f"Lee {i}",
                                              "email": f"buyer{i}@company.example"}]}})
    api = sync_world.sf.org.api
    used, batch_calls = api.used, []

    def measure(stage: str, number: int) -> None:
        if stage == "committed":
            batch_calls.append(api.used - used)

    report = backfill(sync_world, Queues(), checkpoint=measure).run()

    assert report.counts["create"] == 2000 and report.counts["accounts_created"] == 2000
    assert report.counts["contacts_created"] == 2000 and report.counts["referral_updates"] == 40
    # A batch of 2,000 new referrals, each with a new account, a contact and a solution: 1 call of reads,
    # 10 Collections of 200 for each of accounts, opportunities, contacts, contact roles and solutions rows
    # (5 Collections a composite call: 10 calls), 1 read-back, 1 update (the 40 without a closing date got
    # the default one and an Audit line). The run adds one query for opted-in opportunities.
    assert batch_calls == [13]
    assert 13 <= 2000 / 150 and api.used - used == 14
    assert len(sync_world.sf.query("SELECT Id FROM OpportunityContactRole")) == 2000


def test_failures_are_handed_to_the_normal_sync_and_nothing_is_lost(sync_world: SyncWorld) -> None:
    good = [sync_world.pc.create_incoming(new_referral(i))["id"] for i in range(20)]
    bad = sync_world.pc.create_incoming({**new_referral(99), "customerProfile": {
        "name": "Broken Ltd", "team": [{"firstName": "No", "lastName": "Mail", "email": "not an e-mail"}]}})["id"]
    sync_world.sf.org.lock_faults = 3  # the first writes meet a row lock: re-sent, not failed
    queues = Queues()

    report = backfill(sync_world, queues).run()

    assert report.counts["create"] == 21 and report.counts["handed_off"] == 1
    assert queues.ids(REFERRAL_QUEUE) == [bad]
    assert any("INVALID_EMAIL_ADDRESS" in e for e in report.examples["handed_off"])
    assert sync_world.store.links.get_by_referral(bad) is None
    linked = {link.referral_id for link in sync_world.store.links.list()}
    assert linked == set(good)


def test_an_unreadable_referral_is_a_dead_letter_and_the_pages_go_on(sync_world: SyncWorld) -> None:
    """Listed across pages of 2, the referral the model cannot read is set aside; all the others are done."""
    good = [sync_world.pc.create_incoming(new_referral(i))["id"] for i in range(5)]
    odd = sync_world.pc.create_incoming({**new_referral(7), "details": {"requirements": {"industries": [42]}}})["id"]
    good += [sync_world.pc.create_incoming(new_referral(i))["id"] for i in range(5, 8)]

    dry = backfill(sync_world, Queues(), page_size=2).run(dry_run=True)
    assert dry.counts["unreadable"] == 1 and list(sync_world.store.dead_letters.list()) == []
    report = backfill(sync_world, Queues(), page_size=2).run()

    assert report.counts["create"] == 8 and report.counts["unreadable"] == 1
    assert {link.referral_id for link in sync_world.store.links.list()} == set(good)
    letter = sync_world.store.dead_letters.get(f"referral-{odd}")
    assert letter is not None and "details.requirements.industries.0" in letter.reason
    assert letter.payload == {"referral_id": odd, "source": "backfill"}


def test_ambiguous_referrals_are_left_for_a_person(sync_world: SyncWorld) -> None:
    sf, pc = sync_world.sf, sync_world.pc
    named = seller_opportunity(sf, name="Twice - Deal")
    first = pc.create_incoming({"name": "Twice A", "externalReferenceId": named})["id"]
    second = pc.create_incoming({"name": "Twice B", "externalReferenceId": named})["id"]
    both = pc.create_incoming({"name": "Both", "externalReferenceId": seller_opportunity(sf, name="Both - one")})
    sf.create("Opportunity", {"Name": "Both - two", "StageName": "Prospecting", "CloseDate": "2027-01-31",
                              "Referral_Identifier__c": both["id"]})

    report = backfill(sync_world, Queues()).run()

    assert report.counts["link"] == 1 and report.counts["ambiguous"] == 2
    # Whichever of the two is listed first (created in the same millisecond: by id) links; the other waits.
    links = [sync_world.store.links.get_by_referral(r) for r in (first, second)]
    assert sorted(link.opportunity_id if link else "" for link in links) == ["", named]
    assert sync_world.store.links.get_by_referral(both["id"]) is None
    assert any("already linked to referral" in e for e in report.examples["ambiguous"])
    assert any("two opportunities" in e for e in report.examples["ambiguous"])


def test_a_backfilled_opportunity_is_the_one_the_sync_engine_creates(sync_world: SyncWorld) -> None:
    fields = {**new_referral(1), "details": {"dealValue": 4200, "closingDateTime": None, "notes": "From MSFT",
                                              "requirements": {"solutions": [{"id": "sol-x", "name": "X",
                                                                              "type": "Service"}]}}}
    by_engine = sync_world.pc.create_incoming(fields)["id"]
    by_backfill = sync_world.pc.create_incoming(fields)["id"]
    engine_opportunity = sync_world.engine.sync_referral(by_engine).opportunity_id

    backfill(sync_world, Queues()).run()

    ours = sync_world.store.links.get_by_referral(by_backfill).opportunity_id
    differ = {"Id", "CreatedDate", "LastModifiedDate", "SystemModstamp", "Referral_Identifier__c",
              "Referral_Link__c", "Audit__c"}

    def comparable(opportunity_id: str) -> dict[str, Any]:
        return {k: v for k, v in sync_world.opportunity(opportunity_id).items() if k not in differ}

    assert comparable(ours) == comparable(engine_opportunity)
    audit = [line.split(" UTC ", 1)[1] for line in sync_world.opportunity(ours)["Audit__c"].splitlines()]
    assert audit == [line.split(" UTC ", 1)[1]
                     for line in sync_world.opportunity(engine_opportunity)["Audit__c"].splitlines()]
    for by, opportunity_id in ((by_engine, engine_opportunity), (by_backfill, ours)):
        referral = sync_world.referral(by)
        assert referral["details"]["closingDateTime"].startswith(sync_world.opportunity(opportunity_id)["CloseDate"])
    roles = sync_world.sf.query("SELECT OpportunityId, ContactId FROM OpportunityContactRole")
    assert len({r["ContactId"] for r in roles}) == 1 and len(roles) == 2  # one contact, a role on each


@pytest.fixture
def cli_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI reads storage without a table prefix: an Azurite of its own."""
    with Azurite() as azurite:
        monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
        services.cache_clear()
        yield azurite.connection_string
        services.cache_clear()


def test_the_command_dry_run_writes_nothing_then_the_run_does_it(sync_world: SyncWorld, cli_storage: str,
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tenant = build_tenant(sync_world, linked=5, new=40)
    before, etags = snapshot(sync_world.sf), {r: sync_world.referral(r)["eTag"] for r in tenant.referrals}
    used = sync_world.sf.org.api.used
    settings = str(tmp_path / "absent.json")

    code = main(["--settings", settings, "backfill", "--dry-run", "--no-progress"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("Backfill, dry run: nothing was written.")
    assert "50 referrals listed in 1 batch(es)" in out
    lines = {line.rsplit(maxsplit=1)[0].strip(): line.rsplit(maxsplit=1)[1] for line in out.splitlines()
             if line.startswith("  ") and line.rsplit(maxsplit=1)[-1].isdigit()}
    assert lines["to link to the opportunity they name"] == "10"
    assert lines["to get a new opportunity"] == "40"
    assert lines["opted-in opportunities without a referral: to queue for the normal sync"] == "3"
    assert out.count("      e.g. ") >= 3 + 3 + 3
    notes = re.findall(r"e\.g\. [0-9a-f-]{36} \((account 001\w+|a new account|no account: 2 match, a person chooses)\)",
                       out)
    assert len(notes) == 3  # each new opportunity's example says which account it gets
    assert out.rstrip().endswith(f"It would create {CUSTOMERS - MATCHED - 1} accounts and 30 contacts.")
    assert snapshot(sync_world.sf) == before and sync_world.sf.org.api.used > used  # read, never wrote
    assert {r: sync_world.referral(r)["eTag"] for r in tenant.referrals} == etags
    app = services()
    assert list(app.store.links.list()) == [] and list(app.store.state.list()) == []
    assert app.store.cursors.get(CURSOR) is None and app.store.synclog.recent() == []
    assert _messages(cli_storage, OPPORTUNITY_QUEUE) == []

    code = main(["--settings", settings, "backfill", "--no-progress"])

    out = capsys.readouterr().out
    assert code == 0 and out.startswith("Backfill finished."), out
    assert "opportunity created" in out and f"Created {CUSTOMERS - MATCHED - 1} accounts and 30 contacts" in out
    queued = _messages(cli_storage, OPPORTUNITY_QUEUE)
    assert sorted(m["opportunity_id"] for m in queued) == sorted(tenant.opted_in)
    links = {link.referral_id for link in services().store.links.list()}
    assert links == set(tenant.referrals)
    code = main(["--settings", settings, "backfill", "--no-progress"])
    assert code == 0 and "already finished" in capsys.readouterr().out


def _messages(connection_string: str, queue: str) -> list[dict[str, Any]]:
    client = QueueClient.from_connection_string(connection_string, queue)
    try:
        return [json.loads(base64.b64decode(m.content)) for m in client.peek_messages(max_messages=32)]
    except Exception as exc:  # noqa: BLE001 - a queue nobody wrote to does not exist yet
        if "QueueNotFound" in str(exc):
            return []
        raise



def test_the_benchmark_entry_point_measures_a_small_backfill() -> None:
    from bench.backfill import run

    numbers = run(60, batch_size=25, memory=False)

    assert numbers["records"] == 60 and numbers["report"]["create"] == 60
    assert numbers["records_created"] == {name: 60 for name in SALESFORCE_OBJECTS}
    assert numbers["pc_calls"] == 1  # one page of up to 1,000
    assert 0 < numbers["sf_calls"] <= 3 * 6 + 1 and numbers["table_ops"] > 0  # 3 batches of at most 6 calls
    assert numbers["peak_memory_mb"] is None and numbers["records_per_second"] > 0
    assert numbers["peak_rss_mb"] >= numbers["rss_before_mb"] > 0
