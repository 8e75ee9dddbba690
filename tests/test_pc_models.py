"""The referral and event models: every sample round-trips unchanged; nothing Microsoft sends is lost."""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
from pathlib import Path

import pytest

from shared.models import (
    AssistanceRequestCode,
    Referral,
    ReferralPage,
    ReferralStatus,
    ReferralSubstatus,
    WebhookEvent,
    WebhookEventName,
)


def _load(samples_dir: Path, name: str) -> dict:
    return json.loads((samples_dir / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["referral-incoming-new.json", "referral-outgoing-shared.json"])
def test_referral_samples_round_trip_unchanged(samples_dir: Path, name: str) -> None:
    document = _load(samples_dir, name)
    referral = Referral.model_validate(document)
    assert referral.to_api() == document
    assert json.loads(json.dumps(referral.to_api())) == document  # the JSON text carries the same values
    assert Referral.model_validate(referral.to_api()).to_api() == document


def test_list_page_and_event_samples_round_trip(samples_dir: Path) -> None:
    page_doc = _load(samples_dir, "referrals-list-page.json")
    page = ReferralPage.model_validate(page_doc)
    assert page.to_api() == page_doc
    assert page.next_link and "$skiptoken=" in page.next_link
    assert page.value[0].substatus is ReferralSubstatus.RECEIVED

    event_doc = _load(samples_dir, "webhook-event-referral-updated.json")
    event = WebhookEvent.model_validate(event_doc)
    assert event.to_api() == event_doc
    assert event.event_name is WebhookEventName.REFERRAL_UPDATED
    assert event.referral_id == "5c9a1c6e-0f43-4a5e-9d1b-7f2a7d0c1a11"
    assert event.is_referral_event


def test_known_values_become_enums_and_fields_are_typed(samples_dir: Path) -> None:
    referral = Referral.model_validate(_load(samples_dir, "referral-outgoing-shared.json"))
    assert referral.status is ReferralStatus.ACTIVE
    assert referral.invite_context.assistance_request_code is AssistanceRequestCode.CUSTOMER_TECHNICAL_ARCHITECTURE
    assert referral.details.deal_value == 125000 and isinstance(referral.details.deal_value, int)
    assert referral.updated_date_time == dt.datetime(2026, 11, 21, 16, 40, 55, 902000, tzinfo=dt.timezone.utc)
    assert referral.customer_profile.team[0].contact_preference.locale == "en-US"
    assert referral.customer_profile.team[0].contact_preference.disable_notifications is False
    assert referral.is_shared and not referral.is_closed


def test_the_documented_shapes_are_typed(samples_dir: Path) -> None:
    """Requirements are lists of objects, the inviter is an organization (Microsoft Learn, Referral resources)."""
    referral = Referral.model_validate(_load(samples_dir, "referral-incoming-new.json"))
    assert referral.details.requirements.industries[0].id == "Manufacturing"
    assert referral.invite_context.invited_by.organization_name == "Microsoft"
    assert referral.customer_profile.team[0].contact_preference.locale == "de-DE"
    legacy = Referral.model_validate({"details": {"requirements": {"industries": ["Retail"]}},
                                      "inviteContext": {"invitedBy": {"firstName": "Mia"}}})
    assert legacy.to_api() == {"details": {"requirements": {"industries": ["Retail"]}},
                               "inviteContext": {"invitedBy": {"firstName": "Mia"}}}  # kept verbatim


def test_unknown_enum_values_and_fields_survive_a_read_modify_write(samples_dir: Path) -> None:
    document = _load(samples_dir, "referral-incoming-new.json")
    document["substatus"] = "UnderReview"  # a value Microsoft might add
    document["qualification"] = "PartnerQualified"
    document["details"]["requirements"]["newList"] = [{"x": 1}]
    document["customerProfile"]["address"]["district"] = "Mitte"
    document["customerProfile"]["team"][0]["title"] = "CIO"
    document["brandNewField"] = {"nested": True}
    referral = Referral.model_validate(document)
    assert referral.substatus == "UnderReview" and not isinstance(referral.substatus, ReferralSubstatus)

    referral.details.deal_value = 52000
    referral.status = "Active"  # assignment is validated: becomes the member
    assert referral.status is ReferralStatus.ACTIVE
    expected = copy.deepcopy(document)
    expected["details"]["dealValue"] = 52000
    expected["status"] = "Active"
    assert referral.to_api() == expected


def test_consent_reads_both_spellings_and_writes_the_request_example_one() -> None:
    for spelling in ("consentToToShareInfoWithOthers", "consentToShareInfoWithOthers"):
        referral = Referral.model_validate({"consent": {spelling: True, "consentToContact": False}})
        assert referral.consent.consent_to_share_info_with_others is True
        assert referral.to_api() == {"consent": {"consentToToShareInfoWithOthers": True, "consentToContact": False}}


def test_absent_fields_stay_absent_and_new_values_are_formatted_for_the_api() -> None:
    referral = Referral(name="Contoso", details={"closingDateTime": dt.datetime(2027, 1, 31, 12, 0, 0, 250000)})
    assert referral.to_api() == {"name": "Contoso", "details": {"closingDateTime": "2027-01-31T12:00:00.250Z"}}
    ids_as_object = Referral.model_validate({"customerProfile": {"ids": {}}})
    assert ids_as_object.to_api() == {"customerProfile": {"ids": {}}}


def test_timestamps_keep_their_text_through_copies_and_pickles(samples_dir: Path) -> None:
    document = _load(samples_dir, "referral-outgoing-shared.json")
    referral = Referral.model_validate(document)
    assert referral.model_copy(deep=True).to_api() == document
    assert pickle.loads(pickle.dumps(referral)).to_api() == document


def test_event_with_seven_digit_fraction_and_non_referral_resources() -> None:
    event = WebhookEvent.model_validate({
        "EventName": "test-created",
        "ResourceUri": "https://api.partnercenter.microsoft.com/webhooks/v1/registration/validationEvents/c0bf",
        "ResourceName": "test", "AuditUri": None, "ResourceChangeUtcDate": "2017-11-16T16:19:06.3520276+00:00",
    })
    assert event.is_test and event.referral_id is None and not event.is_referral_event
    assert event.to_api()["ResourceChangeUtcDate"] == "2017-11-16T16:19:06.3520276+00:00"
    other = WebhookEvent.model_validate({"EventName": "subscription-updated",
                                         "ResourceUri": "https://x.example/referrals/abc"})
    assert other.referral_id == "abc" and not other.is_referral_event
