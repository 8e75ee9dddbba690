"""The demo data and the seed's scenarios, played by a seller and by Microsoft against a running sandbox.

`seed()` is what `make run` starts with: two referrals from Microsoft, an opportunity a seller shares with
everything co-selling needs, and one without a Microsoft solution (its Audit field asks for one).

`play()` is the seed's walk-through, each step checked on the other side within a timeout:
a seller ticks "Sync with Partner Center" (the referral appears in Partner Center), Microsoft sends a
referral (the opportunity appears in Salesforce), the seller accepts it by moving the stage (the referral
turns Active/Accepted), Microsoft raises the deal value (the Amount follows), the seller closes it won
(the referral is Closed/Won).

`python -m sandbox.demo` (what `make demo` runs) plays it against the sandbox `make run` keeps running in
another terminal, or starts one for the demo when none is running.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sandbox.actors import Actors, SandboxInfo
from shared.errors import ConnectorError

T = TypeVar("T")
Write = Callable[[str], None]

STEP_TIMEOUT = 45.0
"""Seconds a step may take to show on the other side: outbound message or webhook retries fit easily."""
CLOSE_DATE = "2027-03-31"


class StepFailed(ConnectorError):
    """A demo step was not observed on the other side in time."""

    def __init__(self, number: int, title: str, reason: str) -> None:
        self.number, self.title = number, title
        super().__init__(f"step {number} ({title}) failed: {reason}")


@dataclass
class SellerDeal:
    """What a seller sets up to co-sell: ids of the account, opportunity and contact."""

    account_id: str
    opportunity_id: str
    contact_id: str | None


def seller_deal(actors: Actors, *, name: str, customer: str, amount: float, currency: str = "USD",
                country: str = "United States", city: str = "Seattle", contact: tuple[str, str, str] | None,
                solution: tuple[str, str] | None, opt_in: bool) -> SellerDeal:
    """Create an account, an opportunity, its customer contact (as a contact role) and a Microsoft solution.

    Args:
        contact: (first name, last name, e-mail), or None for no contact role.
        solution: (solution id, solution name), or None for none.
        opt_in: tick "Sync with Partner Center" at once (False: the demo ticks it later, as a seller would).
    """
    account = actors.seller_create("Account", {"Name": customer, "BillingCountry": country, "BillingCity": city})
    opportunity = actors.seller_create("Opportunity", {
        "Name": name, "AccountId": account, "StageName": "Qualification", "CloseDate": CLOSE_DATE, "Amount": amount,
        "CurrencyIsoCode": currency, "How_can_Microsoft_help__c": "CustomerTechnicalArchitecture",
        "Sync_with_Partner_Center__c": opt_in})
    contact_id = None
    if contact:
        first, last, email = contact
        contact_id = actors.seller_create("Contact", {"FirstName": first, "LastName": last, "Email": email,
                                                      "AccountId": account})
        actors.seller_create("OpportunityContactRole", {"OpportunityId": opportunity, "ContactId": contact_id,
                                                        "Role": "Decision Maker"})
    if solution:
        solution_id, solution_name = solution
        actors.seller_create("Microsoft_Solution__c", {"Opportunity__c": opportunity, "Name": solution_name,
                                                       "Solution_Id__c": solution_id, "Solution_Type__c": "Service"})
    return SellerDeal(account, opportunity, contact_id)


def microsoft_referral(actors: Actors, *, name: str, customer: str, deal_value: float, currency: str = "USD",
                       country: str = "US", city: str = "Redmond", contact: tuple[str, str, str],
                       notes: str) -> dict[str, Any]:
    """A Microsoft seller shares a co-sell referral with the partner."""
    first, last, email = contact
    return actors.microsoft_referral({
        "name": name,
        "customerProfile": {"name": customer, "address": {"city": city, "country": country},
                            "team": [{"firstName": first, "lastName": last, "email": email}]},
        "details": {"dealValue": deal_value, "currency": currency, "notes": notes},
        "inviteContext": {"notes": notes, "assistanceRequestCode": "ProofOfConceptOrDemo"},
    })


def seed(actors: Actors, write: Write) -> None:
    """The demo data `make run` starts with; each line says what was created, the sync lines follow."""
    for spec in (
        dict(name="Woodgrove Bank - Azure landing zone", customer="Woodgrove Bank", deal_value=180000,
             contact=("Nora", "Berg", "nora.berg@woodgrove.example"), notes="Board approved the cloud budget."),
        dict(name="Tailspin Toys - Copilot rollout", customer="Tailspin Toys", deal_value=45000, currency="EUR",
             country="DE", city="Berlin", contact=("Jonas", "Weber", "jonas.weber@tailspin.example"),
             notes="Pilot with 200 seats first."),
    ):
        referral = microsoft_referral(actors, **spec)  # type: ignore[arg-type]
        write(f"  Microsoft sent referral \"{referral['name']}\" (Partner Center {referral['id']})")
    shared = seller_deal(actors, name="Northwind Traders - Data platform", customer="Northwind Traders",
                         amount=250000, contact=("Maria", "Anders", "maria.anders@northwind.example"),
                         solution=("a1b2c3d4-0000-4000-8000-000000000001", "Northwind Data Accelerator"),
                         opt_in=True)
    write(f"  A seller shared \"Northwind Traders - Data platform\" with account, contact and solution "
          f"(Salesforce {shared.opportunity_id})")
    waiting = seller_deal(actors, name="Litware - Security assessment", customer="Litware Inc", amount=60000,
                          contact=("Lee", "Park", "lee.park@litware.example"), solution=None, opt_in=True)
    write(f"  A seller shared \"Litware - Security assessment\" without a Microsoft solution: its Audit will ask "
          f"for one (Salesforce {waiting.opportunity_id})")


def _observe(check: Callable[[], T | None], timeout: float) -> tuple[T | None, float]:
    """Poll `check` until it returns something truthy or `timeout` passes; returns it and the seconds taken."""
    started = time.monotonic()
    while True:
        value = check()
        elapsed = time.monotonic() - started
        if value or elapsed > timeout:
            return value, elapsed
        time.sleep(0.25)


def _money(value: Any, currency: Any) -> str:
    return f"{value:,.0f} {currency or ''}".strip() if isinstance(value, (int, float)) else f"{value} {currency or ''}"


class Demo:
    """The five steps of the seed's scenarios; `play()` raises `StepFailed` at the first one not observed."""

    TOTAL = 5

    def __init__(self, actors: Actors, write: Write, *, timeout: float = STEP_TIMEOUT) -> None:
        self.actors, self.write, self.timeout = actors, write, timeout

    def play(self) -> None:
        self.write("Demo: the seed's scenarios, each step checked on the other side")
        opportunity_id = self.seller_shares()
        referral_id, incoming_opportunity = self.microsoft_sends()
        self.seller_accepts(referral_id, incoming_opportunity)
        self.microsoft_updates_value(referral_id, incoming_opportunity)
        self.seller_wins(referral_id, incoming_opportunity)
        self.write(f"Demo complete: {self.TOTAL} of {self.TOTAL} steps observed "
                   f"(opportunity {opportunity_id} shared; referral {referral_id} won)")

    def _step(self, number: int, title: str) -> None:
        self.write(f"[{number}/{self.TOTAL}] {title}")

    def _saw(self, text: str, seconds: float) -> None:
        self.write(f"      → {text}  ({seconds:.1f} s)")

    def _wait(self, number: int, title: str, check: Callable[[], T | None], expected: str,
              actual: Callable[[], str]) -> tuple[T, float]:
        value, seconds = _observe(check, self.timeout)
        if not value:
            raise StepFailed(number, title, f"{expected} was not seen within {self.timeout:.0f} s ({actual()})")
        return value, seconds

    def seller_shares(self) -> str:
        title = "a seller ticks Sync with Partner Center"
        deal = seller_deal(self.actors, name="Contoso - Azure migration", customer="Contoso Ltd", amount=125000,
                           contact=("Ada", "Lopez", "ada.lopez@contoso.example"),
                           solution=("a1b2c3d4-0000-4000-8000-000000000002", "Contoso Migrate Accelerator"),
                           opt_in=False)
        self._step(1, f"A seller ticks \"Sync with Partner Center\" on \"Contoso - Azure migration\" "
                      f"(Salesforce {deal.opportunity_id})")
        self.actors.seller_update("Opportunity", deal.opportunity_id, {"Sync_with_Partner_Center__c": True})

        def shared() -> dict[str, Any] | None:
            return next((r for r in self.actors.referrals() if r.get("externalReferenceId") == deal.opportunity_id),
                        None)

        referral, seconds = self._wait(1, title, shared, "a referral for the opportunity in Partner Center",
                                       lambda: "no referral names it as externalReferenceId")
        details = referral.get("details") or {}
        solutions = len((details.get("requirements") or {}).get("solutions") or [])
        self._saw(f"Partner Center: referral {referral['id']} \"{referral['name']}\" created, {referral['type']}, "
                  f"{referral['status']}/{referral['substatus']}, {_money(details.get('dealValue'), details.get('currency'))}, "
                  f"{solutions} solution(s)", seconds)

        def marked() -> dict[str, Any] | None:
            record = self.actors.record("Opportunity", deal.opportunity_id) or {}
            return record if record.get("Referral_Identifier__c") == referral["id"] and record.get(
                "Partner_Center_Synced__c") else None

        record, seconds = self._wait(1, title, marked, "the referral identifier and the ✔ on the opportunity",
                                     lambda: "the opportunity has no Referral Identifier yet")
        self._saw(f"Salesforce: Referral Identifier {record['Referral_Identifier__c']}, marker "
                  f"{record['Partner_Center_Synced__c']}", seconds)
        return deal.opportunity_id

    def microsoft_sends(self) -> tuple[str, str]:
        title = "Microsoft sends a referral"
        referral = microsoft_referral(self.actors, name="Fabrikam - Dynamics 365 rollout", customer="Fabrikam Inc",
                                      deal_value=40000, contact=("Omar", "Haddad", "omar.haddad@fabrikam.example"),
                                      notes="Customer asked for a partner with Dynamics experience.")
        self._step(2, f"Microsoft sends the referral \"{referral['name']}\" (Partner Center {referral['id']})")

        def created() -> dict[str, Any] | None:
            return next((r for r in self.actors.records("Opportunity")
                         if r.get("Referral_Identifier__c") == referral["id"] and not r.get("IsDeleted")), None)

        opportunity, seconds = self._wait(2, title, created, "an opportunity with its Referral Identifier",
                                          lambda: "no opportunity carries the referral's id")
        account = self.actors.record("Account", opportunity["AccountId"]) if opportunity.get("AccountId") else None
        self._saw(f"Salesforce: opportunity {opportunity['Id']} \"{opportunity['Name']}\" created, stage "
                  f"{opportunity['StageName']}, {_money(opportunity.get('Amount'), opportunity.get('CurrencyIsoCode'))}"
                  f", account {account['Name'] if account else 'none'}", seconds)
        return referral["id"], str(opportunity["Id"])

    def _referral_reaches(self, number: int, title: str, referral_id: str, status: str, substatus: str) -> None:
        def reached() -> dict[str, Any] | None:
            referral = self.actors.referral(referral_id) or {}
            return referral if (referral.get("status"), referral.get("substatus")) == (status, substatus) else None

        def now() -> str:
            referral = self.actors.referral(referral_id) or {}
            return f"it is {referral.get('status')}/{referral.get('substatus')}"

        _, seconds = self._wait(number, title, reached, f"referral {referral_id} {status}/{substatus}", now)
        self._saw(f"Partner Center: referral {referral_id} is {status}/{substatus}", seconds)

    def seller_accepts(self, referral_id: str, opportunity_id: str) -> None:
        title = "the seller accepts by changing the stage"
        self._step(3, "The seller accepts it: stage Prospecting → Qualification")
        self.actors.seller_update("Opportunity", opportunity_id, {"StageName": "Qualification"})
        self._referral_reaches(3, title, referral_id, "Active", "Accepted")

    def microsoft_updates_value(self, referral_id: str, opportunity_id: str) -> None:
        title = "Microsoft updates the deal value"
        self._step(4, "Microsoft updates the deal value to 75,000 USD")
        self.actors.microsoft_update(referral_id, {"details": {"dealValue": 75000}})

        def updated() -> dict[str, Any] | None:
            record = self.actors.record("Opportunity", opportunity_id) or {}
            return record if record.get("Amount") == 75000 else None

        def now() -> str:
            return f"Amount is {(self.actors.record('Opportunity', opportunity_id) or {}).get('Amount')}"

        record, seconds = self._wait(4, title, updated, "Amount 75,000 on the opportunity", now)
        self._saw(f"Salesforce: opportunity {opportunity_id} Amount is "
                  f"{_money(record['Amount'], record.get('CurrencyIsoCode'))}", seconds)

    def seller_wins(self, referral_id: str, opportunity_id: str) -> None:
        title = "the seller closes it won"
        self._step(5, "The seller closes it won: stage → Closed Won")
        self.actors.seller_update("Opportunity", opportunity_id, {"StageName": "Closed Won"})
        self._referral_reaches(5, title, referral_id, "Closed", "Won")


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """`make demo`: play against the running sandbox, or start one for the demo. 0 = every step observed."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="the sandbox's state folder (default .sandbox)")
    parser.add_argument("--timeout", type=float, default=STEP_TIMEOUT, help="seconds each step may take")
    args = parser.parse_args(argv)
    from sandbox.run import DEFAULT_STATE_DIR
    from sandbox.run import main as run_main

    state_dir = args.dir or DEFAULT_STATE_DIR
    info = SandboxInfo.load(state_dir)
    if info is None:
        _print("No sandbox is running: starting one for the demo (or run `make run` in another terminal first).")
        return run_main(["--demo", "--exit-after-demo", "--dir", str(state_dir), "--demo-timeout", str(args.timeout)])
    _print(f"Playing against the sandbox at {info.host_url} (its terminal shows the sync lines)")
    actors = Actors(info)
    try:
        Demo(actors, _print, timeout=args.timeout).play()
    except ConnectorError as exc:
        print(f"sandbox.demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        actors.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
