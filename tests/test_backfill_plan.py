"""The backfill's decisions, from data alone: which referrals link, which get an opportunity, which wait for a
person; what a batch of creates writes; where a resumed listing starts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.mapping import Mapping
from shared.settings import APP_ROOT
from shared.sync.backfill import (
    MAX_TIES,
    NEW_ACCOUNT,
    Action,
    Decision,
    InFlight,
    Progress,
    contact_roles,
    decide,
    plan_creates,
)
from shared.sync.plan import opportunity_values

NOW = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return Mapping.load(APP_ROOT / "mappings" / "salesforce.json")


def referral(rid: str, *, customer: str | None = "Contoso", country: str = "US", emails: tuple[str, ...] = (),
             external: str | None = None, engagement: str | None = None, invite: str | None = None,
             created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"id": rid, "engagementId": engagement or f"eng-{rid}", "externalReferenceId": external,
            "name": f"Deal {rid}", "status": "New", "substatus": "Received", "createdDateTime": created,
            "customerProfile": {"name": customer, "address": {"country": country},
                                "team": [{"firstName": "Pat", "lastName": "Lee", "email": e} for e in emails]},
            "details": {"dealValue": 100, "currency": "USD", "closingDateTime": "2027-03-01T00:00:00Z",
                        "requirements": {"solutions": []}},
            "inviteContext": {"notes": invite}}


def test_each_referral_gets_one_action_and_guesses_are_left_for_a_person() -> None:
    referrals = [referral("r1"), referral("r2"), referral("r3", external="006A"), referral("r4", external="006B"),
                 referral("r5", external="006C"), referral("r6", external="006D"), referral("r7", external="006D"),
                 referral("r8"), referral("r9", external="006F"), referral("r10"),
                 referral("r11", engagement="eng-r10"), referral("r12")]

    decisions = decide(
        referrals,
        links={"r1": "006L", "r12": "006M"},
        by_referral_field={"r2": "006R2", "r5": "006R5", "r8": "006R8", "r10": "006R10"},
        by_external={"006A": ("006AAA", None), "006B": ("006BBB", "someone-else"), "006C": ("006CCC", None),
                     "006D": ("006DDD", None), "006F": ("006FFF", "r9")},
        opportunity_links={"006R8": "r99"},
        in_flight=InFlight(link=["r12"]))

    assert decisions == [
        Decision("r1", Action.ALREADY_LINKED, "006L"),
        Decision("r2", Action.LINK, "006R2", "Referral Identifier"),
        Decision("r3", Action.LINK, "006AAA", "externalReferenceId"),
        Decision("r4", Action.AMBIGUOUS, "006BBB",
                 "its externalReferenceId names opportunity 006BBB, which carries referral someone-else"),
        Decision("r5", Action.AMBIGUOUS, "006R5", "two opportunities: 006R5 (Referral Identifier) and 006CCC "
                                                  "(externalReferenceId)"),
        Decision("r6", Action.LINK, "006DDD", "externalReferenceId"),
        Decision("r7", Action.AMBIGUOUS, "006DDD", "opportunity 006DDD is already linked to referral r6"),
        Decision("r8", Action.AMBIGUOUS, "006R8", "opportunity 006R8 is already linked to referral r99"),
        Decision("r9", Action.LINK, "006FFF", "externalReferenceId"),
        Decision("r10", Action.LINK, "006R10", "Referral Identifier"),
        Decision("r11", Action.CREATE),  # a second referral of r10's engagement: an opportunity of its own
        Decision("r12", Action.LINK, "006M", "finishing an interrupted run"),
    ]


def test_an_interrupted_create_is_finished_not_taken_for_a_persons_opportunity() -> None:
    referrals = [referral("r1"), referral("r2"), referral("r3")]

    decisions = decide(referrals, links={}, by_referral_field={"r1": "006X", "r2": "006Y"}, by_external={},
                       opportunity_links={}, in_flight=InFlight(create=["r1", "r3"]))

    assert [(d.action, d.opportunity_id) for d in decisions] == [
        (Action.CREATE, "006X"),  # our own upsert from the interrupted batch: finish it
        (Action.LINK, "006Y"),  # an opportunity someone made with the Referral Identifier: link, don't overwrite
        (Action.CREATE, None),
    ]


def test_a_batch_creates_one_account_per_customer_and_one_contact_per_e_mail(mapping: Mapping) -> None:
    existing = [{"Id": "001US", "Name": "Contoso", "BillingCountry": "United States"},
                {"Id": "001T1", "Name": "Twin", "BillingCountry": "Germany"},
                {"Id": "001T2", "Name": "twin", "BillingCountry": "Germany"}]
    referrals = [referral("r1", customer="CONTOSO", emails=("Ada@Contoso.example",)),
                 referral("r2", customer="Contoso", country="DE", emails=("new@contoso.example",)),
                 referral("r3", customer="Contoso", country="DE",
                          emails=("new@contoso.example", "ada@contoso.example")),
                 referral("r4", customer="Twin", country="DE"),
                 referral("r5", customer=None, emails=("solo@example.example",))]

    plan = plan_creates(mapping, referrals, accounts=existing, contacts={"ada@contoso.example": "003ADA"})

    assert [a.ref for a in plan.accounts] == [f"{NEW_ACCOUNT}0"]
    assert plan.accounts[0].values["Name"] == "Contoso" and plan.accounts[0].values["BillingCountry"] == "Germany"
    r1, r2, r3, r4, r5 = plan.opportunities
    assert (r1.account, r2.account, r3.account, r5.account) == ("001US", f"{NEW_ACCOUNT}0", f"{NEW_ACCOUNT}0", None)
    assert r4.account is None and [c["Id"] for c in r4.candidates] == ["001T1", "001T2"]
    assert [(c.key, c.account) for c in plan.contacts] == [("new@contoso.example", f"{NEW_ACCOUNT}0"),
                                                           ("solo@example.example", None)]
    assert plan.contacts[0].values == {"FirstName": "Pat", "LastName": "Lee", "Email": "new@contoso.example"}
    assert r3.contacts == ("new@contoso.example", "ada@contoso.example")
    assert plan.existing_contacts == {"ada@contoso.example": "003ADA"}


def test_new_opportunity_values_carry_the_account_audit_and_referral_identifier(mapping: Mapping) -> None:
    chosen = opportunity_values(mapping, referral("r1", invite="Call the CIO"), account_id="001US", candidates=(),
                                now=NOW)
    undecided = opportunity_values(mapping, referral("r2"), account_id=None, now=NOW,
                                   candidates=[{"Id": "001T1", "Name": "Twin"}, {"Id": "001T2", "Name": "Twin"}])

    assert chosen["AccountId"] == "001US" and chosen["Referral_Identifier__c"] == "r1"
    assert chosen["StageName"] == "Prospecting" and chosen["CloseDate"] == "2027-03-01"
    assert chosen["Partner_Center_Sync_Status__c"] == "Synced" and chosen["Sync_with_Partner_Center__c"] is True
    assert chosen["Audit__c"] == ("2026-11-20 10:00 UTC ✔ Created from Partner Center referral. "
                                  "Microsoft's invitation: Call the CIO")
    assert "AccountId" not in undecided
    assert undecided["Audit__c"] == ("2026-11-20 10:00 UTC ✖ Created from Partner Center referral. Several accounts "
                                     "match the customer, none was chosen: Twin (001T1); Twin (001T2). Set the "
                                     "account by hand.")


def test_contact_roles_are_added_once_per_contact_and_never_twice(mapping: Mapping) -> None:
    ids = {"a@x.example": "003A", "b@x.example": "003B", "alias@x.example": "003A"}

    roles = contact_roles(mapping, "006X", ["a@x.example", "b@x.example", "alias@x.example", "gone@x.example"], ids,
                          existing=["003B"])

    assert roles == [{"OpportunityId": "006X", "ContactId": "003A", "Role": "Decision Maker"}]


def test_the_cursor_resumes_after_the_last_batch_without_losing_ties() -> None:
    first = [referral("a", created="2026-01-01T00:00:00Z"), referral("b", created="2026-01-02T00:00:00.500Z"),
             referral("c", created="2026-01-02T00:00:00.5Z")]
    progress = Progress().after(first)

    assert progress.created == "2026-01-02T00:00:00.5Z" and progress.seen == ["b", "c"]
    assert progress.created_since() == dt.datetime(2026, 1, 2, 0, 0, 0, 500000, tzinfo=dt.timezone.utc)
    # Listed again from that time (filter `ge`): the finished ones are skipped, a tie not yet done is not.
    assert [progress.done(r) for r in (*first, referral("d", created="2026-01-02T00:00:00.500Z"),
                                       referral("e", created="2026-01-03T00:00:00Z"))] == [
        True, True, True, False, False]
    # A batch ending on the same time adds to the ties; a later one starts them over.
    tied = progress.after([referral("d", created="2026-01-02T00:00:00.500Z")])
    assert tied.seen == ["b", "c", "d"]
    assert tied.after([referral("e", created="2026-01-03T00:00:00Z")]).seen == ["e"]
    assert Progress().done(referral("x")) is False
    crowd = [referral(f"t{i}", created="2026-01-04T00:00:00Z") for i in range(MAX_TIES + 1)]
    forgotten = tied.after(crowd)
    assert forgotten.seen == [] and not forgotten.done(crowd[0])  # decided again: found linked, nothing written
    assert InFlight(create=["a", "b"], link=["c"]).without(["b", "c"]) == InFlight(create=["a"], link=[])
