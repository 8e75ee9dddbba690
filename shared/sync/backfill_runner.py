"""The backfill's I/O: list every referral once, read and write in bulk, keep a cursor, resume.

Why bulk: a tenant holds thousands of referrals, and the org's daily API limit is shared with every other
integration. One sync per referral costs about ten Salesforce calls; here a batch of up to 2,000 referrals
is read with one composite call of queries (its links with one Table range read, or by key in a large
store), and written with composite calls of sObject Collections (5 Collections of 200 records a call,
Salesforce's limits), so a backfilled record costs a small fraction of a call. Memory holds one batch,
whatever the tenant's size.

Why a cursor: a run may be stopped (Ctrl-C, a crash, the API budget). The cursor, saved before and after
each batch's writes, says where the listing resumes and which referrals were being written; the next run
finishes those (upserts by Referral Identifier and by solution key, contacts found by e-mail, contact roles
checked first, links written only if absent), so nothing is created twice.

Opted-in opportunities without a referral are not turned into referrals here: creating referrals at
Microsoft in bulk, unseen, is not what a first run should do. They are queued for the normal sync, which
checks each one's prerequisites and writes its outcome in the opportunity's Audit, as it does for a seller
who ticks the box (the reconcile timer would queue them too).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping as MappingABC, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import ConnectorError
from shared.models.records import Cursor, Link, SyncLogEntry, SyncOutcome, SyncState, utcnow
from shared.salesforce import COLLECTION_SIZE
from shared.salesforce.client import without_attributes
from shared.salesforce.results import RecordError, RecordResult, SubRequest, SubResponse
from shared.store.queues import OPPORTUNITY_QUEUE, REFERRAL_QUEUE
from shared.sync.backfill import (
    NEW_ACCOUNT,
    Action,
    CreatePlan,
    Decision,
    InFlight,
    NewOpportunity,
    Progress,
    account_name_field,
    contact_key,
    contact_roles,
    customer_name,
    decide,
    plan_creates,
)
from shared.sync.engine import PC_TO_SF
from shared.sync.plan import opportunity_values, plan_pair

if TYPE_CHECKING:
    import datetime as dt

    from shared.mapping import Mapping
    from shared.partner_center import PartnerCenterClient
    from shared.runtime import Services
    from shared.salesforce import SalesforceClient
    from shared.store import Store

log = logging.getLogger("shared.sync.backfill")

CURSOR = "backfill"
PAGE_SIZE = 100
"""`$top` of the referral listing: Partner Center's reference caps a page at 100 (follow nextLink past it)."""
BATCH_SIZE = 2000
"""Referrals decided and written together: a query of 2,000 ids stays under SOQL's length limit."""
READ_BACK_IDS = 2000
"""Opportunities read back per query (a query page holds at most 2,000 rows)."""
HEAVY_PER_CALL = 5
"""Salesforce runs at most 5 Collections or query subrequests in one composite call."""
SOQL_LIMIT = 90_000
"""Characters of one SOQL statement (Salesforce allows 100,000; queries go in composite bodies, so the
16 KB URL limit of `GET query` does not apply)."""
EXAMPLES = 3
"""Examples kept per kind for the report."""

Checkpoint = Callable[[str, int], None]
"""Called with a stage ("writing", "written", "linked", "committed") and the batch number (tests stop there)."""


class Sender(Protocol):
    """Where work for the normal sync goes (`QueueSender`)."""

    def send(self, queue: str, payload: dict[str, Any]) -> None: ...


# Salesforce in bulk -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One Collections write of any number of records (sent 200 a request)."""

    method: str
    path: str
    sobject: str = ""
    records: Sequence[MappingABC[str, Any]] = ()
    ids: Sequence[str] = ()

    @classmethod
    def create(cls, sobject: str, records: Sequence[MappingABC[str, Any]]) -> Write:
        return cls("POST", "composite/sobjects", sobject, records)

    @classmethod
    def upsert(cls, sobject: str, key: str, records: Sequence[MappingABC[str, Any]]) -> Write:
        return cls("PATCH", f"composite/sobjects/{sobject}/{key}", sobject, records)

    @classmethod
    def update(cls, sobject: str, records: Sequence[MappingABC[str, Any]]) -> Write:
        return cls("PATCH", "composite/sobjects", sobject, records)

    @classmethod
    def delete(cls, ids: Sequence[str]) -> Write:
        return cls("DELETE", "composite/sobjects", ids=ids)


class Bulk:
    """Many queries and Collections writes in as few composite calls as Salesforce allows.

    Every request is a composite subrequest (5 heavy ones a call), so the budget check, the re-login and
    the row-lock retries of `SalesforceClient.composite` apply, and long `IN (...)` lists travel in the
    request body instead of the URL.
    """

    def __init__(self, salesforce: SalesforceClient, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sf = salesforce
        self._sleep = sleep

    def query(self, soqls: Sequence[str]) -> list[list[dict[str, Any]]]:
        """The rows of each query (every page), in the order of `soqls`."""
        results: list[list[dict[str, Any]]] = [[] for _ in soqls]
        pending = [(i, SubRequest.query(soql, ref=f"bfq{i}")) for i, soql in enumerate(soqls)]
        while pending:
            follow = []
            for (index, _), answer in zip(pending, self._run([sub for _, sub in pending]), strict=True):
                error = answer.error("backfill query")
                if error is not None:
                    raise error
                body = answer.body or {}
                results[index] += [without_attributes(row) for row in body.get("records", [])]
                if not body.get("done", True) and body.get("nextRecordsUrl"):
                    follow.append((index, SubRequest(method="GET", path=_relative(body["nextRecordsUrl"]),
                                                     reference_id=f"bfq{index}")))
            pending = follow
        return results

    def write(self, writes: Sequence[Write]) -> list[list[RecordResult]]:
        """Independent writes, packed together; one result per record, in order, for each write.

        Records refused on a row lock are sent again after the client's lock back-off (they were not
        written), as `SalesforceClient` does for its own Collections calls.
        """
        items: list[Sequence[Any]] = [write.ids or write.records for write in writes]
        results: list[list[RecordResult]] = [[RecordResult() for _ in group] for group in items]
        pending = [(index, at) for index, group in enumerate(items) for at in range(len(group))]
        delays = self.sf.retry.delays()
        while pending:
            subs: list[SubRequest] = []
            owners: list[list[tuple[int, int]]] = []
            for index, write in enumerate(writes):
                mine = [at for owner, at in pending if owner == index]
                for start in range(0, len(mine), COLLECTION_SIZE):
                    chunk = mine[start:start + COLLECTION_SIZE]
                    subs.append(self._subrequest(write, [items[index][at] for at in chunk], f"bfw{len(subs)}"))
                    owners.append([(index, at) for at in chunk])
            for owned, answer in zip(owners, self._run(subs), strict=True):
                if answer.success and isinstance(answer.body, list) and len(answer.body) == len(owned):
                    for (index, at), raw in zip(owned, answer.body, strict=True):
                        results[index][at] = RecordResult.model_validate(raw)
                else:
                    error = RecordError(status_code=answer.error_code or "UNKNOWN",
                                        message=f"the request for {len(owned)} records failed ({answer.status})")
                    for index, at in owned:
                        results[index][at] = RecordResult(success=False, errors=[error])
            pending = [(index, at) for index, at in pending if results[index][at].locked]
            delay = next(delays, None) if pending else None
            if delay is None:
                break
            log.info("backfill: %d record(s) locked, retrying in %.1f s", len(pending), delay)
            self._sleep(delay)
        return results

    @staticmethod
    def _subrequest(write: Write, chunk: Sequence[Any], ref: str) -> SubRequest:
        if write.method == "DELETE":
            return SubRequest(method="DELETE", reference_id=ref,
                              path=f"composite/sobjects?ids={','.join(chunk)}&allOrNone=false")
        records = [{**record, "attributes": {"type": write.sobject}} for record in chunk]
        return SubRequest(method=write.method, path=write.path, reference_id=ref,
                          body={"allOrNone": False, "records": records})

    def _run(self, subs: Sequence[SubRequest]) -> list[SubResponse]:
        answers: list[SubResponse] = []
        for start in range(0, len(subs), HEAVY_PER_CALL):
            answers += self.sf.composite(subs[start:start + HEAVY_PER_CALL])
        return answers


def soql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def in_queries(head: str, values: Iterable[str], tail: str = "") -> list[str]:
    """`head IN (values) tail` as few queries as fit SOQL's length limit (none for no values)."""
    queries: list[str] = []
    current: list[str] = []
    size = len(head) + len(tail) + 8
    for value in dict.fromkeys(values):
        literal = soql_literal(value)
        if current and size + len(literal) + 2 > SOQL_LIMIT:
            queries.append(f"{head} IN ({', '.join(current)}){tail}")
            current, size = [], len(head) + len(tail) + 8
        current.append(literal)
        size += len(literal) + 2
    if current:
        queries.append(f"{head} IN ({', '.join(current)}){tail}")
    return queries


def _relative(url: str) -> str:
    """`/services/data/v64.0/query/01g...-2000` -> `query/01g...-2000` (a subrequest path)."""
    return url.split("/services/data/", 1)[-1].split("/", 1)[-1]


# The report -----------------------------------------------------------------------------------------


KINDS = {
    Action.ALREADY_LINKED.value: ("already linked", "already linked"),
    Action.LINK.value: ("linked to the opportunity they name", "to link to the opportunity they name"),
    Action.CREATE.value: ("opportunity created", "to get a new opportunity"),
    Action.AMBIGUOUS.value: ("left for a person (ambiguous)", "to leave for a person (ambiguous)"),
    "handed_off": ("handed to the normal sync (failed here)", "to hand to the normal sync"),
    "unreadable": ("unreadable: kept as dead letters with the reason", "unreadable: to keep as dead letters"),
    "opted_in": ("opted-in opportunities without a referral: queued for the normal sync",
                 "opted-in opportunities without a referral: to queue for the normal sync"),
}
"""Report kinds, in the order printed: (label after a run, label in a dry run)."""


@dataclass
class BackfillReport:
    """What a run did (or, dry, would do): counts per kind, a few examples each, and what it wrote."""

    dry_run: bool = False
    listed: int = 0
    batches: int = 0
    resumed: bool = False
    already_finished: str | None = None
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, example: str | None = None, count: int = 1) -> None:
        if count:
            self.counts[kind] += count
        if example is not None and len(self.examples.setdefault(kind, [])) < EXAMPLES:
            self.examples[kind].append(example)


# The run --------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    """One batch's referrals by id, and what became of the ones being written."""

    number: int
    referrals: dict[str, dict[str, Any]]
    pairs: dict[str, str] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    states: dict[str, SyncState] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def fail(self, referral_id: str, reason: str) -> None:
        self.failed.setdefault(referral_id, reason)
        self.states.pop(referral_id, None)


class Backfill:
    """The first run on an existing tenant: link what belongs together, create what is missing.

    Args:
        store: the connector's tables (links, sync state, the cursor, the sync log).
        partner_center: lists the referrals and patches the few a first merge changes.
        salesforce: the Salesforce client (all calls go through its composite).
        mapping: the loaded mapping.
        queues: sends work to the normal sync (`send(queue, payload)`).
        batch_size: referrals decided and written together.
        page_size: `$top` of the listing.
        clock: the time (Audit lines, the sync state).
        checkpoint: called at each stage of each batch (tests interrupt a run there).
    """

    def __init__(self, *, store: Store, partner_center: PartnerCenterClient, salesforce: SalesforceClient,
                 mapping: Mapping, queues: Sender, batch_size: int = BATCH_SIZE, page_size: int = PAGE_SIZE,
                 clock: Callable[[], dt.datetime] = utcnow, checkpoint: Checkpoint | None = None) -> None:
        self.store, self.pc, self.mapping, self.queues = store, partner_center, mapping, queues
        self.bulk = Bulk(salesforce)
        self.sf = salesforce
        self.batch_size, self.page_size, self.clock = batch_size, page_size, clock
        self.checkpoint = checkpoint or (lambda stage, number: None)
        self._cursor: Cursor | None = None
        self._dry_links: set[str] = set()
        """In a dry run, the opportunities it would link (they will not be opted-in ones without a referral)."""

    @classmethod
    def from_services(cls, services: Services, **options: Any) -> Backfill:
        return cls(store=services.store, partner_center=services.partner_center, salesforce=services.salesforce,
                   mapping=services.mapping, queues=services.queues, **options)

    def run(self, *, dry_run: bool = False, restart: bool = False,
            on_batch: Callable[[BackfillReport, int], None] | None = None) -> BackfillReport:
        """Backfill every referral, then queue the opted-in opportunities that have none.

        Args:
            dry_run: read and decide only; write nothing anywhere (not even the cursor).
            restart: list every referral again, even after a finished run (what is linked stays as it is).
            on_batch: called after each batch with the report so far and the batch's size (progress bar).
        """
        report = BackfillReport(dry_run=dry_run)
        self._cursor = self.store.cursors.get(CURSOR)
        progress = Progress.model_validate(self._cursor.value) if self._cursor is not None else Progress()
        if restart:  # from the first referral again, but an interrupted batch is still finished, not relinked
            progress = Progress(in_flight=progress.in_flight)
        if progress.finished_at:
            report.already_finished = progress.finished_at
            return report
        report.resumed = progress.created is not None or bool(progress.in_flight)
        if not progress.referrals_done:
            for number, referrals in enumerate(self._batches(progress, report, dry_run), start=1):
                progress = self._batch(_Batch(number, {r["id"]: r for r in referrals}), progress, report, dry_run)
                if on_batch is not None:
                    on_batch(report, len(referrals))
            progress = progress.model_copy(update={"referrals_done": True})
            self._save(progress, dry_run)
        self._queue_opted_in(report, dry_run)
        self._save(progress.model_copy(update={"finished_at": self.clock().isoformat()}), dry_run)
        return report

    # Listing ------------------------------------------------------------------------------------------

    def _batches(self, start: Progress, report: BackfillReport, dry_run: bool) -> Iterator[list[dict[str, Any]]]:
        """Referrals oldest first, in batches, from where the cursor stands (pages are streamed).

        A referral the model cannot read is set aside as a dead letter with its reason (a dry run only
        counts it); the page and the run go on without it.
        """
        from shared.partner_center.referrals import odata_filter
        from shared.sync.processor import set_aside_unreadable

        since = start.created_since()
        batch: list[dict[str, Any]] = []
        for page in self.pc.iter_pages(filter=odata_filter(created_since=since) if since else None,
                                       orderby="createdDateTime asc", top=self.page_size):
            for unreadable in page.unreadable:
                reason = unreadable.reason if dry_run else set_aside_unreadable(self.store, unreadable,
                                                                                source="backfill")
                report.note("unreadable", f"{unreadable.id}: {reason}")
            for referral in page.value:
                api = referral.to_api()
                if api.get("id") and not start.done(api):
                    batch.append(api)
                if len(batch) >= self.batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    # One batch --------------------------------------------------------------------------------------

    def _batch(self, batch: _Batch, progress: Progress, report: BackfillReport, dry_run: bool) -> Progress:
        report.listed += len(batch.referrals)
        report.batches += 1
        in_flight = progress.in_flight
        decisions, plan = self._decide(batch, in_flight)
        reasons = {d.referral_id: d.reason for d in decisions}
        for decision in decisions:
            if decision.action is not Action.CREATE:
                report.note(decision.action.value, _example(decision))
        for new in plan.opportunities:
            report.note(Action.CREATE.value, _create_example(new, reasons.get(new.referral["id"])))
        creates = [d for d in decisions if d.action is Action.CREATE]
        done = progress.after(list(batch.referrals.values()))
        writing = [d for d in decisions if d.action in (Action.CREATE, Action.LINK)]
        if dry_run:
            report.note("accounts_created", count=len(plan.accounts))
            report.note("contacts_created", count=len(plan.contacts))
            self._dry_links.update(str(d.opportunity_id) for d in decisions if d.action is Action.LINK)
        if dry_run or not writing:
            done = done.model_copy(update={"in_flight": in_flight.without(batch.referrals)})
            self._save(done, dry_run)
            return done
        rest = in_flight.without(batch.referrals)
        self._save(progress.model_copy(update={"in_flight": InFlight(
            create=rest.create + [d.referral_id for d in creates],
            link=rest.link + [d.referral_id for d in writing if d.action is Action.LINK])}), dry_run)
        self.checkpoint("writing", batch.number)
        batch.pairs.update({d.referral_id: str(d.opportunity_id) for d in writing if d.action is Action.LINK})
        self._create(batch, plan, report)
        self._first_sync(batch, report)
        self.checkpoint("written", batch.number)
        self._link(batch, report)
        self.checkpoint("linked", batch.number)
        self.store.state.create_many(list(batch.states.values()))
        for referral_id, reason in batch.failed.items():
            self.queues.send(REFERRAL_QUEUE, {"referral_id": referral_id, "source": "backfill"})
            report.note("handed_off", f"{referral_id}: {reason}")
        totals = Counter(progress.totals)
        totals.update({"created": len(batch.created), "linked": len(batch.pairs) - len(batch.created),
                       "handed_off": len(batch.failed)})
        done = done.model_copy(update={"in_flight": rest, "totals": dict(totals)})
        self._save(done, dry_run)
        self.store.synclog.append(SyncLogEntry(
            direction=PC_TO_SF, outcome=SyncOutcome.CREATED if batch.created else SyncOutcome.UPDATED,
            message=(f"Backfill batch {batch.number}: {len(batch.referrals)} referrals, {len(batch.created)} "
                     f"opportunities created, {len(batch.pairs) - len(batch.created)} linked, "
                     f"{len(batch.failed)} handed to the sync"),
            changes={"created": len(batch.created), "linked": len(batch.pairs) - len(batch.created),
                     "handed_off": len(batch.failed)}))
        self.checkpoint("committed", batch.number)
        return done

    def _decide(self, batch: _Batch, in_flight: InFlight) -> tuple[list[Decision], CreatePlan]:
        """Read what exists for the batch and decide; plan the creates.

        Links come from `LinkStore.find` (a range read, or by key). Only for referrals without a link, Salesforce is
        read, in one composite call of queries: opportunities carrying their ids, opportunities their
        `externalReferenceId`s name, accounts with their customers' names and contacts with their team's
        e-mails (the last two are read for all of them, before knowing which need a create: a call saved).
        """
        from shared.salesforce.polling import is_opportunity_id

        mapping = self.mapping
        links = {link.referral_id: link.opportunity_id for link in self.store.links.find(referral_ids=batch.referrals)}
        unlinked = [r for r in batch.referrals.values() if r["id"] not in links]
        by_referral_field: dict[str, str] = {}
        by_external: dict[str, tuple[str, str | None]] = {}
        opportunity_links: dict[str, str] = {}
        accounts: list[dict[str, Any]] = []
        contacts: dict[str, str] = {}
        if unlinked:
            own, match_by = mapping.own_fields, mapping.contact_rules.match_by
            head = f"SELECT Id, {own.referral_id} FROM {mapping.opportunity.sobject} WHERE"
            external = [str(r["externalReferenceId"]) for r in unlinked
                        if is_opportunity_id(r.get("externalReferenceId"))]
            select = ", ".join(dict.fromkeys(["Id", *mapping.account.sf_fields]))
            accounts_head = f"SELECT {select} FROM {mapping.account.sobject} WHERE {account_name_field(mapping)}"
            names = [name for name in map(customer_name, unlinked) if name]
            keys = [key for r in unlinked for c in mapping.contacts_for_create(r)
                    if (key := contact_key(mapping, c)) is not None]
            own_rows, named_rows, accounts, found = self._query(
                in_queries(f"{head} {own.referral_id}", [r["id"] for r in unlinked]),
                in_queries(f"{head} Id", external),
                in_queries(accounts_head, names),
                in_queries(f"SELECT Id, {match_by} FROM {mapping.contacts.sobject} WHERE {match_by}", keys))
            by_referral_field = {str(row[own.referral_id]): str(row["Id"]) for row in own_rows}
            ids = {str(row["Id"])[:15]: row for row in named_rows}
            for value in external:
                row = ids.get(value[:15])
                if row is not None:
                    by_external[value] = (str(row["Id"]), row.get(own.referral_id))
            contacts = {str(row[match_by]).lower(): str(row["Id"]) for row in found if row.get(match_by)}
            candidates = set(by_referral_field.values()) | {opp for opp, _ in by_external.values()}
            if candidates:
                opportunity_links = {link.opportunity_id: link.referral_id
                                     for link in self.store.links.find(opportunity_ids=candidates)}
        decisions = decide(list(batch.referrals.values()), links=links, by_referral_field=by_referral_field,
                           by_external=by_external, opportunity_links=opportunity_links, in_flight=in_flight)
        creates = [batch.referrals[d.referral_id] for d in decisions if d.action is Action.CREATE]
        plan = plan_creates(mapping, creates, accounts=accounts, contacts=contacts) if creates else CreatePlan()
        return decisions, plan

    def _query(self, *groups: list[str]) -> list[list[dict[str, Any]]]:
        """Run groups of queries together (one composite call for up to 5); the rows of each group."""
        rows = self.bulk.query([soql for group in groups for soql in group])
        out, at = [], 0
        for group in groups:
            out.append([row for chunk in rows[at:at + len(group)] for row in chunk])
            at += len(group)
        return out

    # Writing -----------------------------------------------------------------------------------------

    def _create(self, batch: _Batch, plan: CreatePlan, report: BackfillReport) -> None:
        """Accounts, then opportunities (upsert by Referral Identifier) and contacts, then contact roles and
        solutions rows: three rounds of composite calls, whatever the batch's size."""
        if not plan.opportunities:
            return
        mapping, own, now = self.mapping, self.mapping.own_fields, self.clock()
        accounts: dict[str, str | None] = {}
        if plan.accounts:
            results = self.bulk.write([Write.create(mapping.account.sobject, [a.values for a in plan.accounts])])[0]
            accounts = {a.ref: r.id if r.success else None for a, r in zip(plan.accounts, results, strict=True)}
            report.note("accounts_created", count=sum(1 for r in results if r.success))

        def account_id(ref: str | None) -> str | None:
            return accounts.get(ref) if ref and ref.startswith(NEW_ACCOUNT) else ref

        opportunities = []
        for new in plan.opportunities:
            if new.account and account_id(new.account) is None:
                batch.fail(new.referral["id"], "its account could not be created")
            else:
                opportunities.append(new)
        contacts = [{**c.values, **({"AccountId": a} if (a := account_id(c.account)) else {})} for c in plan.contacts]
        values = [opportunity_values(mapping, new.referral, account_id=account_id(new.account),
                                     candidates=new.candidates, now=now) for new in opportunities]
        opp_results, contact_results = self.bulk.write([
            Write.upsert(mapping.opportunity.sobject, own.referral_id, values),
            Write.create(mapping.contacts.sobject, contacts)])
        contact_ids, contact_errors = dict(plan.existing_contacts), {}
        for contact, result in zip(plan.contacts, contact_results, strict=True):
            if result.success and result.id:
                contact_ids[contact.key] = result.id
            else:
                contact_errors[contact.key] = _reason(result, "a contact of its customer team could not be created")
        report.note("contacts_created", count=sum(1 for r in contact_results if r.success))
        created: dict[str, str] = {}
        existed: list[str] = []
        for new, result in zip(opportunities, opp_results, strict=True):
            referral_id = new.referral["id"]
            if not result.success or not result.id:
                batch.fail(referral_id, _reason(result, "the opportunity could not be created"))
            elif missing := [key for key in new.contacts if key not in contact_ids]:
                batch.fail(referral_id, contact_errors.get(missing[0], "a contact of its customer team is missing"))
            else:
                created[referral_id] = result.id
                if result.created is False:
                    existed.append(result.id)
        self._add_related(batch, opportunities, created, existed, contact_ids)
        for referral_id, opportunity_id in created.items():
            if referral_id not in batch.failed:
                batch.pairs[referral_id] = opportunity_id
                batch.created.add(referral_id)

    def _add_related(self, batch: _Batch, opportunities: Sequence[NewOpportunity], created: MappingABC[str, str],
                     existed: Sequence[str], contact_ids: MappingABC[str, str]) -> None:
        """Contact roles and solutions rows of the new opportunities, in one round of composite calls.

        For opportunities an interrupted run had already upserted, the roles and rows they have are read
        first: a role is not added twice, and an existing row is not sent again (its parent field is
        create-only, so even an upsert of it would be refused).
        """
        mapping, key_field = self.mapping, self.mapping.solution_rules.key_field
        have: dict[str, set[str]] = {}
        keys: set[str] = set()
        if existed:
            solutions = mapping.solution_rows_mapping.sobject
            parent = mapping.solution_rules.parent_field
            held, rows_held = self._query(
                in_queries("SELECT Id, OpportunityId, ContactId FROM OpportunityContactRole WHERE OpportunityId",
                           existed),
                in_queries(f"SELECT Id, {key_field} FROM {solutions} WHERE {parent}", existed) if key_field else [])
            for row in held:
                have.setdefault(str(row["OpportunityId"]), set()).add(str(row["ContactId"]))
            keys = {str(row[key_field]) for row in rows_held if key_field and row.get(key_field)}
        roles, rows, role_owner, row_owner = [], [], [], []
        for new in opportunities:
            referral_id = new.referral["id"]
            opportunity_id = created.get(referral_id)
            if opportunity_id is None or referral_id in batch.failed:
                continue
            for role in contact_roles(mapping, opportunity_id, new.contacts, contact_ids, have.get(opportunity_id, ())):
                roles.append(role)
                role_owner.append(referral_id)
            if key_field:
                for row in mapping.solution_rows(new.referral, opportunity_id):
                    if str(row.get(key_field)) not in keys:
                        rows.append(row)
                        row_owner.append(referral_id)
        if not roles and not rows:
            return
        role_results, row_results = self.bulk.write([
            Write.create("OpportunityContactRole", roles),
            Write.upsert(mapping.solution_rows_mapping.sobject, key_field or "Id", rows)])
        for owner, result in [*zip(role_owner, role_results, strict=True), *zip(row_owner, row_results, strict=True)]:
            if not result.success:
                batch.fail(owner, _reason(result, "a contact role or solution could not be added"))

    def _first_sync(self, batch: _Batch, report: BackfillReport) -> None:
        """The first merge of every new pair, as the engine's first sync of a pair does (`plan_pair` with no
        base): patch the few referrals it changes, write the opportunities' changes in bulk, keep the base."""
        from shared.partner_center.referrals import PatchOperation

        if not batch.pairs:
            return
        mapping, now = self.mapping, self.clock()
        opportunities: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(batch.pairs.values()))
        queries = [mapping.opportunity_query(ids[start:start + READ_BACK_IDS])
                   for start in range(0, len(ids), READ_BACK_IDS)]
        for rows in self.bulk.query(queries):
            opportunities.update({str(row["Id"]): row for row in rows})
        updates, solutions_new, solutions_old = [], [], []
        owners: tuple[list[str], list[str], list[str]] = ([], [], [])
        for referral_id, opportunity_id in batch.pairs.items():
            referral, opportunity = batch.referrals[referral_id], opportunities.get(opportunity_id)
            if opportunity is None:
                batch.fail(referral_id, f"opportunity {opportunity_id} could not be read back")
                continue
            try:
                plan = plan_pair(mapping, None, referral, opportunity, now=now)
                if plan.on_hold:
                    continue  # the engine syncs nothing while the stage is on hold: linked, no base yet
                etag = referral.get("eTag")
                for patch in plan.patches:
                    etag = self.pc.update_referral(referral_id, [PatchOperation.model_validate(op) for op in patch],
                                                   etag=etag).e_tag
                    report.note("referral_updates")
            except ConnectorError as exc:
                batch.fail(referral_id, str(exc))
                continue
            if plan.sf_update:
                updates.append({"Id": opportunity_id, **plan.sf_update})
                owners[0].append(referral_id)
            solutions_new += plan.solutions_create
            owners[1].extend([referral_id] * len(plan.solutions_create))
            solutions_old += plan.solutions_delete
            owners[2].extend([referral_id] * len(plan.solutions_delete))
            batch.states[referral_id] = SyncState(referral_id=referral_id, opportunity_id=opportunity_id,
                                                  base=plan.merged, referral_etag=etag, synced_at=now)
        results = self.bulk.write([Write.update(mapping.opportunity.sobject, updates),
                                   Write.create(mapping.solution_rows_mapping.sobject, solutions_new),
                                   Write.delete(solutions_old)])
        for owner_list, result_list in zip(owners, results, strict=True):
            for owner, result in zip(owner_list, result_list, strict=True):
                if not result.success:
                    batch.fail(owner, _reason(result, "the opportunity could not be updated"))

    def _link(self, batch: _Batch, report: BackfillReport) -> None:
        """Link every pair whose opportunity is complete (even when its first merge failed: the normal sync
        merges a linked pair without a base the same way); a pair someone linked meanwhile is checked."""
        links = [Link(referral_id=rid, opportunity_id=oid, engagement_id=batch.referrals[rid].get("engagementId"))
                 for rid, oid in batch.pairs.items()]
        for link in self.store.links.create_many(links):
            existing = self.store.links.get_by_referral(link.referral_id)
            if existing is None or existing.opportunity_id != link.opportunity_id:
                batch.pairs.pop(link.referral_id, None)
                batch.created.discard(link.referral_id)
                batch.states.pop(link.referral_id, None)
                batch.failed.pop(link.referral_id, None)
                report.note(Action.AMBIGUOUS.value, f"{link.referral_id}: it or opportunity {link.opportunity_id} "
                                                    "was linked elsewhere during the backfill")

    # Opted-in opportunities ------------------------------------------------------------------------

    def _queue_opted_in(self, report: BackfillReport, dry_run: bool) -> None:
        """Queue every opted-in opportunity without a referral for the normal sync (see the module's why)."""
        own, sobject = self.mapping.own_fields, self.mapping.opportunity.sobject
        for row in self.sf.query(f"SELECT Id FROM {sobject} WHERE {own.opt_in} = true AND {own.referral_id} = null"):
            if row["Id"] in self._dry_links:
                continue  # a real run links it first, writing its Referral Identifier
            if not dry_run:
                self.queues.send(OPPORTUNITY_QUEUE, {"opportunity_id": row["Id"], "source": "backfill"})
            report.note("opted_in", str(row["Id"]))

    # The cursor --------------------------------------------------------------------------------------

    def _save(self, progress: Progress, dry_run: bool) -> None:
        """Save the cursor (If-Match: a second backfill running at the same time fails instead of racing)."""
        if dry_run:
            return
        value = progress.model_dump(mode="json")
        if self._cursor is None:
            self._cursor = self.store.cursors.put(Cursor(name=CURSOR, value=value))
        else:
            self._cursor = self.store.cursors.put(self._cursor.model_copy(update={"value": value,
                                                                                  "updated_at": utcnow()}))


def _example(decision: Decision) -> str:
    text = decision.referral_id
    if decision.opportunity_id:
        text += f" -> {decision.opportunity_id}"
    return f"{text} ({decision.reason})" if decision.reason else text


def _create_example(new: NewOpportunity, reason: str | None) -> str:
    if new.account and new.account.startswith(NEW_ACCOUNT):
        account = "a new account"
    elif new.account:
        account = f"account {new.account}"
    elif new.candidates:
        account = f"no account: {len(new.candidates)} match, a person chooses"
    else:
        account = "no account: the referral names no customer"
    return f"{new.referral['id']} ({account}{'; ' + reason if reason else ''})"


def _reason(result: RecordResult, what: str) -> str:
    error = result.error(what)
    return str(error) if error is not None else what


__all__ = ["BATCH_SIZE", "CURSOR", "KINDS", "PAGE_SIZE", "Backfill", "BackfillReport", "Bulk", "Write", "in_queries"]
