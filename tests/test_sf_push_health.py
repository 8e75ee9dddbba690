"""Push health in storage: a change only the poll delivered, long after its save, warns on the status page.

Runs the real queue processor (`process_opportunity`) and engine against the simulators and Azurite, with
push configured (the simulator's settings carry SALESFORCE_ORG_ID), as the poll's message would reach it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.salesforce.cursor import format_modstamp
from shared.salesforce.outbound import PUSH_DOC
from shared.status.report import collect
from tests.fixtures.connector import SyncWorld, seller_opportunity
from tests.test_sync_guarantees import _services


def _poll_message(opportunity_id: str, saved_ago: dt.timedelta) -> dict[str, Any]:
    saved = dt.datetime.now(dt.timezone.utc) - saved_ago
    return {"opportunity_id": opportunity_id, "source": "salesforce-opportunities", "modstamp": format_modstamp(saved)}


def test_the_poll_delivering_an_old_change_is_recorded_as_missed_by_push(
        sync_world: SyncWorld, azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.sync.processor import process_opportunity

    services = _services(sync_world, azurite, monkeypatch)
    assert services.settings.salesforce_org_id  # push configured
    fresh = seller_opportunity(sync_world.sf, name="Fresh - just saved")
    process_opportunity(services, _poll_message(fresh, dt.timedelta(seconds=3)))
    assert sync_world.store.status.get(PUSH_DOC) is None  # the poll was simply first: no warning

    stale = seller_opportunity(sync_world.sf, name="Stale - push lost it")
    report = process_opportunity(services, _poll_message(stale, dt.timedelta(minutes=5)))
    assert report is not None and report.outcome.value == "created"
    assert sync_world.store.status.get(PUSH_DOC).data["last_missed_opportunity"] == stale

    health = collect(sync_world.store, webhook=lambda: None, push_configured=True)["health"]["salesforce_push"]
    assert health["state"] == "warning" and stale in health["summary"]
    process_opportunity(services, _poll_message(stale, dt.timedelta(minutes=5)))  # nothing left to do now
    assert sync_world.store.status.get(PUSH_DOC).data["missed"] == 1
