"""Garbage at the app's other routes, and a seeded fuzz of every route's parsing, through the real app.

The nudge route (`POST /api/salesforce/changes`), the registration routes (`GET/POST/PUT
/api/partnercenter/webhook`, `POST .../webhook/test`) and the health route get bodies no caller should
send: each answer is a 4xx with a one-line `error`, never a 500; nothing is queued and no webhook gets
registered. The fuzz sends random bytes and random JSON (stdlib `random`, fixed seed, a couple of seconds)
to the receiver, signed so the parsing behind the signature check is reached too, and to the nudge route.
"""

from __future__ import annotations

import json
import random
from typing import Any

from tests.fixtures.partner_center import signed_headers
from tests.test_hostile_webhooks import App, app  # noqa: F401 - `app` is the fixture these tests use

NESTED = b"[" * 100_000 + b"]" * 100_000
"""Deeper than any JSON parser's recursion limit."""
ERROR_MAX = 400


def _no_500_and_nothing_queued(app: App) -> None:
    assert all(depth == 0 for depth in app.queue_depths().values()), app.queue_depths()
    assert app.executions("salesforce_opportunity_changes") == []
    assert app.executions("partner_center_referral_changes") == []
    log = app.host.log()
    assert "-> 500" not in log and "Traceback" not in log, log[-3000:]


def _short_error(answer: Any) -> str:
    error = answer.json()["error"]
    assert isinstance(error, str) and 0 < len(error) <= ERROR_MAX and "\n" not in error, error
    return error


def test_nudge_route_refuses_garbage_with_400(app: App) -> None:
    valid_id = "006" + "A" * 15
    bodies: dict[str, bytes] = {
        "empty": b"", "null": b"null", "array": b"[]", "object without ids": b"{}", "not JSON": b"{ids: [006]}",
        "not UTF-8": b"\xff\xfe\x00{", "deeply nested": NESTED, "ids nested deep": b'{"ids": ' + NESTED + b"}",
        "ids a string": json.dumps({"ids": valid_id}).encode(), "ids empty": b'{"ids": []}',
        "ids numbers": b'{"ids": [6, 7]}', "ids objects": b'{"ids": [{"Id": "006000000000001"}]}',
        "ids null": b'{"ids": [null]}', "account id": b'{"ids": ["001000000000001AAA"]}',
        "too short": b'{"ids": ["006123"]}', "SOQL injection": json.dumps({"ids": ["006' OR Name != '"]}).encode(),
        "unicode id": json.dumps({"ids": ["006ÄÖÜ000000000"]}).encode(), "NaN": b'{"ids": NaN}',
        "201 ids": json.dumps({"ids": [f"006{i:015d}" for i in range(201)]}).encode(),
        "1 MB of junk": b"\x00junk" * 200_000,
    }
    answers = {label: app.call("POST", "salesforce/changes", data=body) for label, body in bodies.items()}

    wrong = {label: (a.status_code, a.text[:120]) for label, a in answers.items() if a.status_code != 400}
    assert wrong == {}, wrong
    for answer in answers.values():
        _short_error(answer)
    assert app.call("POST", "salesforce/changes", key=False, data=b'{"ids": []}').status_code == 401
    assert app.call("GET", "salesforce/changes").status_code == 405
    _no_500_and_nothing_queued(app)


def test_registration_routes_refuse_garbage_and_register_nothing(app: App) -> None:
    bodies: dict[str, bytes] = {
        "not JSON": b"{url: https://x}", "not UTF-8": b"\xff\xfe{}", "null": b"null", "array": b"[]",
        "a string": b'"https://cosell.example/hook"', "deeply nested": NESTED,
        "url a number": b'{"url": 5}', "url an object": b'{"url": {"href": "https://x"}}',
        "url http": b'{"url": "http://evil.example/hook"}', "url ftp": b'{"url": "ftp://evil.example/hook"}',
        "url javascript": b'{"url": "javascript:alert(1)"}', "url unparsable": b'{"url": "https://[::1/hook"}',
        "url bad bracket host": b'{"url": "https://[zz]/hook"}',
        "events a string": b'{"events": "referral-created"}', "events numbers": b'{"events": [1, 2]}',
        "events unknown": b'{"url": "https://cosell.example/hook", "events": ["referral-deleted-forever"]}',
    }
    answers = {f"{method} {label}": app.call(method, "partnercenter/webhook", data=body)
               for method in ("POST", "PUT") for label, body in bodies.items()}

    wrong = {label: (a.status_code, a.text[:120]) for label, a in answers.items() if a.status_code not in (400, 404)}
    assert wrong == {}, wrong
    assert {label for label, a in answers.items() if a.status_code == 404} <= {f"PUT {label}" for label in bodies}
    for answer in answers.values():
        _short_error(answer)
    assert app.pc.registration is None  # nothing half-written at Partner Center
    test_event = app.call("POST", "partnercenter/webhook/test", data=NESTED)  # the route takes no body
    assert 400 <= test_event.status_code < 500, test_event.text
    _short_error(test_event)
    assert app.call("DELETE", "partnercenter/webhook").status_code == 405
    assert app.call("GET", "partnercenter/webhook", key=False).status_code == 401
    health = app.call("GET", "health?storage=%00%ff&x=" + "y" * 5000, key=False, data=NESTED)
    assert health.status_code == 200 and health.json()["storage"] == "ok"
    assert app.call("POST", "health", key=False).status_code == 405
    _no_500_and_nothing_queued(app)


# ----------------------------------------------------------------------------------------- the fuzz
EVENT_KEYS = ["EventName", "ResourceUri", "ResourceName", "AuditUri", "ResourceChangeUtcDate", "ids", "url"]
EVENT_NAMES = ["referral-created", "referral-updated", "related-referral-updated", "test-created", "x", ""]
NO_REFERRAL_URIS = ["https://x/referrals/", "https://x/referrals/-a", "https://x/referrals/a/b/c?", "/referrals//",
                    "https://x/engagements/1", "referrals/abc", "https://x/referrals/" + "a" * 200]
"""ResourceUri values that name no referral (the id must be 1-128 URL-safe characters at the end)."""


def _random_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 2**63, 10**400 // 10**399, 1e308, -0.0, rng.randint(-10**9, 10**9)])
    if kind == 3:
        return rng.choice(EVENT_NAMES)
    if kind == 4:
        return rng.choice(NO_REFERRAL_URIS)
    if kind == 5:
        return rng.choice(["2026-13-45T99:99:99Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.9999999Z",
                           "2026-11-21T16:40:56.311Z", "yesterday"])
    alphabet = "abcXYZ09 -_.:%\\\"'{}[]\u00e9\u4e2d\U0001f600\u202e\x00\x1f"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.4:
        return _random_scalar(rng)
    if roll < 0.55:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = rng.sample(EVENT_KEYS, rng.randrange(0, len(EVENT_KEYS) + 1)) + ["k" * rng.randrange(1, 4)]
    return {key: _random_json(rng, depth + 1) for key in keys}


def _random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))


def test_fuzz_never_answers_5xx_and_never_enqueues(app: App) -> None:
    """Seeded: 150 signed and 60 unsigned bodies to the receiver, 60 to the nudge route; about 2 s. A signed
    body is refused as malformed (400) or too large (413), or taken as a test event (202, nothing queued)."""
    rng = random.Random(20261121)
    statuses: dict[str, set[int]] = {"signed": set(), "unsigned": set(), "nudge": set()}
    failures: list[tuple[str, int, bytes]] = []
    for index in range(270):
        raw = _random_bytes(rng) if index % 3 == 0 else json.dumps(_random_json(rng)).encode()
        if index < 150:
            kind, answer = "signed", app.deliver(raw, signed_headers(app.pc.signer, app.pc.cert_url, raw))
        elif index < 210:
            kind, answer = "unsigned", app.deliver(raw, {"Content-Type": "application/json"})
        else:
            kind, answer = "nudge", app.call("POST", "salesforce/changes", data=raw)
        statuses[kind].add(answer.status_code)
        if answer.status_code >= 500:
            failures.append((kind, answer.status_code, raw[:200]))

    assert failures == []
    assert statuses["signed"] <= {202, 400, 413} and 400 in statuses["signed"]  # 202: a well-formed test event
    assert statuses["unsigned"] <= {401, 413} and 401 in statuses["unsigned"]
    assert statuses["nudge"] == {400}
    _no_500_and_nothing_queued(app)


def test_status_routes_take_any_search_and_refuse_garbage_replays(app: App) -> None:
    searches = ["a/b", "a#b", "a?b", "a\\b", "'", "' or RowKey ne '", "\x00\x01", "x" * 5000, "🚀", "%ff", ""]
    answers = {f"{route} q={q[:20]!r}": app.call("GET", route, params={"q": q})
               for route in ("status", "status.json") for q in searches}
    wrong = {label: (a.status_code, a.text[:160]) for label, a in answers.items() if a.status_code != 200}
    assert wrong == {}, wrong
    replays = {label: app.call("POST", "status/replay", data=body, headers={"Content-Type": "application/json"})
               for label, body in {"deeply nested": NESTED, "not JSON": b"{all: true}", "not UTF-8": b"\xff\xfe",
                                   "array": b"[]", "key a number": b'{"key": 5}', "all a string": b'{"all": "yes"}',
                                   "unknown key": b'{"key": "referral-no-such-thing"}'}.items()}
    wrong = {label: (a.status_code, a.text[:160]) for label, a in replays.items() if a.status_code not in (400, 404)}
    assert wrong == {}, wrong
    for answer in replays.values():
        _short_error(answer)
    assert app.call("POST", "status/replay", data=b'{"all": true}').status_code == 415  # not JSON by type
    _no_500_and_nothing_queued(app)


def test_outbound_message_route_refuses_hostile_xml_other_orgs_and_huge_bodies(app: App) -> None:
    from sandbox.sf_outbound import envelope
    from tests.test_sf_outbound import BILLION_LAUGHS, EXTERNAL_ENTITY, WSDL_SHAPED

    org = app.sf.org.org_id

    def message(count: int, *, org_id: str = org, sobject: str = "Opportunity") -> bytes:
        return envelope(org_id=org_id, action_id="04kHs0000000001IAA", base_url=app.sf.url, notifications=[
            (f"04lHs{i:010d}IAQ", sobject, {"Id": f"006Hs{i:010d}IAQ"}) for i in range(count)])

    bodies: dict[str, tuple[bytes, int]] = {
        "billion laughs": (BILLION_LAUGHS, 400), "external entity": (EXTERNAL_ENTITY, 400),
        "not XML": (b"{ids: [006]}", 400), "truncated": (message(1)[:-40], 400), "empty": (b"", 400),
        "101 notifications": (message(101), 400), "an Account": (message(1, sobject="Account"), 400),
        "another org": (message(1, org_id="00DHs0000000999IAA"), 403),
        "the WSDL sample, another org": (WSDL_SHAPED.replace(b"00DHs0000000001IAA", b"00DHs0000000777IAA"), 403),
        "10 MB": (message(1) + b" " * (10 * 1024 * 1024), 413),
    }
    answers = {label: app.call("POST", "salesforce/outbound", data=body, headers={"Content-Type": "text/xml"})
               for label, (body, _) in bodies.items()}

    wrong = {label: (a.status_code, a.text[:160]) for label, a in answers.items() if a.status_code != bodies[label][1]}
    assert wrong == {}, wrong
    for answer in answers.values():
        assert b"<faultstring>" in answer.content and b"<Ack>" not in answer.content
    assert app.call("POST", "salesforce/outbound", key=False, data=message(1)).status_code == 401
    _no_500_and_nothing_queued(app)
