"""The seed's flows end to end: the real function app on the local host, Azurite, both simulators.

Nothing here calls the engine directly: Partner Center delivers signed webhooks to the app's receiver,
Salesforce changes arrive by the app's poll (every second, push dropped) and, for the scenarios that start in
Salesforce (share, edit, accept, decline, win, lose), again by push alone (the simulator's Flows send outbound
messages, the poll never fires). The tests only act as a seller or as Microsoft and watch the other side.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.connector import Connector, seller_opportunity, wait_for

BOTH_DELIVERIES = pytest.mark.parametrize("connector", ["push", "poll"], indirect=True)
"""Salesforce's changes through push alone (poll off), then through the poll alone (push dropped)."""


def _settled(connector: Connector) -> None:
    """Nothing queued and no webhook on its way: a seller's next save can only arrive the way under test
    (push or poll), not along with the echo of the connector's own earlier writes."""
    def quiet() -> bool:
        return connector.queues_idle() and connector.pc.pending_deliveries() == 0

    wait_for(quiet, what="the connector to settle")
    time.sleep(0.5)  # a message taken off the queue just before may still be syncing
    wait_for(quiet, what="the connector to settle")


def _referral_for(connector: Connector, opportunity_id: str) -> dict | None:
    return next((r for r in connector.pc.referrals.values() if r.get("externalReferenceId") == opportunity_id), None)


def test_webhook_registration_points_at_the_app(connector: Connector) -> None:
    answer = connector.call("GET", "partnercenter/webhook")
    assert answer.status_code == 200, answer.text
    registration = answer.json()
    assert "referral-created" in str(registration) and "referral-updated" in str(registration)
    assert connector.pc.registration["WebhookUrl"].startswith(connector.host.url)


@BOTH_DELIVERIES
def test_seller_shares_an_opportunity_then_edits_it(connector: Connector) -> None:
    opportunity_id = seller_opportunity(connector.sf)

    referral = wait_for(lambda: _referral_for(connector, opportunity_id), what="the referral in Partner Center")
    assert referral["type"] == "Shared"
    wait_for(lambda: connector.sf.record("Opportunity", opportunity_id)["Partner_Center_Synced__c"] == "✔",
             what="the ✔ on the opportunity")
    _settled(connector)

    connector.sf.update("Opportunity", opportunity_id, {"Amount": 130000, "Description": "Scope grew"})
    wait_for(lambda: connector.pc.referrals[referral["id"]]["details"]["dealValue"] == 130000,
             what="the new deal value in Partner Center")
    assert connector.pc.referrals[referral["id"]]["details"]["notes"] == "Scope grew"


@BOTH_DELIVERIES
def test_microsoft_referral_is_accepted_updated_and_won_from_salesforce(connector: Connector) -> None:
    referral = connector.pc.create_incoming({"name": "Fabrikam - Dynamics upgrade"})

    link = wait_for(lambda: connector.store.links.get_by_referral(referral["id"]), what="the new opportunity")
    opportunity_id = link.opportunity_id
    assert connector.sf.record("Opportunity", opportunity_id)["StageName"] == "Prospecting"
    _settled(connector)

    connector.sf.update("Opportunity", opportunity_id, {"StageName": "Qualification"})  # the seller accepts
    wait_for(lambda: connector.pc.referrals[referral["id"]]["status"] == "Active", what="the referral accepted")

    connector.pc.update_as_microsoft(referral["id"], {"details": {"dealValue": 75000}})
    wait_for(lambda: connector.sf.record("Opportunity", opportunity_id)["Amount"] == 75000,
             what="Microsoft's deal value in Salesforce")
    _settled(connector)

    connector.sf.update("Opportunity", opportunity_id, {"StageName": "Closed Won"})
    wait_for(lambda: connector.pc.referrals[referral["id"]]["substatus"] == "Won", what="the referral won")


@BOTH_DELIVERIES
def test_seller_declines_one_referral_and_loses_another(connector: Connector) -> None:
    declined = connector.pc.create_incoming({"name": "Tailspin - declined"})
    lost = connector.pc.create_incoming({"name": "Wingtip - lost"})
    links = {r["id"]: wait_for(lambda r=r: connector.store.links.get_by_referral(r["id"]), what="the opportunity")
             for r in (declined, lost)}
    _settled(connector)

    connector.sf.update("Opportunity", links[declined["id"]].opportunity_id,
                        {"StageName": "Closed Lost", "Decline_Reason__c": "Not our market"})
    connector.sf.update("Opportunity", links[lost["id"]].opportunity_id, {"StageName": "Qualification"})
    wait_for(lambda: connector.pc.referrals[lost["id"]]["status"] == "Active", what="the second referral accepted")
    _settled(connector)
    connector.sf.update("Opportunity", links[lost["id"]].opportunity_id,
                        {"StageName": "Closed Lost", "Decline_Reason__c": "Customer chose another partner"})

    wait_for(lambda: connector.pc.referrals[declined["id"]]["substatus"] == "Declined", what="the referral declined")
    wait_for(lambda: connector.pc.referrals[lost["id"]]["substatus"] == "Lost", what="the referral lost")
    assert connector.pc.referrals[declined["id"]]["statusReason"] == "Not our market"


def test_microsoft_expiry_closes_the_opportunity(connector: Connector) -> None:
    referral = connector.pc.create_incoming()
    link = wait_for(lambda: connector.store.links.get_by_referral(referral["id"]), what="the new opportunity")

    connector.pc.expire(referral["id"])

    wait_for(lambda: connector.sf.record("Opportunity", link.opportunity_id)["StageName"] == "Closed Lost",
             what="the expired referral's opportunity closed")


def test_several_referrals_of_one_engagement_each_get_an_opportunity_and_related_events_reach_them(
        connector: Connector) -> None:
    import requests

    def incoming(body: dict) -> dict:  # as Microsoft, through the simulator's own route
        answer = requests.post(f"{connector.pc.url}/_sandbox/referrals", json=body, timeout=10)
        assert answer.status_code == 201, answer.text
        return answer.json()

    first = incoming({"name": "Northwind - Azure"})
    second = incoming({"name": "Northwind - Security", "engagementId": first["engagementId"]})
    assert second["engagementId"] == first["engagementId"]
    links = [wait_for(lambda r=r: connector.store.links.get_by_referral(r["id"]), what=f"{r['name']}'s opportunity")
             for r in (first, second)]
    assert links[0].opportunity_id != links[1].opportunity_id
    assert connector.sf.record("Opportunity", links[1].opportunity_id)["Name"] == "Northwind - Security"

    # Microsoft's own referral joins the engagement and both partner referrals change; their own events are
    # lost, so only the related-referral event can bring the changes over.
    microsoft = connector.pc.create_incoming({"name": "Microsoft side", "engagementId": first["engagementId"]})
    wait_for(lambda: connector.store.links.get_by_referral(microsoft["id"]), what="the third referral's link")
    connector.pc.add_webhook_fault("drop", count=2)
    connector.pc.update_as_microsoft(first["id"], {"details": {"dealValue": 1111}})
    connector.pc.update_as_microsoft(second["id"], {"details": {"dealValue": 2222}})
    connector.pc.emit("related-referral-updated", microsoft["id"])

    wait_for(lambda: [connector.sf.record("Opportunity", link.opportunity_id)["Amount"] for link in links]
             == [1111, 2222], what="both partner referrals' deal values in Salesforce")
    assert list(connector.store.dead_letters.list()) == []
