"""The status routes through the real function_app.py on the local host.

`GET /api/status` and `/api/status.json` need the function key and never show it; a failing webhook lookup is
a line on the page, not a failed page; the replay route puts a dead letter's work back on its queue, removes
the letter, and the processor then syncs the referral for real.
"""

from __future__ import annotations

import uuid

import requests

from shared.models.records import DeadLetter
from shared.store import Store
from tests.fixtures.connector import Connector, wait_for
from tests.fixtures.partner_center import HOST_JSON, HOST_KEY, QUIET_TIMERS
from tests.fixtures.status import HOSTILE, SECRET


def test_status_routes_need_the_key_never_show_it_and_survive_a_missing_partner_center(function_host,  # type: ignore[no-untyped-def]
                                                                                       azurite: str) -> None:
    key = f"dead-{uuid.uuid4().hex[:8]}"
    Store.from_connection_string(azurite).dead_letters.put(DeadLetter(
        kind="webhook-forward", key=key, reason=f"relay answered 500: {HOSTILE}", attempts=5,
        payload={"url": f"https://relay.example/hook?code={SECRET}", "url_shown": "https://relay.example/hook?code=***"}))
    host = function_host(env={**QUIET_TIMERS, "COSELL_LOCAL_FUNCTION_KEY": HOST_KEY}, host_json=HOST_JSON)
    url = f"{host.url}/api/status"

    for route in ("status", "status.json"):
        assert requests.get(f"{host.url}/api/{route}", timeout=30).status_code == 401
    assert requests.post(f"{url}/replay", json={"all": True}, timeout=30).status_code == 401

    page = requests.get(url, params={"code": HOST_KEY}, timeout=30)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html") and "charset=utf-8" in page.headers["Content-Type"]
    policy = page.headers["Content-Security-Policy"]
    nonce = policy.split("script-src 'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in page.text and page.headers["Cache-Control"] == "no-store"
    assert HOST_KEY not in page.text and SECRET not in page.text
    assert f'data-replay-key="{key}"' in page.text and 'data-replay="/api/status/replay"' in page.text
    assert "&lt;script&gt;alert(&quot;pwned&quot;)" in page.text
    # No Partner Center settings here: the webhook card says why, the page still renders.
    assert "could not be read: setting PARTNER_CENTER_" in page.text
    assert page.headers["Content-Security-Policy"] != requests.get(
        url, headers={"x-functions-key": HOST_KEY}, timeout=30).headers["Content-Security-Policy"]  # fresh nonce

    data = requests.get(f"{url}.json", params={"code": HOST_KEY}, timeout=30)
    assert data.status_code == 200 and data.headers["Content-Type"].startswith("application/json")
    report = data.json()
    assert report["health"]["webhook"]["state"] == "error"
    assert next(d for d in report["dead_letters"] if d["key"] == key)["subject"] == "relay to https://relay.example/hook?code=***"
    assert SECRET not in data.text and HOST_KEY not in data.text

    headers = {"x-functions-key": HOST_KEY}
    not_json = requests.post(f"{url}/replay", data="key=x", headers={**headers,
                             "Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert not_json.status_code == 415
    assert requests.post(f"{url}/replay", json={"key": ""}, headers=headers, timeout=30).status_code == 400
    assert requests.post(f"{url}/replay", json=["all"], headers=headers, timeout=30).status_code == 400
    missing = requests.post(f"{url}/replay", json={"key": "no-such-letter"}, headers=headers, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"] == "no dead letter 'no-such-letter'"


def test_replay_route_requeues_the_dead_letter_removes_it_and_the_referral_syncs(connector: Connector) -> None:
    connector.pc.add_webhook_fault("drop", count=2)  # Partner Center's events for these two never arrive
    lost = [connector.pc.create_incoming({"name": f"Replayed deal {n} 🚀"})["id"] for n in (1, 2)]
    for referral_id in lost:
        connector.store.dead_letters.put(DeadLetter(
            kind="referral", key=f"referral-{referral_id}", attempts=5, payload={"referral_id": referral_id},
            reason="Partner Center answered 503 five times: retry later"))

    before = connector.call("GET", "status.json").json()
    assert {d["key"] for d in before["dead_letters"]} == {f"referral-{r}" for r in lost}
    assert before["counts"]["dead_letters"] == 2
    assert before["health"]["webhook"]["state"] == "ok" and before["health"]["webhook"]["points_here"] is True

    answer = connector.call("POST", "status/replay", json={"key": f"referral-{lost[0]}"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"replayed": [{"key": f"referral-{lost[0]}", "kind": "referral"}], "count": 1,
                             "remaining": False}
    assert connector.store.dead_letters.get(f"referral-{lost[0]}") is None
    assert connector.store.dead_letters.get(f"referral-{lost[1]}") is not None

    everything = connector.call("POST", "status/replay", json={"all": True})
    assert everything.status_code == 200 and everything.json()["count"] == 1
    assert list(connector.store.dead_letters.list()) == []

    def created() -> list[dict[str, object]]:
        log = connector.call("GET", "status.json").json()["sync_log"]
        return [e for e in log if e["referral_id"] in lost and e["outcome"] == "created"]

    entries = wait_for(lambda: len(created()) == 2 and created(), what="both replayed referrals to sync")
    assert all(e["opportunity_id"] and e["direction"] == "partner_center_to_salesforce" for e in entries)
    after = connector.call("GET", "status.json").json()
    assert after["counts"]["dead_letters"] == 0 and after["counts"]["links"] == 2
    assert {link["name"] for link in after["links"]} == {"Replayed deal 1 🚀", "Replayed deal 2 🚀"}
    assert after["health"]["partner_center_token"]["state"] == "ok"
    assert after["health"]["salesforce_poll"]["state"] == "ok"
    assert after["health"]["salesforce_budget"]["state"] == "ok"
