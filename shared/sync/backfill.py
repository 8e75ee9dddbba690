"""The backfill's decisions (first run on an existing tenant), from data alone.

For each page of referrals the runner (`backfill_runner`) reads what already exists — links, opportunities
carrying the referral's id in the Referral Identifier, opportunities named by the referral's
`externalReferenceId`, accounts with the customers' names, contacts with the team's e-mails — and asks
this module what to do. The answers are the sync engine's own, in bulk: accounts are chosen by
`accounts.choose_account`, new opportunities get the values, Audit line and contact roles that
`SyncEngine._create_opportunity` gives, and the first merge of every new pair is `plan.plan_pair`.

Why "in flight": a run interrupted between its Salesforce writes and its links leaves opportunities that
carry a Referral Identifier but no link. The cursor names the referrals of the batch that was being
written, so the next run finishes those creates (every write is an upsert or checked first) instead of
taking them for opportunities a person made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping as MappingABC, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from shared.mapping import Mapping
from shared.models.apitypes import ApiDateTime
from shared.sync.accounts import choose_account

NEW_ACCOUNT = "new:"
"""Prefix of the stand-in for an account the batch creates (never a Salesforce id)."""
MAX_TIES = 5000
"""Ids kept for one `createdDateTime` (a bulk import may stamp thousands alike): beyond it the cursor forgets
them, and a resumed run decides those again, finding them linked (reads only), instead of outgrowing a
Table entity."""


class Action(str, Enum):
    """What the backfill does with one referral."""

    ALREADY_LINKED = "already_linked"
    LINK = "link"
    CREATE = "create"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class Decision:
    """The action for one referral; `opportunity_id` is the opportunity to link (or to finish creating)."""

    referral_id: str
    action: Action
    opportunity_id: str | None = None
    reason: str = ""


class InFlight(BaseModel):
    """The referrals of a batch whose writes had begun when the cursor was last saved."""

    create: list[str] = Field(default_factory=list)
    link: list[str] = Field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.link)

    def without(self, done: Iterable[str]) -> InFlight:
        finished = set(done)
        return InFlight(create=[i for i in self.create if i not in finished],
                        link=[i for i in self.link if i not in finished])


class Progress(BaseModel):
    """The backfill cursor's value: where the listing resumes, what was in flight, the running totals.

    Referrals are listed oldest first (`createdDateTime asc`); a resumed run lists from `created` again
    and skips the `seen` ids that share that exact time, so ties are neither lost nor done twice.
    """

    created: str | None = None
    seen: list[str] = Field(default_factory=list)
    in_flight: InFlight = Field(default_factory=InFlight)
    totals: dict[str, int] = Field(default_factory=dict)
    referrals_done: bool = False
    finished_at: str | None = None

    def created_since(self) -> dt.datetime | None:
        return _parse_time(self.created)

    def done(self, referral: MappingABC[str, Any]) -> bool:
        """True for a referral an earlier batch finished (listed again because of the `ge` overlap)."""
        mark, created = self.created_since(), _parse_time(referral.get("createdDateTime"))
        if mark is None or created is None:
            return False
        return created < mark or (created == mark and referral.get("id") in self.seen)

    def after(self, referrals: Sequence[MappingABC[str, Any]]) -> Progress:
        """The position after a finished batch (listed in order, so its last referral is the newest)."""
        if not referrals:
            return self.model_copy()
        last = referrals[-1].get("createdDateTime")
        mark = _parse_time(last)
        same = [str(r["id"]) for r in referrals if _parse_time(r.get("createdDateTime")) == mark]
        seen = list(dict.fromkeys((self.seen if mark is not None and mark == self.created_since() else []) + same))
        return self.model_copy(update={"created": last, "seen": seen if len(seen) <= MAX_TIES else []})


def decide(referrals: Sequence[MappingABC[str, Any]], *, links: MappingABC[str, str],
           by_referral_field: MappingABC[str, str], by_external: MappingABC[str, tuple[str, str | None]],
           opportunity_links: MappingABC[str, str], in_flight: InFlight | None = None) -> list[Decision]:
    """What to do with each referral of a batch.

    Args:
        referrals: the batch (API JSON), in listing order.
        links: referral id -> the opportunity it is linked to, for the batch's linked referrals.
        by_referral_field: referral id -> the opportunity whose Referral Identifier holds it.
        by_external: `externalReferenceId` -> (the opportunity's Id, its Referral Identifier or None), for
            every referral whose `externalReferenceId` names an existing opportunity.
        opportunity_links: opportunity id -> the referral it is linked to, for the candidate opportunities.
        in_flight: the referrals an interrupted run had begun to write.

    An opportunity two referrals claim, or one referral with two different opportunities, is left for a
    person (AMBIGUOUS): linking either would be a guess, and a wrong link syncs the wrong deal. Several
    referrals of one co-sell engagement are not ambiguous: each gets its own opportunity and link, as in
    the sync.
    """
    in_flight = in_flight or InFlight()
    creating, finishing = set(in_flight.create), set(in_flight.create) | set(in_flight.link)
    claimed: dict[str, str] = {}
    decisions: list[Decision] = []
    for referral in referrals:
        referral_id = str(referral["id"])
        linked = links.get(referral_id)
        if linked:
            claimed[linked] = referral_id
            if referral_id in finishing:
                decisions.append(Decision(referral_id, Action.LINK, linked, "finishing an interrupted run"))
            else:
                decisions.append(Decision(referral_id, Action.ALREADY_LINKED, linked))
            continue
        own = by_referral_field.get(referral_id)
        named, carried = by_external.get(str(referral.get("externalReferenceId")), (None, None))
        if named and carried not in (None, "", referral_id):
            decisions.append(Decision(referral_id, Action.AMBIGUOUS, named,
                                      f"its externalReferenceId names opportunity {named}, which carries "
                                      f"referral {carried}"))
            continue
        if own and named and own != named:
            decisions.append(Decision(referral_id, Action.AMBIGUOUS, own,
                                      f"two opportunities: {own} (Referral Identifier) and {named} "
                                      "(externalReferenceId)"))
            continue
        opportunity_id = own or named
        if opportunity_id is None:
            decisions.append(Decision(referral_id, Action.CREATE))
            continue
        other = opportunity_links.get(opportunity_id) or claimed.get(opportunity_id)
        if other and other != referral_id:
            decisions.append(Decision(referral_id, Action.AMBIGUOUS, opportunity_id,
                                      f"opportunity {opportunity_id} is already linked to referral {other}"))
            continue
        claimed[opportunity_id] = referral_id
        if referral_id in creating and opportunity_id == own:
            decisions.append(Decision(referral_id, Action.CREATE, opportunity_id, "finishing an interrupted create"))
        else:
            decisions.append(Decision(referral_id, Action.LINK, opportunity_id,
                                      "Referral Identifier" if opportunity_id == own else "externalReferenceId"))
    return decisions


@dataclass(frozen=True)
class NewAccount:
    """An account the batch creates; `ref` stands for its Id until then."""

    ref: str
    values: dict[str, Any]


@dataclass(frozen=True)
class NewContact:
    """A contact the batch creates, once per match key (e-mail) however many referrals name it."""

    key: str
    values: dict[str, Any]
    account: str | None
    """The account it belongs to: an Id, a `NewAccount.ref`, or None."""


@dataclass(frozen=True)
class NewOpportunity:
    """One referral's new opportunity, before the accounts exist."""

    referral: MappingABC[str, Any]
    account: str | None
    """An account Id, a `NewAccount.ref`, or None (no customer name, or several candidates)."""
    candidates: tuple[dict[str, Any], ...] = ()
    contacts: tuple[str, ...] = ()
    """Match keys of its customer team: one contact role each."""


@dataclass
class CreatePlan:
    """Every Salesforce record a batch of creates needs, in the order they must be written."""

    accounts: list[NewAccount] = field(default_factory=list)
    contacts: list[NewContact] = field(default_factory=list)
    opportunities: list[NewOpportunity] = field(default_factory=list)
    existing_contacts: dict[str, str] = field(default_factory=dict)
    """Match key -> Id of the contacts found, which the opportunities reuse."""


def customer_name(referral: MappingABC[str, Any]) -> str | None:
    name = (referral.get("customerProfile") or {}).get("name")
    return str(name) if name else None


def account_name_field(mapping: Mapping) -> str:
    """The Account field the customer's name is matched against (as the engine's account query does)."""
    return next(f.sf_field for f in mapping.account.fields if f.pc_path == "customerProfile.name")


def contact_key(mapping: Mapping, contact: MappingABC[str, Any]) -> str | None:
    value = contact.get(mapping.contact_rules.match_by)
    return str(value).lower() if value else None


def plan_creates(mapping: Mapping, referrals: Sequence[MappingABC[str, Any]], *,
                 accounts: Sequence[MappingABC[str, Any]], contacts: MappingABC[str, str]) -> CreatePlan:
    """Accounts, contacts and opportunities for referrals that have no opportunity yet.

    Each referral is decided as if the engine created them one after the other: an account the batch
    creates is a candidate for the referrals after it (one new account per customer, not one per referral),
    and a contact is created once per e-mail.

    Args:
        mapping: the loaded mapping.
        referrals: the referrals to create opportunities for (API JSON).
        accounts: existing accounts whose name equals any of the customers' (read with the mapped fields).
        contacts: match key (lower-case e-mail) -> the Id of an existing contact.
    """
    name_field = account_name_field(mapping)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for account in accounts:
        by_name.setdefault(str(account.get(name_field) or "").lower(), []).append(dict(account))
    known: dict[str, str | None] = dict(contacts)
    plan = CreatePlan(existing_contacts=dict(contacts))
    for referral in referrals:
        name = customer_name(referral)
        account: str | None = None
        candidates: tuple[dict[str, Any], ...] = ()
        if name:
            choice = choose_account(mapping, referral, by_name.get(name.lower(), []))
            if choice.create:
                new = NewAccount(f"{NEW_ACCOUNT}{len(plan.accounts)}", mapping.account_for_create(referral))
                plan.accounts.append(new)
                by_name.setdefault(name.lower(), []).append({**new.values, "Id": new.ref})
                account = new.ref
            else:
                account, candidates = choice.account_id, tuple(choice.candidates)
        keys = []
        for contact in mapping.contacts_for_create(referral):
            key = contact_key(mapping, contact)
            if key is None:
                continue
            keys.append(key)
            if key not in known:
                known[key] = None
                plan.contacts.append(NewContact(key, contact, account))
        plan.opportunities.append(NewOpportunity(referral, account, candidates, tuple(dict.fromkeys(keys))))
    return plan


def contact_roles(mapping: Mapping, opportunity_id: str, keys: Sequence[str], contact_ids: MappingABC[str, str],
                  existing: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The contact roles an opportunity still lacks: one per contact of its customer team.

    Args:
        keys: the match keys of its team (`NewOpportunity.contacts`).
        contact_ids: match key -> Contact Id (found or created).
        existing: Contact Ids that already have a role on it.
    """
    have = set(existing)
    role = {"Role": mapping.contact_rules.role} if mapping.contact_rules.role else {}
    wanted = dict.fromkeys(contact_ids[k] for k in keys if k in contact_ids)
    return [{"OpportunityId": opportunity_id, "ContactId": contact_id, **role}
            for contact_id in wanted if contact_id not in have]


def _parse_time(value: Any) -> dt.datetime | None:
    """A referral's time stamp as a datetime (None when absent or unreadable: such a referral is never skipped)."""
    if isinstance(value, dt.datetime):
        return ApiDateTime.from_datetime(value)
    try:
        return ApiDateTime.parse(str(value)) if value else None
    except ValueError:
        return None


__all__ = ["MAX_TIES", "NEW_ACCOUNT", "Action", "CreatePlan", "Decision", "InFlight", "NewAccount", "NewContact",
           "NewOpportunity", "Progress", "account_name_field", "contact_key", "contact_roles", "customer_name",
           "decide", "plan_creates"]
