"""Co-sell engagements that hold several of the partner's referrals: each gets its own opportunity and link.

Partner Center's referral resources: "Multiple referrals can be associated to a single EngagementID". A
second referral of the partner arriving in an engagement whose first referral is already linked used to
fail on the engagement's link row, with a message blaming links that did not exist, and every retry wrote
the opportunity again.
"""

from __future__ import annotations

import pytest

from shared.models.records import Link, SyncOutcome
from shared.store import Store
from tests.fixtures.connector import SyncWorld, seller_opportunity, world_services


def test_the_links_of_one_engagement_are_each_found(azurite: str, table_prefix: str) -> None:
    store = Store.from_connection_string(azurite, prefix=table_prefix)
    store.links.create(Link(referral_id="r-1", opportunity_id="006A", engagement_id="e-1"))
    store.links.create(Link(referral_id="r-2", opportunity_id="006B", engagement_id="e-1"))
    store.links.create(Link(referral_id="r-3", opportunity_id="006C", engagement_id="e-10"))  # a longer id, same start

    assert [link.referral_id for link in store.links.list_by_engagement("e-1")] == ["r-1", "r-2"]
    assert [link.referral_id for link in store.links.list_by_engagement("e-10")] == ["r-3"]
    assert store.links.list_by_engagement("e-2") == []

    store.links.delete(store.links.get_by_referral("r-1"))
    assert [link.referral_id for link in store.links.list_by_engagement("e-1")] == ["r-2"]


def test_a_link_stored_with_one_row_per_engagement_is_still_found_and_deleted(azurite: str,
                                                                             table_prefix: str) -> None:
    from shared.store.tables import pack

    store = Store.from_connection_string(azurite, prefix=table_prefix)
    old = Link(referral_id="r-old", opportunity_id="006O", engagement_id="e-1")
    values = pack(old.model_dump(mode="json"))
    store.links.table.transaction([("create", {"PartitionKey": "link", "RowKey": row, **values})
                                   for row in ("ref-r-old", "opp-006O", "eng-e-1")], what="an older link")
    store.links.create(Link(referral_id="r-new", opportunity_id="006N", engagement_id="e-1"))

    assert [link.referral_id for link in store.links.list_by_engagement("e-1")] == ["r-old", "r-new"]
    store.links.delete(store.links.get_by_referral("r-old"))
    assert [link.referral_id for link in store.links.list_by_engagement("e-1")] == ["r-new"]


class Writes:
    """Wraps a client and records each call of the named (writing) methods."""

    def __init__(self, inner: object, names: set[str]) -> None:
        self._inner, self._names, self.calls = inner, names, []

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self._inner, name)
        if name not in self._names:
            return attribute

        def call(*args: object, **kwargs: object) -> object:
            self.calls.append((name, args[0] if args else None))
            return attribute(*args, **kwargs)  # type: ignore[operator]

        return call


def test_a_second_referral_of_a_linked_engagement_gets_its_own_opportunity_and_link(sync_world: SyncWorld) -> None:
    first = sync_world.pc.create_incoming({"name": "Contoso - Azure"})
    sync_world.engine.sync_referral(first["id"])
    second = sync_world.pc.create_incoming({"name": "Contoso - Dynamics", "engagementId": first["engagementId"]})
    sync_world.engine.sf = Writes(sync_world.engine.sf, {"upsert", "update", "create", "delete"})

    report = sync_world.engine.sync_referral(second["id"])

    assert report.outcome is SyncOutcome.CREATED, report
    links = sync_world.store.links.list_by_engagement(first["engagementId"])
    assert [link.referral_id for link in links] == [first["id"], second["id"]]
    assert len({link.opportunity_id for link in links}) == 2
    assert sync_world.opportunity(report.opportunity_id)["Name"] == "Contoso - Dynamics"
    assert [c for c in sync_world.engine.sf.calls if c == ("upsert", "Opportunity")] == [("upsert", "Opportunity")]
    assert sync_world.engine.sync_referral(second["id"]).outcome is SyncOutcome.NO_CHANGE


def test_a_related_referral_event_syncs_every_partner_referral_of_the_engagement(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync.processor import process_referral

    services = world_services(sync_world, azurite, monkeypatch)
    opportunity_id = seller_opportunity(sync_world.sf)
    sync_world.engine.sync_opportunity(opportunity_id)
    ours = sync_world.referral_for(opportunity_id)
    incoming = sync_world.pc.create_incoming({"name": "Contoso - Dynamics", "engagementId": ours["engagementId"]})
    incoming_opportunity = sync_world.engine.sync_referral(incoming["id"]).opportunity_id
    # Microsoft's own referral in the engagement (the simulator does not make it by itself).
    microsoft = sync_world.pc.create_incoming({"engagementId": ours["engagementId"], "name": "Microsoft side"})
    sync_world.pc.update_as_microsoft(ours["id"], {"details": {"notes": "Microsoft joined"}})
    sync_world.pc.update_as_microsoft(incoming["id"], {"details": {"dealValue": 4321}})

    report = process_referral(services, {"referral_id": microsoft["id"], "event": "related-referral-updated"})

    assert report is not None and report.outcome is SyncOutcome.UPDATED
    assert sync_world.opportunity(opportunity_id)["Description"] == "Microsoft joined"
    assert sync_world.opportunity(incoming_opportunity)["Amount"] == 4321
    assert len(sync_world.sf.query("SELECT Id FROM Opportunity")) == 2  # none made for Microsoft's referral
    logged = {entry.referral_id for entry in sync_world.store.synclog.recent(2)}
    assert logged == {ours["id"], incoming["id"]}


def test_a_related_referral_of_an_unknown_engagement_is_skipped(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync.processor import process_referral

    services = world_services(sync_world, azurite, monkeypatch)
    stranger = sync_world.pc.create_incoming()

    report = process_referral(services, {"referral_id": stranger["id"], "event": "related-referral-created"})

    assert report is not None and report.outcome is SyncOutcome.SKIPPED
    assert sync_world.sf.query("SELECT Id FROM Opportunity") == []


def test_a_link_refused_names_the_link_that_is_really_in_the_way(sync_world: SyncWorld) -> None:
    from shared.errors import ConnectorError

    sync_world.store.links.create(Link(referral_id="r-elsewhere", opportunity_id="006Hs00000000XXIAA"))
    with pytest.raises(ConnectorError) as refused:
        sync_world.engine._link("r-new", "006Hs00000000XXIAA", None)
    assert str(refused.value) == ("opportunity 006Hs00000000XXIAA is already linked to referral r-elsewhere, not to "
                                  "referral r-new; unlink one by hand before syncing them")
