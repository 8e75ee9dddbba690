"""The sync engine: read both sides fresh, decide with shared/sync's plain functions, apply, record.

Events are hints, state is truth: whatever woke it (a webhook, a poll, the reconcile, a replay), the engine
reads the referral and the opportunity anew, so duplicated, reordered or lost events are harmless.

Idempotence, step by step:
- Partner Center -> Salesforce creates upsert the opportunity by `Referral_Identifier__c`, solutions rows
  by their key, contacts are matched by e-mail, contact roles checked first; a retry repeats nothing.
- Salesforce -> Partner Center creates write a create intent before the POST and resolve an unfinished
  intent by listing recent outgoing referrals for the opportunity id before any second POST.
- A linked pair is merged against its base; the referral is patched with If-Match and the base written
  with If-Match, so racing processors re-read (`Conflict`) instead of overwriting each other.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping as MappingABC
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from shared.errors import AlreadyExists, Conflict, ConnectorError, NotFound
from shared.mapping import MissingPrerequisites
from shared.models.records import CreateClaim, CreateIntent, IntentStatus, Link, SyncOutcome, SyncState, utcnow
from shared.sync.accounts import AccountChoice, choose_account
from shared.sync.audit import add_line
from shared.sync.plan import (
    ERROR, SYNCED, PairPlan, creation_note, landed_changes, opportunity_values, pending_writes, plan_pair)

if TYPE_CHECKING:
    from shared.mapping import Mapping
    from shared.models.referral import Referral
    from shared.partner_center import PartnerCenterClient
    from shared.runtime import Services
    from shared.salesforce import SalesforceClient
    from shared.store import Store

log = logging.getLogger("shared.sync")

PC_TO_SF = "partner_center_to_salesforce"
SF_TO_PC = "salesforce_to_partner_center"
BOTH = "both"
MAX_CONFLICT_ROUNDS = 4
"""Re-reads after a 412 or a lost base race before the message is retried later (with back-off)."""
INTENT_PATIENCE = dt.timedelta(seconds=30)
"""An unfinished create intent younger than this may still be in flight elsewhere: wait, don't POST."""
INTENT_LOOKBACK = dt.timedelta(minutes=10)
"""How far before an intent's attempt time to list outgoing referrals (clock skew between hosts)."""


@dataclass
class SyncReport:
    """What one sync did; becomes a sync log line."""

    outcome: SyncOutcome
    direction: str
    referral_id: str | None = None
    opportunity_id: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    request_ids: list[str] = field(default_factory=list)


class SyncEngine:
    """Both directions of the sync for one process (clients are cached and thread-safe).

    Args:
        store: the connector's tables.
        partner_center: the referrals client.
        salesforce: the Salesforce client.
        mapping: the loaded mapping.
        dry_run: read and plan, write nothing (`COSELL_DRY_RUN`).
        clock: the time (tests pass a fixed one).
    """

    def __init__(self, *, store: Store, partner_center: PartnerCenterClient, salesforce: SalesforceClient,
                 mapping: Mapping, dry_run: bool = False, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.store, self.pc, self.sf, self.mapping = store, partner_center, salesforce, mapping
        self.dry_run, self.clock = dry_run, clock

    @classmethod
    def from_services(cls, services: Services) -> SyncEngine:
        return cls(store=services.store, partner_center=services.partner_center, salesforce=services.salesforce,
                   mapping=services.mapping, dry_run=services.settings.cosell_dry_run)

    # Entry points ---------------------------------------------------------------------------------

    def sync_referral(self, referral_id: str) -> SyncReport:
        """A referral changed (webhook or reconcile): bring its opportunity up to date, or create it."""
        link = self.store.links.get_by_referral(referral_id)
        state = self.store.state.get(referral_id) if link else None  # the base before the sides: see _sync_linked
        referral = self.pc.get_referral(referral_id)
        read_request = self.pc.last_request_id
        report = self._sync_read_referral(referral, link, state)
        if read_request and read_request not in report.request_ids:
            report.request_ids.insert(0, read_request)  # what Microsoft support asks for
        return report

    def partner_referrals(self, referral_id: str) -> list[str]:
        """The partner's referrals to sync for an event about a related referral of a co-sell engagement.

        The engagement may hold several of the partner's referrals, each with its own opportunity and link:
        all of them are synced (the related referral itself, Microsoft's side, gets no opportunity). Only
        referrals the connector has linked count: one not synced yet is created by its own event or the
        reconcile, never by an event about another referral.

        Returns:
            Referral ids, oldest link first; empty when the engagement holds none the connector syncs.
        """
        link = self.store.links.get_by_referral(referral_id)
        engagement = link.engagement_id if link else self.pc.get_referral(referral_id).engagement_id
        found = [each.referral_id for each in self.store.links.list_by_engagement(engagement)] if engagement else []
        if link is not None and referral_id not in found:
            found.insert(0, referral_id)
        return found

    def _sync_read_referral(self, referral: Referral, link: Link | None, state: SyncState | None) -> SyncReport:
        referral_id = referral.id
        opportunity_id = link.opportunity_id if link else self._known_opportunity(referral)
        opportunity = self._read_opportunity(opportunity_id) if opportunity_id else None
        if opportunity is not None:
            return self._sync_linked(referral, opportunity, link, state)
        if link is not None:
            raise NotFound(f"opportunity {link.opportunity_id}, linked to referral {referral_id}, no longer exists "
                           "in Salesforce: restore it from the recycle bin, then replay")
        if self.dry_run:
            return self._create_opportunity(referral, made=None)
        claim = self._claim_create(referral_id)
        try:
            link = self.store.links.get_by_referral(referral_id)
            if link is not None:  # the run that held the claim finished: sync the pair it made
                state = self.store.state.get(referral_id)
                return self._sync_read_referral(self.pc.get_referral(referral_id), link, state)
            # An earlier attempt that upserted the opportunity and then failed: finish it without writing
            # the opportunity again (a retry never repeats a write that succeeded).
            return self._create_opportunity(referral, made=self._made_from(referral_id))
        finally:
            self.store.create_claims.delete(claim)

    def _claim_create(self, referral_id: str) -> CreateClaim:
        """Claim the creation of a referral's opportunity.

        Raises:
            Conflict: another run holds a claim younger than INTENT_PATIENCE (the queue retries later; an older
                one was left by a crash and is taken over), or claimed it just now.
        """
        now = self.clock()
        held = self.store.create_claims.get(referral_id)
        if held is not None and now - held.claimed_at < INTENT_PATIENCE:
            raise Conflict(f"the opportunity for referral {referral_id} is being created by another run")
        claim = held.model_copy(update={"claimed_at": now}) if held else CreateClaim(referral_id=referral_id,
                                                                                       claimed_at=now)
        claim.etag = held.etag if held else None
        return self.store.create_claims.put(claim)

    def sync_opportunity(self, opportunity_id: str) -> SyncReport:
        """An opportunity changed (poll, nudge): bring its referral up to date, or create it if opted in."""
        link = self.store.links.get_by_opportunity(opportunity_id)
        state = self.store.state.get(link.referral_id) if link else None  # before the sides: see _sync_linked
        opportunity = self._read_opportunity(opportunity_id)
        if opportunity is None:
            return SyncReport(SyncOutcome.SKIPPED, SF_TO_PC, opportunity_id=opportunity_id,
                              message="the opportunity no longer exists in Salesforce")
        if link is not None:
            return self._sync_linked(self.pc.get_referral(link.referral_id), opportunity, link, state)
        referral_id = opportunity.get(self.mapping.own_fields.referral_id)
        if referral_id:
            # Named by a referral yet not linked: made from that referral by a create that has not finished
            # (or died between its writes). The referral's sync finishes it (solutions rows, contacts, link)
            # before the first merge; merging the half-made opportunity here would send its empty solutions
            # list, a field flowing to Partner Center, over the referral's.
            return self.sync_referral(str(referral_id))
        if not opportunity.get(self.mapping.own_fields.opt_in):
            return SyncReport(SyncOutcome.SKIPPED, SF_TO_PC, opportunity_id=opportunity_id,
                              message="not opted in to Partner Center")
        return self._create_referral(opportunity)

    # Linked pairs ---------------------------------------------------------------------------------

    def _sync_linked(self, referral: Referral, opportunity: dict[str, Any], link: Link | None,
                     state: SyncState | None, *, headline: str | None = None,
                     first_base: dict[str, Any] | None = None) -> SyncReport:
        """Merge and apply, re-reading everything when someone else wrote in between.

        The stored state must have been read BEFORE both sides. Why: another processor writes the sides
        first and its state last; a base newer than a side we hold would make that side's old value look
        like a fresh edit, and the merge would send it back over the newer one. Read in this order, a base
        is never newer than the sides, and a state saved meanwhile fails our If-Match (Conflict: re-read).

        Args:
            state: the pair's stored state, read before the referral and the opportunity.
            first_base: the base to merge against when the pair has none stored yet (None: settle every
                difference by policy).
        """
        if link is None:
            link = self._link(referral.id, str(opportunity["Id"]), referral.engagement_id)
        written: dict[str, dict[str, Any]] = {}
        wrote: SyncReport | None = None
        try:
            for _ in range(MAX_CONFLICT_ROUNDS):
                try:
                    report = self._sync_once(referral, opportunity, link, state, headline=headline,
                                             first_base=first_base, written=written)
                    return with_earlier_writes(wrote, report)
                except Conflict as exc:
                    # Writes this sync made before it lost the race may have landed after newer ones (a Salesforce
                    # update stalled inside the call): the re-merge counts them as its own, not as edits.
                    for side, values in getattr(exc, "written", {}).items():
                        written.setdefault(side, {}).update(values)
                    lost: SyncReport | None = getattr(exc, "report", None)
                    if lost is not None:
                        wrote = with_earlier_writes(wrote, lost)
                    state = self.store.state.get(link.referral_id)
                    referral = self.pc.get_referral(link.referral_id)
                    fresh = self._read_opportunity(link.opportunity_id)
                    if fresh is None:
                        raise NotFound(f"opportunity {link.opportunity_id} was deleted during the sync") from None
                    opportunity = fresh
        except Exception as exc:  # noqa: BLE001 - re-raised, with what the earlier rounds wrote
            if wrote is not None:  # the processor logs it before the retry, which finds those writes done
                failed: SyncReport | None = getattr(exc, "report", None)  # what the failed round landed
                exc.report = (  # type: ignore[attr-defined] - read by the processor
                    wrote if failed is None else with_earlier_writes(wrote, failed))
            raise
        gave_up = Conflict(f"referral {link.referral_id} kept changing during the sync; trying again later")
        # The retry will find this sync's writes done and say "no change": the sync log has them from here.
        gave_up.report = wrote  # type: ignore[attr-defined] - read by the processor; None: nothing was written
        raise gave_up

    def _sync_once(self, referral: Referral, opportunity: dict[str, Any], link: Link, state: SyncState | None, *,
                   headline: str | None = None, first_base: dict[str, Any] | None = None,
                   written: dict[str, dict[str, Any]] | None = None) -> SyncReport:
        api = referral.to_api()
        pending = {side: {**(state.pending.get(side, {}) if state else {}), **(written or {}).get(side, {})}
                   for side in ("partner_center", "salesforce")}
        plan = plan_pair(self.mapping, state.base if state else first_base, api, opportunity, now=self.clock(),
                         headline=headline, pending=pending)
        report = SyncReport(SyncOutcome.NO_CHANGE, BOTH, link.referral_id, link.opportunity_id,
                            changes=plan.changes)
        if plan.on_hold:
            report.outcome, report.message = SyncOutcome.SKIPPED, "the opportunity's stage is on hold: not synced"
            return report
        directions = {side for _, _, side in plan.changes.values()}
        report.direction = {frozenset({"partner_center"}): SF_TO_PC,
                            frozenset({"salesforce"}): PC_TO_SF}.get(frozenset(directions), BOTH)
        if plan.refused:
            report.message = f"not sent to Partner Center: {plan.refused}"
        if plan.conflicts:
            report.outcome = SyncOutcome.CONFLICT
            report.changes = {**plan.changes, "conflicts": [vars(c) for c in plan.conflicts]}
        elif plan.writes or plan.refused:
            report.outcome = SyncOutcome.UPDATED
        if self.dry_run:
            report.message = ("dry run, nothing written: " + report.message).rstrip(": ")
            return report
        if not plan.writes and state is not None and state.base == plan.merged and not state.pending:
            if report.outcome is SyncOutcome.UPDATED:
                report.outcome = SyncOutcome.NO_CHANGE  # a refusal the Audit already shows: nothing new
            return report  # nothing changed anywhere: not a single write
        if plan.writes:
            # Announce the writes first (If-Match): a racing sync learns of them, and one that dies midway
            # leaves them for the next sync to recognise as its own (plan.effective_base).
            state = self._save_state(state, link, state.base if state else (first_base or {}), referral.e_tag,
                                     pending=pending_writes(plan))
        etag = referral.e_tag
        updated: Referral | None = None  # the referral as the last patch that landed left it
        for patch in plan.patches:
            try:
                updated = self.pc.update_referral(link.referral_id, [_op(op) for op in patch], etag=etag)
            except Exception as exc:  # noqa: BLE001 - re-raised, with what landed before it
                # An earlier patch landed (an accept before the win): it is ours to report, whatever stopped the
                # next one. After a 412 the re-merge counts it as its own (written) and the report joins its
                # own; after any other failure the processor logs the report before the retry, which finds
                # the accept done and names only the win.
                if updated is not None:
                    landed = landed_changes(plan, self.mapping.pc_values(updated.to_api()))
                    exc.written = {  # type: ignore[attr-defined] - read by _sync_linked
                        "partner_center": {key: after for key, (_, after, _) in landed.items()}}
                    exc.report = replace(report, direction=SF_TO_PC, changes=landed)  # type: ignore[attr-defined]
                raise
            etag = updated.e_tag
            self._note_request(report, self.pc.last_request_id)
        try:
            self._write_opportunity(link.opportunity_id, plan, state)
        except Exception as exc:  # noqa: BLE001 - re-raised, with the patches that landed before it
            # Partner Center has them: the re-merge after a lost race counts them as ours, and the sync log
            # shows them (after any other failure the processor logs them before the retry, which finds
            # them done and names none).
            if plan.patches:
                sent = {"partner_center": pending_writes(plan).get("partner_center", {})}
                exc.written = sent  # type: ignore[attr-defined]
                exc.report = replace(report, direction=SF_TO_PC, changes={  # type: ignore[attr-defined]
                    key: change for key, change in plan.changes.items() if key in sent["partner_center"]})
            raise
        try:
            self._save_state(state, link, plan.merged, etag)
        except Conflict as exc:
            if plan.writes:  # a round that wrote nothing has nothing to report, whoever saved first
                exc.written = pending_writes(plan)  # type: ignore[attr-defined] - read by _sync_linked
                exc.report = report  # type: ignore[attr-defined] - what was written, for the sync log
            raise
        return report

    def _write_opportunity(self, opportunity_id: str, plan: PairPlan, state: SyncState | None) -> None:
        """Write the plan's Salesforce side. A Salesforce update takes no If-Match, so the pair's state stands
        in for it: when another sync saved the state since ours announced its writes, ours was planned from
        reads that may be older than that sync's writes, and writing it would undo them (Conflict: re-read)."""
        if plan.writes and state is not None:  # with writes, the announcement made a state
            current = self.store.state.get(state.referral_id)
            if current is None or current.etag != state.etag:
                raise Conflict(f"opportunity {opportunity_id} was synced by another run meanwhile")
        if plan.sf_update:
            self._check(self.sf.update(self.mapping.opportunity.sobject, [{"Id": opportunity_id, **plan.sf_update}]),
                        f"update opportunity {opportunity_id}")
        if plan.solutions_create:
            self._check(self.sf.create(self.mapping.solution_rows_mapping.sobject, plan.solutions_create),
                        f"add solutions to {opportunity_id}")
        if plan.solutions_delete:
            self._check(self.sf.delete(plan.solutions_delete), f"remove solutions from {opportunity_id}")

    def _save_state(self, state: SyncState | None, link: Link, base: dict[str, Any], etag: str | None, *,
                    pending: dict[str, dict[str, Any]] | None = None) -> SyncState:
        record = (state.model_copy(update={"base": base}) if state else
                  SyncState(referral_id=link.referral_id, opportunity_id=link.opportunity_id, base=base))
        record.etag = state.etag if state else None
        record.referral_etag, record.synced_at = etag, self.clock()
        record.attempts, record.last_error, record.pending = 0, None, pending or {}
        return self.store.state.put(record)  # Conflict: another processor synced meanwhile; the caller re-reads

    # Partner Center -> Salesforce create -------------------------------------------------------------

    def _create_opportunity(self, referral: Referral, *, made: str | None) -> SyncReport:
        """A referral without an opportunity: match or create the account, upsert the opportunity, add
        contacts, contact roles and solutions rows, then link and record the base.

        Args:
            made: the opportunity an earlier attempt already upserted for this referral (its Referral
                Identifier names the referral): the steps after the upsert are finished, the upsert is not
                sent again.
        """
        api = referral.to_api()
        report = SyncReport(SyncOutcome.CREATED, PC_TO_SF, referral_id=referral.id)
        if made is None:
            choice = self._choose_account(api)
            if choice.candidates:
                report.changes["account_candidates"] = choice.candidates
            values = opportunity_values(self.mapping, api, account_id=choice.account_id,
                                        candidates=choice.candidates, now=self.clock())
            report.message = creation_note(api, choice.candidates)
            if self.dry_run:
                report.message = f"dry run, nothing written: would create an opportunity for referral {referral.id}"
                return report
            if choice.create:
                account = self._check(self.sf.create(self.mapping.account.sobject,
                                                     [self.mapping.account_for_create(api)]), "create account")
                values["AccountId"] = account[0].id
            result = self._check(self.sf.upsert(self.mapping.opportunity.sobject, [values],
                                                external_id=self.mapping.own_fields.referral_id),
                                 f"create opportunity for referral {referral.id}")[0]
            opportunity_id, created = str(result.id), result.created is True
        else:
            opportunity_id, created = made, False
            report.message = (f"finished creating opportunity {made} for referral {referral.id} "
                              "(an earlier attempt stopped midway)")
        report.opportunity_id = opportunity_id
        self._add_contacts(api, opportunity_id)
        rows = self.mapping.solution_rows(api, opportunity_id)
        if rows and not created:
            # A retry of a create that got this far: send only the rows still missing. Upserting the others
            # would update them, and a row's parent field (master-detail) is create-only in Salesforce.
            existing = self._read_opportunity(opportunity_id)
            rows = self.mapping.solution_changes(api, existing)[0] if existing is not None else rows
        if rows and self.mapping.solution_rules.key_field:
            self._check(self.sf.upsert(self.mapping.solution_rows_mapping.sobject, rows,
                                       external_id=self.mapping.solution_rules.key_field), "add solutions")
        link = self._link(referral.id, opportunity_id, referral.engagement_id)
        state = self.store.state.get(referral.id)
        opportunity = self._read_opportunity(opportunity_id)
        if opportunity is None:
            raise NotFound(f"opportunity {opportunity_id} vanished right after it was created")
        # The first merge settles what the create could not copy (e.g. a default close date -> Partner Center).
        report.changes.update(self._sync_linked(referral, opportunity, link, state).changes)
        return report

    def _choose_account(self, referral: MappingABC[str, Any]) -> AccountChoice:
        name = (referral.get("customerProfile") or {}).get("name")
        if not name:
            return AccountChoice(create=False)
        name_field = next(f.sf_field for f in self.mapping.account.fields if f.pc_path == "customerProfile.name")
        escaped = str(name).replace("\\", "\\\\").replace("'", "\\'")
        select = ", ".join(dict.fromkeys(["Id", *self.mapping.account.sf_fields]))
        candidates = list(self.sf.query(f"SELECT {select} FROM {self.mapping.account.sobject} "
                                        f"WHERE {name_field} = '{escaped}' LIMIT 20"))
        return choose_account(self.mapping, referral, candidates)

    def _add_contacts(self, referral: MappingABC[str, Any], opportunity_id: str) -> None:
        """Contacts by e-mail (found or created) and a contact role each, none twice."""
        wanted = self.mapping.contacts_for_create(referral)
        match_by = self.mapping.contact_rules.match_by
        keys = [c.get(match_by) for c in wanted if c.get(match_by)]
        if not keys:
            return
        sobject = self.mapping.contacts.sobject
        listed = ", ".join("'" + str(k).replace("\\", "\\\\").replace("'", "\\'") + "'" for k in keys)
        found = {str(r[match_by]).lower(): r["Id"] for r in
                 self.sf.query(f"SELECT Id, {match_by} FROM {sobject} WHERE {match_by} IN ({listed})")}
        account_id = (self._read_opportunity(opportunity_id) or {}).get("AccountId")
        new = [c for c in wanted if c.get(match_by) and str(c[match_by]).lower() not in found]
        if new:
            records = [{**c, **({"AccountId": account_id} if account_id else {})} for c in new]
            for contact, result in zip(new, self._check(self.sf.create(sobject, records), "create contacts")):
                found[str(contact[match_by]).lower()] = result.id
        roles = {r["ContactId"] for r in self.sf.query(
            f"SELECT Id, ContactId FROM OpportunityContactRole WHERE OpportunityId = '{opportunity_id}'")}
        role_records = [{"OpportunityId": opportunity_id, "ContactId": contact_id,
                         **({"Role": self.mapping.contact_rules.role} if self.mapping.contact_rules.role else {})}
                        for contact_id in dict.fromkeys(found[str(k).lower()] for k in keys)
                        if contact_id not in roles]
        if role_records:
            self._check(self.sf.create("OpportunityContactRole", role_records), "add contact roles")

    # Salesforce -> Partner Center create -------------------------------------------------------------

    def _create_referral(self, opportunity: dict[str, Any]) -> SyncReport:
        """An opted-in opportunity without a referral: check what co-selling needs, then create it once."""
        opportunity_id = str(opportunity["Id"])
        report = SyncReport(SyncOutcome.CREATED, SF_TO_PC, opportunity_id=opportunity_id)
        intent = self.store.intents.get(opportunity_id)
        if intent is not None:
            referral = self._resolve_intent(intent)
            if referral is not None:
                return self._finish_create(referral, opportunity, intent, report)
        account_id = opportunity.get("AccountId")
        account = next(iter(self.sf.query(self.mapping.account_query([account_id]))), None) if account_id else None
        contacts = [{k.removeprefix("Contact."): v for k, v in _flatten(role).items() if k.startswith("Contact.")}
                    for role in self.sf.query(self.mapping.contact_roles_query([opportunity_id]))]
        try:
            body = self.mapping.referral_for_create(opportunity, account=account, contacts=contacts)
        except MissingPrerequisites as exc:
            report.outcome, report.message = SyncOutcome.SKIPPED, str(exc)
            if not self.dry_run:
                self._audit(opportunity, str(exc), ok=False)
            return report
        if self.dry_run:
            report.message = f"dry run, nothing written: would create a referral for opportunity {opportunity_id}"
            return report
        from shared.models.referral import Referral

        intent = self.store.intents.put(intent.model_copy(update={"attempted_at": self.clock()}) if intent
                                        else CreateIntent(opportunity_id=opportunity_id, attempted_at=self.clock()))
        referral = self.pc.create_referral(Referral.model_validate(body))
        self._note_request(report, self.pc.last_request_id)
        return self._finish_create(referral, opportunity, intent, report)

    def _resolve_intent(self, intent: CreateIntent) -> Referral | None:
        """The referral an earlier attempt created, or None when it is safe to POST again.

        Raises:
            Conflict: the earlier attempt is recent and may still be in flight: retry later.
        """
        if intent.status is IntentStatus.CREATED and intent.referral_id:
            return self.pc.get_referral(intent.referral_id)
        found = self.pc.find_outgoing_by_external_reference(intent.opportunity_id,
                                                            created_since=intent.attempted_at - INTENT_LOOKBACK)
        if found is None and self.clock() - intent.attempted_at < INTENT_PATIENCE:
            raise Conflict(f"a referral for opportunity {intent.opportunity_id} may still be being created")
        return found

    def _finish_create(self, referral: Referral, opportunity: dict[str, Any], intent: CreateIntent | None,
                       report: SyncReport) -> SyncReport:
        report.referral_id = referral.id
        if intent is not None and intent.status is not IntentStatus.CREATED:
            intent = self.store.intents.put(intent.model_copy(
                update={"status": IntentStatus.CREATED, "referral_id": referral.id}))
        link = self._link(referral.id, str(opportunity["Id"]), referral.engagement_id)
        # The opportunity is the author of a referral it created: what Partner Center holds right after the
        # POST is the base, so what it could not take in the POST (the seller's accepted stage) goes out as a
        # change, while values Partner Center filled in (mapping defaults) come back where the seller left
        # the field empty.
        pc_values, sf_values = self.mapping.pc_values(referral.to_api()), self.mapping.sf_values(opportunity)
        base = {key: None if sf_values.get(key) in (None, "", []) else value for key, value in pc_values.items()}
        synced = self._sync_linked(referral, opportunity, link, self.store.state.get(referral.id),
                                   headline="Shared with Partner Center", first_base=base)
        if intent is not None:
            self.store.intents.delete(intent)
        report.changes, report.request_ids = synced.changes, report.request_ids + synced.request_ids
        report.message = "referral created in Partner Center"
        return report

    # Helpers -----------------------------------------------------------------------------------------

    def _known_opportunity(self, referral: Referral) -> str | None:
        """An opportunity the referral already names (created from Salesforce, or linked by backfill)."""
        from shared.salesforce.polling import is_opportunity_id

        candidate = referral.external_reference_id
        return candidate if is_opportunity_id(candidate) else None

    def _made_from(self, referral_id: str) -> str | None:
        """The opportunity whose Referral Identifier names this referral, if an earlier attempt made one."""
        escaped = referral_id.replace("\\", "\\\\").replace("'", "\\'")
        found = self.sf.query(f"SELECT Id FROM {self.mapping.opportunity.sobject} "
                              f"WHERE {self.mapping.own_fields.referral_id} = '{escaped}' LIMIT 1")
        return next((str(record["Id"]) for record in found), None)

    def _link(self, referral_id: str, opportunity_id: str, engagement_id: str | None) -> Link:
        link = Link(referral_id=referral_id, opportunity_id=opportunity_id, engagement_id=engagement_id)
        try:
            return self.store.links.create(link)
        except AlreadyExists:
            by_referral = self.store.links.get_by_referral(referral_id)
            if by_referral is not None and by_referral.opportunity_id == opportunity_id:
                return by_referral  # a racing run linked the same pair
            if by_referral is not None:
                raise ConnectorError(
                    f"referral {referral_id} is already linked to opportunity {by_referral.opportunity_id}, not to "
                    f"opportunity {opportunity_id}; unlink one by hand before syncing them") from None
            by_opportunity = self.store.links.get_by_opportunity(opportunity_id)
            if by_opportunity is not None:
                raise ConnectorError(
                    f"opportunity {opportunity_id} is already linked to referral {by_opportunity.referral_id}, not "
                    f"to referral {referral_id}; unlink one by hand before syncing them") from None
            raise Conflict(f"the link of referral {referral_id} and opportunity {opportunity_id} was written "
                           "and removed by other runs meanwhile; trying again later") from None

    def _read_opportunity(self, opportunity_id: str) -> dict[str, Any] | None:
        return next(iter(self.sf.query(self.mapping.opportunity_query([opportunity_id]))), None)

    def _audit(self, opportunity: MappingABC[str, Any], message: str, *, ok: bool) -> None:
        """Write one Audit line (and the sync status) unless the opportunity already says exactly that."""
        own = self.mapping.own_fields
        update: dict[str, Any] = {}
        text = add_line(opportunity.get(own.audit), message, ok=ok, now=self.clock())
        if text is not None:
            update[own.audit] = text
        status = SYNCED if ok else ERROR
        if own.sync_status and opportunity.get(own.sync_status) != status:
            update[own.sync_status] = status
        if update:
            self._check(self.sf.update(self.mapping.opportunity.sobject, [{"Id": opportunity["Id"], **update}]),
                        f"audit opportunity {opportunity['Id']}")

    def record_failure(self, opportunity_id: str, reason: str) -> None:
        """Put a failure that made the connector give up into the opportunity's Audit (best effort)."""
        opportunity = self._read_opportunity(opportunity_id)
        if opportunity is not None:
            self._audit(opportunity, f"Sync failed and was set aside: {reason}", ok=False)

    @staticmethod
    def _check(results: list[Any], what: str) -> list[Any]:
        for result in results:
            error = result.error(what)
            if error is not None:
                raise error
        return results

    @staticmethod
    def _note_request(report: SyncReport, request_id: str | None) -> None:
        if request_id:
            report.request_ids.append(request_id)


def _op(op: dict[str, Any]) -> Any:
    from shared.partner_center.referrals import PatchOperation

    return PatchOperation.model_validate(op)


def _flatten(record: MappingABC[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"Contact": {"Email": x}}` -> `{"Contact.Email": x}` (relationship fields of a query row)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def with_earlier_writes(wrote: SyncReport | None, report: SyncReport) -> SyncReport:
    """The report of a sync that lost a race after writing, then re-merged: its writes, and the re-merge's.

    Why: the sync that sent a write is the one to report it, exactly once. Racing syncs that re-read after
    the write find the pair in agreement and rightly say "no change", and so does the writer's re-merge
    that finds its own writes done: the writes' report stands. A re-merge that writes again and loses a
    race again adds its writes to the earlier ones instead of taking their place, or no sync log line names
    the first change Partner Center accepted. A field both wrote to one side (a stage accepted, then won
    after a 412) is named once, from where the sync found it to where it left it.

    Args:
        wrote: what the earlier rounds wrote (the reports lost races carried), None when they wrote nothing.
        report: the next round's report.
    """
    if wrote is None:
        return report
    if report.outcome is SyncOutcome.NO_CHANGE:
        return wrote
    direction = report.direction if report.direction == wrote.direction else BOTH
    changes = {**wrote.changes, **report.changes}
    for key, earlier in wrote.changes.items():
        later = report.changes.get(key)
        if key != "conflicts" and later is not None and later[2] == earlier[2]:
            changes[key] = [earlier[0], later[1], later[2]]  # from where the sync found it
    return replace(report, direction=direction, changes=changes,
                   request_ids=[*wrote.request_ids, *report.request_ids])


def timed(work: Callable[[], SyncReport]) -> tuple[SyncReport, float]:
    """Run a sync and measure it in milliseconds (for the sync log and telemetry)."""
    started = time.monotonic()
    report = work()
    return report, round((time.monotonic() - started) * 1000, 1)


__all__ = ["BOTH", "PC_TO_SF", "SF_TO_PC", "SyncEngine", "SyncReport", "timed", "with_earlier_writes"]
