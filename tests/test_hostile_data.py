"""Hostile data through the real sync engine (in this process, both simulators, Azurite): text no seller
should type but some will, referrals with fields the connector has never heard of, and nulls everywhere.

What must hold: nothing crashes; text arrives exactly (only what the field cannot hold is cut, at the
field's own length, so Salesforce never answers STRING_TOO_LONG); a cut value never flows back and
overwrites the longer original; a second sync writes nothing (no loop); unknown and null fields of a
referral survive every write, because the connector patches only the paths it changes; a referral that
cannot become an opportunity fails with a plain reason and leaves nothing half-made.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.errors import InvalidInput
from shared.models.records import SyncOutcome
from tests.fixtures.connector import SyncWorld, seller_opportunity

MIXED = ("Ünïcødé ✓ 🚀👩🏽‍💻 <b>bold</b> <script>alert('x')</script> &amp; \"quoted\" 'single' "
         "\u202eRTL\u202c \u200bzero-width \x07bell \x1bescape tab\tend 中文 العربية ")
"""Every kind of text at once: accents, emoji (astral and joined), HTML, quotes, bidi and control characters."""
NAME_LENGTH, DESCRIPTION_LENGTH, CITY_LENGTH, FIRST_NAME_LENGTH = 120, 32000, 40, 40
"""The simulator's field lengths, as a real org's describe gives them (Opportunity.Name is 120)."""


def _text(length: int, seed: str = MIXED) -> str:
    """`length` characters of `seed` repeated, starting and ending with a visible character."""
    return ("X" + seed * (length // len(seed) + 1))[: length - 1] + "Z"


def _cut(value: str, length: int) -> str:
    """What the mapping's text transform keeps: line endings as \\n, blanks trimmed, cut to the field."""
    return value.replace("\r\n", "\n").strip()[:length].rstrip()


def _writes(world: SyncWorld, opportunity_id: str, referral_id: str) -> tuple[str, str]:
    return world.opportunity(opportunity_id)["SystemModstamp"], world.referral(referral_id)["eTag"]


def test_partner_center_text_of_every_kind_and_32_kb_notes_reach_salesforce_cut_only_where_needed(
        sync_world: SyncWorld) -> None:
    notes = _text(32 * 1024, MIXED + "\r\n")  # 32 KiB: longer than Salesforce's 32,000-character Description
    name = _text(300)  # longer than Opportunity.Name (120)
    referral = sync_world.pc.create_incoming({
        "name": name,
        "customerProfile": {"name": "Ünïcødé <b>Kunde</b> 🚀 GmbH", "address": {"country": "DE", "city": _text(100)},
                            "team": [{"firstName": _text(60), "lastName": "O'Brien-Ürgüp 👩🏽‍💻",
                                      "email": "obrien@kunde.example", "phoneNumber": "+49 (0)30 1234-5678",
                                      "contactPreference": None}]},
        "details": {"notes": notes, "dealValue": 12345.678, "currency": "EUR",
                    "closingDateTime": "2027-06-30T23:59:59.9999999+14:00"}})
    original = copy.deepcopy(sync_world.referral(referral["id"]))

    report = sync_world.engine.sync_referral(referral["id"])

    assert report.outcome is SyncOutcome.CREATED, report
    opportunity = sync_world.opportunity(report.opportunity_id)
    assert opportunity["Name"] == _cut(name, NAME_LENGTH)
    assert opportunity["Description"] == _cut(notes, DESCRIPTION_LENGTH)
    assert opportunity["CloseDate"] == "2027-06-30" and opportunity["Amount"] == 12345.68
    account = sync_world.sf.record("Account", opportunity["AccountId"])
    assert account["Name"] == "Ünïcødé <b>Kunde</b> 🚀 GmbH"
    assert account["BillingCity"] == _cut(_text(100), CITY_LENGTH)
    contact = sync_world.sf.query("SELECT FirstName, LastName FROM Contact WHERE Email = 'obrien@kunde.example'")
    assert [(c["FirstName"], c["LastName"]) for c in contact] == [(_cut(_text(60), FIRST_NAME_LENGTH),
                                                                   "O'Brien-Ürgüp 👩🏽‍💻")]
    # The cut copies never flow back: Partner Center keeps every character Microsoft wrote.
    assert sync_world.referral(referral["id"])["details"]["notes"] == notes
    assert sync_world.referral(referral["id"])["name"] == name
    assert {k: v for k, v in sync_world.referral(referral["id"]).items() if k not in ("eTag", "updatedDateTime")} == \
           {k: v for k, v in original.items() if k not in ("eTag", "updatedDateTime")}
    before = _writes(sync_world, report.opportunity_id, referral["id"])
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.NO_CHANGE
    assert sync_world.engine.sync_opportunity(report.opportunity_id).outcome is SyncOutcome.NO_CHANGE
    assert _writes(sync_world, report.opportunity_id, referral["id"]) == before

    # Microsoft rewrites the notes with other 32 KiB: the opportunity follows, cut at its length again.
    longer = _text(33_000, "🚀 <i>neu</i> Ä\n")
    sync_world.pc.update_as_microsoft(referral["id"], {"details": {"notes": longer}})
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.UPDATED
    assert sync_world.opportunity(report.opportunity_id)["Description"] == _cut(longer, DESCRIPTION_LENGTH)
    assert sync_world.referral(referral["id"])["details"]["notes"] == longer
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.NO_CHANGE


def test_seller_text_of_every_kind_and_a_full_description_reach_partner_center_exactly(sync_world: SyncWorld) -> None:
    name = _cut(_text(NAME_LENGTH), NAME_LENGTH)
    description = _text(DESCRIPTION_LENGTH, MIXED + "\n")
    opportunity_id = seller_opportunity(sync_world.sf, name=name, Description=description)

    report = sync_world.engine.sync_opportunity(opportunity_id)

    assert report.outcome is SyncOutcome.CREATED, report
    referral = sync_world.referral_for(opportunity_id)
    assert referral is not None
    assert referral["name"] == name
    assert referral["details"]["notes"] == description
    edited = _text(DESCRIPTION_LENGTH, "<p>Ü</p>\x00\x1f🚀 ")
    sync_world.sf.update("Opportunity", opportunity_id, {"Description": edited, "Name": "🚀" * NAME_LENGTH})
    assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.UPDATED
    assert sync_world.referral(referral["id"])["details"]["notes"] == edited
    assert sync_world.referral(referral["id"])["name"] == "🚀" * NAME_LENGTH
    before = _writes(sync_world, opportunity_id, referral["id"])
    assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.NO_CHANGE
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.NO_CHANGE
    assert _writes(sync_world, opportunity_id, referral["id"]) == before


UNKNOWN_TOP = {"partnerScore": {"value": 87, "history": [1, None, {"deep": ["x"]}]}, "futureFlag": None,
               "msftInternal": "kept verbatim"}
"""Fields Microsoft may add tomorrow: the connector must carry them through untouched."""


def _nulls_and_unknowns() -> dict[str, Any]:
    """A referral with every optional field null (or empty) and unknown fields at every level."""
    return {
        "name": "Nulls & Unknowns - Azure", "statusReason": None, "qualification": None, "externalReferenceId": None,
        "customerProfile": {"name": "Nullable Ltd", "address": {"addressLine1": None, "addressLine2": None,
                                                                "city": None, "state": None, "postalCode": None,
                                                                "country": None, "region": None,
                                                                "plusCode": "9F4MGC22+22"},
                            "size": None, "team": [], "ids": None, "segment": {"tier": None, "tags": []}},
        "consent": {"consentToShareReferralWithMicrosoftSellers": True, "consentToContact": None,
                    "consentToToShareInfoWithOthers": None, "consentToAiProcessing": None},
        "details": {"notes": None, "dealValue": None, "currency": None, "closingDateTime": None,
                    "requirements": None, "forecastCategory": {"name": "Pipeline", "since": None}},
        "team": None, "inviteContext": None, "target": None, "tags": None, "links": None, **UNKNOWN_TOP,
    }


def test_unknown_fields_and_nulls_everywhere_survive_every_write(sync_world: SyncWorld) -> None:
    referral = sync_world.pc.create_incoming(_nulls_and_unknowns())
    original = copy.deepcopy(sync_world.referral(referral["id"]))

    report = sync_world.engine.sync_referral(referral["id"])
    assert report.outcome is SyncOutcome.CREATED, report
    opportunity_id = report.opportunity_id
    sync_world.sf.update("Opportunity", opportunity_id, {"Amount": 5000, "Description": "Seller's first note"})
    assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.UPDATED
    sync_world.pc.update_as_microsoft(referral["id"], {"partnerScore": {"value": 91}, "details": {"dealValue": 6000}})
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.UPDATED

    after = sync_world.referral(referral["id"])
    assert sync_world.opportunity(opportunity_id)["Amount"] == 6000
    # Exactly what the seller and Microsoft changed differs; every other field, known or not, null or not, is
    # as it was (the date the connector filled in for Salesforce's required CloseDate went back, as mapped).
    expected = copy.deepcopy(original)
    expected["details"].update(dealValue=6000, notes="Seller's first note",
                               currency=after["details"]["currency"], closingDateTime=after["details"]["closingDateTime"])
    expected["partnerScore"]["value"] = 91
    volatile = ("eTag", "updatedDateTime")
    assert {k: v for k, v in after.items() if k not in volatile} == {k: v for k, v in expected.items() if k not in volatile}
    assert after["details"]["currency"] in (None, "USD") and after["details"]["closingDateTime"] is not None
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.NO_CHANGE


def test_a_referral_without_a_name_fails_plainly_and_makes_nothing(sync_world: SyncWorld) -> None:
    """Salesforce requires Opportunity.Name; a referral without one is a plain, person-readable refusal, not a
    crash, and no opportunity or link is left behind (the processor keeps it as a dead letter)."""
    everything_null = {**_nulls_and_unknowns(), "name": None, "customerProfile": {"name": None, "address": None,
                                                                                  "team": None}}
    referral = sync_world.pc.create_incoming(everything_null)

    with pytest.raises(InvalidInput, match="REQUIRED_FIELD_MISSING.*Name"):
        sync_world.engine.sync_referral(referral["id"])

    assert sync_world.sf.query("SELECT Id FROM Opportunity") == []
    assert sync_world.sf.query("SELECT Id FROM Account") == []
    assert sync_world.store.links.get_by_referral(referral["id"]) is None
    assert sync_world.store.state.get(referral["id"]) is None


def test_microsoft_emptying_a_field_salesforce_requires_keeps_the_pair_syncing(sync_world: SyncWorld) -> None:
    """CloseDate cannot be empty in Salesforce. When Microsoft clears the referral's closing date, the rest of
    its edit still arrives, the opportunity keeps its date and Partner Center gets that date back, so the pair
    agrees; before, every sync of the pair failed with REQUIRED_FIELD_MISSING until a person stepped in."""
    referral = sync_world.pc.create_incoming({"details": {"closingDateTime": "2027-05-01T00:00:00Z"}})
    opportunity_id = sync_world.engine.sync_referral(referral["id"]).opportunity_id
    sync_world.pc.update_as_microsoft(referral["id"], {"details": {"closingDateTime": None, "dealValue": 777,
                                                                   "notes": "Cleared the date"}})

    report = sync_world.engine.sync_referral(referral["id"])

    assert report.outcome is SyncOutcome.UPDATED, report
    opportunity = sync_world.opportunity(opportunity_id)
    assert (opportunity["CloseDate"], opportunity["Amount"], opportunity["Description"]) == \
           ("2027-05-01", 777, "Cleared the date")
    assert sync_world.referral(referral["id"])["details"]["closingDateTime"] == "2027-05-01T00:00:00Z"
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.NO_CHANGE


def test_a_referral_closed_with_its_closing_date_emptied_still_closes_the_opportunity(sync_world: SyncWorld) -> None:
    """A closed referral takes no writes back, and Salesforce cannot take the empty date: the opportunity
    closes and keeps its date, and the pair settles (the e2e expiry flow met this when the referral expired
    before the first merge had given it a date)."""
    referral = sync_world.pc.create_incoming()
    opportunity_id = sync_world.engine.sync_referral(referral["id"]).opportunity_id
    close_date = sync_world.opportunity(opportunity_id)["CloseDate"]
    sync_world.pc.update_as_microsoft(referral["id"], {"status": "Closed", "substatus": "Expired",
                                                       "details": {"closingDateTime": None}})

    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.UPDATED

    opportunity = sync_world.opportunity(opportunity_id)
    assert (opportunity["StageName"], opportunity["CloseDate"]) == ("Closed Lost", close_date)
    assert sync_world.referral(referral["id"])["details"]["closingDateTime"] is None  # closed: nothing written back
    assert sync_world.engine.sync_referral(referral["id"]).outcome is SyncOutcome.NO_CHANGE
    assert sync_world.engine.sync_opportunity(opportunity_id).outcome is SyncOutcome.NO_CHANGE
