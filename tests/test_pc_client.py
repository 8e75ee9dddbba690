"""The referrals client against the simulator: paging, ETags, the state machine, retries, the rate limit."""

from __future__ import annotations

import time

import pytest
import requests

from sandbox.partner_center import PartnerCenterSim
from shared.errors import Conflict, InvalidInput, NotFound, Throttled, Unavailable
from shared.models import Referral, ReferralStatus, ReferralSubstatus
from shared.partner_center import PartnerCenterClient, PatchOperation, RateLimiter, RetryPolicy, odata_filter
from shared.settings import get_settings

FAST = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_cap=0.05, max_retry_after=5)


class _Waits:
    """Records the transport's sleeps instead of sleeping (the policy is what is under test)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def client(pc_env: dict[str, str], pc_store) -> PartnerCenterClient:  # type: ignore[no-untyped-def]
    return PartnerCenterClient.from_settings(get_settings(), store=pc_store, retry=FAST)


def _fault(sim: PartnerCenterSim, **spec: object) -> None:
    requests.post(sim.url + "/_sandbox/faults", json=spec, timeout=5).raise_for_status()


def _new_referral(name: str = "Contoso - Azure migration") -> Referral:
    return Referral.model_validate({
        "name": name, "externalReferenceId": "0065g00000XyZabAAB", "type": "Shared",
        "customerProfile": {"name": "Contoso Ltd", "address": {"country": "US"}, "team": []},
        "consent": {"consentToShareReferralWithMicrosoftSellers": True, "consentToContact": True,
                    "consentToToShareInfoWithOthers": False},
        "details": {"dealValue": 125000, "currency": "USD", "notes": "40 VMs"},
        "inviteContext": {"assistanceRequestCode": "CustomerTechnicalArchitecture"},
    })


def test_list_follows_next_links_across_pages(pc_sim: PartnerCenterSim, client: PartnerCenterClient) -> None:
    created = [pc_sim.create_incoming({"name": f"Referral {i}"})["id"] for i in range(7)]
    pages = list(client.iter_pages(top=3, orderby="createdDateTime asc"))
    assert [len(p.value) for p in pages] == [3, 3, 1]
    assert all(p.next_link for p in pages[:-1]) and pages[-1].next_link is None
    assert sorted(r.id for p in pages for r in p.value) == sorted(created)
    # A filter keeps working across pages: only the three accepted ones come back, newest first.
    for referral_id in created[:3]:
        pc_sim.update_as_microsoft(referral_id, {"status": "Active", "substatus": "Accepted"})
    active = list(client.list_referrals(filter=odata_filter(status=ReferralStatus.ACTIVE), top=2,
                                        orderby="updatedDateTime desc"))
    assert sorted(r.id for r in active) == sorted(created[:3])
    assert active[0].updated_date_time >= active[-1].updated_date_time


@pytest.mark.parametrize("create_status", [201, 200])
def test_create_get_patch_with_etag_and_412(pc_sim: PartnerCenterSim, client: PartnerCenterClient,
                                            create_status: int) -> None:
    pc_sim.create_status = create_status  # Microsoft's connector definition documents 200, the reference 201
    created = client.create_referral(_new_referral())
    # As in the reference's example: the partner's own referral comes back already accepted, no expiry.
    assert created.id and created.e_tag and created.status is ReferralStatus.ACTIVE
    assert created.substatus is ReferralSubstatus.ACCEPTED and created.expiration_date_time is None
    read = client.get_referral(created.id)
    assert read.e_tag == created.e_tag and read.external_reference_id == "0065g00000XyZabAAB"

    updated = client.update_referral(created.id, [PatchOperation.replace("/details/dealValue", 130000)],
                                     etag=read.e_tag)
    assert updated.details.deal_value == 130000 and updated.e_tag != read.e_tag
    assert updated.updated_date_time > read.updated_date_time  # set by the server
    with pytest.raises(Conflict):
        client.update_referral(created.id, [PatchOperation.replace("/details/dealValue", 1)], etag=read.e_tag)
    assert client.get_referral(created.id).details.deal_value == 130000


def test_state_machine_refusals_are_invalid_input(pc_sim: PartnerCenterSim, client: PartnerCenterClient) -> None:
    referral_id = pc_sim.create_incoming()["id"]
    etag = client.get_referral(referral_id).e_tag
    with pytest.raises(InvalidInput, match="statusReason"):
        client.update_referral(referral_id, [PatchOperation.replace("/status", "Closed"),
                                             PatchOperation.replace("/substatus", "Declined")], etag=etag)
    declined = client.update_referral(referral_id, [PatchOperation.replace("/status", "Closed"),
                                                    PatchOperation.replace("/substatus", "Declined"),
                                                    PatchOperation.replace("/statusReason", "No capacity")], etag=etag)
    assert declined.substatus is ReferralSubstatus.DECLINED and declined.is_closed
    with pytest.raises(InvalidInput, match="cannot move"):
        client.update_referral(referral_id, [PatchOperation.replace("/status", "Active"),
                                             PatchOperation.replace("/substatus", "Accepted")], etag=declined.e_tag)
    with pytest.raises(NotFound):
        client.get_referral("00000000-0000-0000-0000-000000000000")


def test_incoming_referral_expires_after_14_days(pc_sim: PartnerCenterSim, client: PartnerCenterClient) -> None:
    referral_id = pc_sim.create_incoming()["id"]
    pc_sim.advance_clock(13 * 86400)
    assert client.get_referral(referral_id).status is ReferralStatus.NEW
    pc_sim.advance_clock(2 * 86400)
    expired = client.get_referral(referral_id)
    assert (expired.status, expired.substatus) == (ReferralStatus.CLOSED, ReferralSubstatus.EXPIRED)


def test_429_is_retried_after_retry_after(pc_sim: PartnerCenterSim, client: PartnerCenterClient) -> None:
    referral_id = pc_sim.create_incoming()["id"]
    client.get_referral(referral_id)  # token acquired first, so only the API call meets the fault
    _fault(pc_sim, kind="status", status=429, retry_after=1, count=1, path="/v1.0/engagements/referrals")
    started = time.monotonic()
    assert client.get_referral(referral_id).id == referral_id
    assert time.monotonic() - started >= 1.0  # Retry-After honoured for real

    waits = _Waits()
    client.transport._sleep = waits
    _fault(pc_sim, kind="status", status=503, count=2, path="/v1.0/engagements/referrals")
    assert client.get_referral(referral_id).id == referral_id
    assert len(waits.waits) == 2 and all(0 < w <= FAST.backoff_cap for w in waits.waits)

    _fault(pc_sim, kind="status", status=429, retry_after=120, count=1, path="/v1.0/engagements/referrals")
    with pytest.raises(Throttled) as info:  # longer than the policy sleeps through: the caller re-queues
        client.get_referral(referral_id)
    assert info.value.retry_after == 120


def test_connection_reset_is_retried_for_reads_but_a_create_is_never_blindly_retried(
        pc_sim: PartnerCenterSim, client: PartnerCenterClient) -> None:
    client.transport._sleep = _Waits()
    referral_id = pc_sim.create_incoming()["id"]
    _fault(pc_sim, kind="reset", count=1, method="GET", path="/v1.0/engagements/referrals")
    assert client.get_referral(referral_id).id == referral_id

    _fault(pc_sim, kind="status", status=500, count=1, method="POST", path="/v1.0/engagements/referrals")
    with pytest.raises(Unavailable):
        client.create_referral(_new_referral("Never twice"))
    assert [r for r in pc_sim.referrals.values() if r["name"] == "Never twice"] == []
    # A 429 proves the create was not done, so it is retried.
    _fault(pc_sim, kind="status", status=429, retry_after=0, count=1, method="POST", path="/v1.0/engagements/referrals")
    assert client.create_referral(_new_referral("After a 429")).name == "After a 429"
    assert len([r for r in pc_sim.referrals.values() if r["name"] == "After a 429"]) == 1


def test_find_outgoing_by_external_reference(pc_sim: PartnerCenterSim, client: PartnerCenterClient) -> None:
    import datetime as dt

    before = pc_sim.now() - dt.timedelta(minutes=1)
    created = client.create_referral(_new_referral())
    pc_sim.create_incoming()
    found = client.find_outgoing_by_external_reference("0065g00000XyZabAAB", created_since=before)
    assert found is not None and found.id == created.id
    assert client.find_outgoing_by_external_reference("006000000000000AAA", created_since=before) is None


def test_next_link_is_rebased_onto_the_configured_host(client: PartnerCenterClient) -> None:
    url = client.transport.url_for("https://elsewhere.example/v1.0/engagements/referrals?$skiptoken=abc")
    assert url == client.transport.base_url.rsplit("/v1.0", 1)[0] + "/v1.0/engagements/referrals?$skiptoken=abc"


def test_rate_limiter_spaces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        limiter.acquire()
    assert now[0] == pytest.approx(2.0)  # burst of 2, then one every half second
    assert all(s == pytest.approx(0.5) for s in slept)


def test_patch_is_sent_as_application_json(pc_sim: PartnerCenterSim, pc_env: dict[str, str], pc_store) -> None:  # type: ignore[no-untyped-def]
    """Every Microsoft example and Microsoft's own connector send the JSON Patch array as application/json."""
    from shared.partner_center.transport import TimeoutSession

    sent: list[str | None] = []

    class Recording(TimeoutSession):
        def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def,override]
            if method == "PATCH":
                sent.append((kwargs.get("headers") or {}).get("Content-Type"))
            return super().request(method, url, *args, **kwargs)

    client = PartnerCenterClient.from_settings(get_settings(), store=pc_store, retry=FAST, session=Recording())
    referral = pc_sim.create_incoming()
    client.update_referral(referral["id"], [PatchOperation.replace("/details/dealValue", 5)], etag=referral["eTag"])
    assert sent == ["application/json"]


def test_next_link_in_the_references_form_is_resolved_against_the_configured_base() -> None:
    """The reference's nextLink has another scheme and no /engagements: it must land on the configured base."""
    from shared.partner_center.transport import resolve_link

    base = "https://127.0.0.1:8443/v1.0/engagements"
    link = "http://api.partner.microsoft.com/v1.0/referrals?$skiptoken=eyJwIjoyfQ&$top=100"
    assert resolve_link(base, link) == "https://127.0.0.1:8443/v1.0/engagements/referrals?$skiptoken=eyJwIjoyfQ&$top=100"
    same = "https://api.partner.microsoft.com/v1.0/engagements/referrals?$skiptoken=x"
    assert resolve_link(base, same) == "https://127.0.0.1:8443/v1.0/engagements/referrals?$skiptoken=x"


def test_the_simulator_pages_as_the_reference_does(pc_sim: PartnerCenterSim, client: PartnerCenterClient) -> None:
    """Pages of at most 100, nextLink in the reference's form; the client follows it to the end."""
    for _ in range(3):
        pc_sim.create_incoming()
    first = next(client.iter_pages(top=2))
    assert first.next_link is not None and first.next_link.startswith("http://api.partner.microsoft.com/v1.0/referrals?")
    assert sum(len(page.value) for page in client.iter_pages(top=2)) == 3
    with pytest.raises(InvalidInput):
        next(client.iter_pages(top=101))


def test_an_unreadable_outgoing_referral_is_not_taken_for_absent(pc_sim: PartnerCenterSim,
                                                                 client: PartnerCenterClient) -> None:
    """Resolving a create intent: a referral that carries the opportunity's id but cannot be read must stop
    the create (a second POST would duplicate it), not count as "not created yet"."""
    import datetime as dt

    from shared.errors import UnreadableRecord

    created = client.create_referral(_new_referral())
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    assert client.find_outgoing_by_external_reference("0065g00000XyZabAAB", created_since=since).id == created.id
    pc_sim.update_as_microsoft(created.id, {"details": {"requirements": {"industries": [42]}}})
    with pytest.raises(UnreadableRecord, match="details.requirements.industries.0"):
        client.find_outgoing_by_external_reference("0065g00000XyZabAAB", created_since=since)
    with pytest.raises(UnreadableRecord, match=f"referral {created.id}"):
        client.get_referral(created.id)
    assert client.find_outgoing_by_external_reference("0065g00000OtherAAA", created_since=since) is None
