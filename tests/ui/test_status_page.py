"""The status page in a real headless Chromium (Debian's package), against the running connector.

The connector runs for real (local host, both simulators, webhook registered, poll and reconcile firing) with a
function key, as on Azure: the page gets the key from its address only. A few syncs happen for real, older
log lines and dead letters are put in the store. Then: a screenshot (kept as docs/status-page.png with
UPDATE_SCREENSHOT=1), the DOM after the page's script ran, and, over the DevTools protocol, the link filter and
the Replay button, whose re-queued work the processor then syncs.

Run with `make test-ui` (installs Chromium when missing); `make test` leaves this folder out.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.azurite import Azurite
from sandbox.ca import SandboxCA
from sandbox.partner_center import PartnerCenterSim
from sandbox.salesforce import SalesforceSim
from shared.models.records import DeadLetter, SyncLogEntry, SyncOutcome
from shared.settings import APP_ROOT
from shared.store import Store
from tests.fixtures.connector import HOST_JSON, Connector, seller_opportunity, wait_for
from tests.fixtures.host import RunningHost
from tests.ui.chromium import Browser, png_size, require_chromium, run_once

KEY = "ui-test-function-key"
SCREENSHOT = APP_ROOT / "docs" / "status-page.png"
TRAP = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
"""What a person might paste into a deal's notes; the page must show it, never run it."""


@pytest.fixture
def keyed_connector(sandbox_ca: SandboxCA, sf_sim_factory: Callable[..., SalesforceSim],
                    function_host: Callable[..., RunningHost]) -> Iterator[Connector]:
    """The real app on the local host with a function key, its own Azurite, both simulators, the webhook
    registered (with the key) through the app's own route, the poll every second and the reconcile once a
    minute, a few seconds from now: it runs once during the test, before the referral whose event is lost
    (a second run would sync that one before its Replay does)."""
    require_chromium()
    reconcile_second = (int(time.time()) + 6) % 60
    with Azurite() as azurite:
        pc = PartnerCenterSim(sandbox_ca, delivery_delays=(0.3, 0.6, 1.0)).start()
        sf = sf_sim_factory(multi_currency=True, currencies=["USD", "EUR"])
        env = {**pc.settings_env(), **sf.credentials.settings_env(), "AzureWebJobsStorage": azurite.connection_string,
               "COSELL_SF_POLL_SCHEDULE": "* * * * * *", "COSELL_PC_RECONCILE_SCHEDULE": f"{reconcile_second} * * * * *",
               "COSELL_MAPPING_FILE": str(APP_ROOT / "mappings" / "salesforce.json"), "COSELL_LOCAL_FUNCTION_KEY": KEY}
        host = function_host(env=env, host_json=HOST_JSON)
        connector = Connector(pc, sf, host, Store.from_connection_string(azurite.connection_string),
                              storage=azurite.connection_string)
        answer = connector.call("POST", "partnercenter/webhook", headers={"x-functions-key": KEY},
                                json={"url": f"{host.url}/api/partnercenter/events?code={KEY}", "overwrite": True})
        assert answer.status_code in (200, 201), answer.text
        yield connector
        host.stop()
        pc.stop()


def _outcomes(store: Store, record_id: str) -> list[str]:
    return [e.outcome.value for e in store.synclog.iter_recent() if record_id in (e.referral_id, e.opportunity_id)]


def _a_day_of_work(c: Connector) -> dict[str, str]:
    """Real syncs both ways, then older log lines and two dead letters as a busy day leaves them."""
    shared = c.pc.create_incoming({"name": "Fabrikam – Dynamics 365 rollout", "details": {"dealValue": 48000},
                                   "customerProfile": {"name": "Fabrikam Inc"}})["id"]
    opted_in = seller_opportunity(c.sf, name="Contoso – Azure migration 🚀", amount=125000)
    wait_for(lambda: "created" in _outcomes(c.store, shared) and "created" in _outcomes(c.store, opted_in),
             timeout=30, what="both creates")
    c.pc.update_as_microsoft(shared, {"details": {"dealValue": 65000}})
    wait_for(lambda: "updated" in _outcomes(c.store, shared), timeout=30, what="Microsoft's update to sync")
    wait_for(lambda: c.store.status.get("partner-center-reconcile"), timeout=70, what="the reconcile's run")

    wait_for(lambda: c.pc.pending_deliveries() == 0, what="webhook deliveries to settle")
    c.pc.add_webhook_fault("drop")  # this referral's event never arrives...
    lost = c.pc.create_incoming({"name": "Northwind – Copilot pilot", "customerProfile": {"name": "Northwind Traders"},
                                 "details": {"dealValue": 30000}})["id"]
    wait_for(lambda: any(d["status"] == "dropped" for d in c.pc.deliveries), what="the dropped event")
    c.store.dead_letters.put(DeadLetter(  # ...and its syncs kept failing while Partner Center was down
        kind="referral", key=f"referral-{lost}", attempts=5, payload={"referral_id": lost, "source": "reconcile"},
        reason="Partner Center answered 503 Service Unavailable 5 times; the referral was set aside",
        first_failed_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=42)))
    c.store.dead_letters.put(DeadLetter(
        kind="opportunity", key="opportunity-006000000000000GONE", attempts=5,
        payload={"opportunity_id": "006000000000000GONE", "source": "poll"},
        reason="Salesforce refused the update: FIELD_CUSTOM_VALIDATION_EXCEPTION: Close Date cannot be in the past",
        last_failed_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=7)))
    earlier = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    c.store.synclog.append(SyncLogEntry(
        at=earlier, direction="both", outcome=SyncOutcome.CONFLICT, referral_id=shared, duration_ms=356.0,
        changes={"notes": ["Kick-off in May", f"Customer asked: {TRAP}", "partner_center"],
                 "conflicts": [{"key": "closingDate", "partner_center": "2027-03-31", "salesforce": "2027-04-30",
                                "winner": "salesforce"}]}))
    return {"shared": shared, "opted_in": opted_in, "lost": lost}


def test_status_page_renders_filters_and_replays_in_headless_chromium(keyed_connector: Connector,
                                                                      tmp_path: Path) -> None:
    c = keyed_connector
    ids = _a_day_of_work(c)
    url = f"{c.host.url}/api/status?code={KEY}"

    # A screenshot, as a person sees the page (kept for the README when asked).
    shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "status-page.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    run_once(url, f"--screenshot={shot}", "--window-size=1400,1000")
    assert png_size(shot) == (1400, 1000) and shot.stat().st_size > 40_000

    # The DOM after the page's script ran: the key went from the address bar onto the JSON link only.
    dom = run_once(url, "--dump-dom", "--window-size=1400,1000")
    assert f'href="/api/status.json?code={KEY}"' in dom
    assert dom.count(KEY) == 1
    assert "<title>Co-sell connector · status</title>" in dom
    for card in ("salesforce_poll", "partner_center_reconcile", "partner_center_token", "webhook", "salesforce_budget"):
        assert re.search(rf'<article class="card ok" data-health="{card}">', dom), f"{card} is not healthy"
    assert "points here" in dom and "code=***" in dom
    assert f'data-replay-key="referral-{ids["lost"]}"' in dom
    assert "Fabrikam – Dynamics 365 rollout" in dom and "Contoso – Azure migration 🚀" in dom
    assert re.search(r'deal value</span> <span class="val old">48000</span> <span class="arr">→</span> '
                     r'<span class="val new">65000</span>', dom)
    assert "Customer asked: &lt;img src=x onerror=" in dom and "<img" not in dom

    with Browser(url) as page:
        # The trap in the notes stayed text: nothing it holds ran, no element was made of it.
        assert page.evaluate("document.title") == "Co-sell connector · status"
        assert page.evaluate("document.querySelectorAll('img, main script').length") == 0

        # The links filter: every word must match a name or an id.
        page.evaluate("(() => { const box = document.getElementById('link-filter'); box.value = 'contoso 🚀';"
                      " box.dispatchEvent(new Event('input')); })()")
        assert page.evaluate("document.getElementById('link-shown').textContent") == "1"
        assert page.evaluate("[...document.querySelectorAll('#links tbody tr')].filter(r => !r.hidden)"
                             ".map(r => r.cells[0].textContent)") == ["Contoso – Azure migration 🚀"]
        page.evaluate(f"(() => {{ const box = document.getElementById('link-filter'); box.value = '{ids['shared']}';"
                      " box.dispatchEvent(new Event('input')); })()")
        assert page.evaluate("document.getElementById('link-shown').textContent") == "1"

        # Replay of a letter someone removed meanwhile: the row says why, the button stays.
        c.store.dead_letters.delete(c.store.dead_letters.get("opportunity-006000000000000GONE"))
        page.evaluate("document.querySelector('[data-replay-key=\"opportunity-006000000000000GONE\"]').click()")
        error = page.wait_for("document.querySelector('tr[data-key=\"opportunity-006000000000000GONE\"] "
                              ".result.error')?.textContent")
        assert error == "no dead letter 'opportunity-006000000000000GONE'"
        assert page.evaluate("document.querySelector('[data-replay-key=\"opportunity-006000000000000GONE\"]')"
                             ".disabled") is False

        # Replay of the lost referral: re-queued, removed, and the processor syncs it.
        key = f"referral-{ids['lost']}"
        page.evaluate(f"document.querySelector('[data-replay-key=\"{key}\"]').click()")
        result = page.wait_for(f"document.querySelector('tr[data-key=\"{key}\"].done .result.ok')?.textContent")
        assert result.startswith("Re-queued ")
        assert page.evaluate("document.getElementById('toast').textContent") == f"Re-queued {key}."
        assert page.evaluate("document.getElementById('count-dead').textContent") == "1"
        assert c.store.dead_letters.get(key) is None
        wait_for(lambda: "created" in _outcomes(c.store, ids["lost"]), timeout=30, what="the replayed referral to sync")

        page.evaluate("location.reload()")
        time.sleep(0.2)
        page.wait_for("document.readyState === 'complete' && !!document.getElementById('sync-log')")
        assert page.evaluate("document.querySelector('#dead-letters .empty-state').textContent") == (
            "No dead letters: nothing is waiting for a person.")
        assert page.evaluate("document.querySelector('#sync-log tbody tr .outcome').textContent") == "created"
        assert ids["lost"] in page.evaluate("document.querySelector('#sync-log tbody tr .ids').textContent")
