"""The poll cursor as plain functions, the nudge body, and a simulated race of late commits against polls."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from shared.errors import InvalidInput
from shared.salesforce.cursor import (
    PollCursor,
    Row,
    advance,
    format_modstamp,
    fresh,
    parse_modstamp,
    window_start,
)
from shared.salesforce.polling import is_opportunity_id, message, parse_nudge

T0 = dt.datetime(2026, 11, 26, 9, 0, 0, tzinfo=dt.timezone.utc)
OVERLAP = dt.timedelta(minutes=5)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_modstamps_parse_salesforce_form_and_format_as_soql_literals() -> None:
    stamp = parse_modstamp("2026-11-26T05:48:28.593+0000")
    assert stamp == dt.datetime(2026, 11, 26, 5, 48, 28, 593000, tzinfo=dt.timezone.utc)
    assert format_modstamp(stamp) == "2026-11-26T05:48:28.593Z"
    assert format_modstamp(parse_modstamp("2026-11-26T06:48:28+01:00")) == "2026-11-26T05:48:28.000Z"
    assert Row.of({"Id": "006A", "SystemModstamp": "2026-11-26T05:48:28.593+0000"}) == Row("006A", stamp)


def test_a_new_cursor_reads_everything_then_from_the_newest_minus_the_overlap() -> None:
    cursor = PollCursor()
    assert window_start(cursor, OVERLAP) is None
    cursor = advance(cursor, [Row("006A", at(10)), Row("006B", at(20))], OVERLAP)
    assert (cursor.modstamp, cursor.last_id) == (at(20), "006B")
    assert window_start(cursor, OVERLAP) == at(20) - OVERLAP


def test_fresh_skips_rows_handed_on_at_the_same_modstamp_only() -> None:
    cursor = advance(PollCursor(), [Row("006A", at(10)), Row("006B", at(20))], OVERLAP)
    rows = [Row("006A", at(10)), Row("006B", at(25)), Row("006C", at(15)), Row("006C", at(15))]
    assert fresh(cursor, rows) == [Row("006B", at(25)), Row("006C", at(15))]


def test_advance_never_moves_back_for_a_late_row_and_keeps_it_seen() -> None:
    cursor = advance(PollCursor(), [Row("006B", at(20))], OVERLAP)
    late = advance(cursor, [Row("006A", at(10))], OVERLAP)
    assert (late.modstamp, late.last_id) == (at(20), "006B")
    assert fresh(late, [Row("006A", at(10)), Row("006B", at(20))]) == []
    assert advance(late, [], OVERLAP) is late


def test_ties_on_the_modstamp_are_ordered_by_id() -> None:
    cursor = advance(PollCursor(), [Row("006B", at(20)), Row("006A", at(20))], OVERLAP)
    assert cursor.last_id == "006B"


def test_seen_keeps_only_the_look_back_window() -> None:
    cursor = advance(PollCursor(), [Row("006A", at(0)), Row("006B", at(100))], OVERLAP)
    cursor = advance(cursor, [Row("006C", at(400))], OVERLAP)
    assert set(cursor.seen) == {"006B", "006C"}  # 006A is older than 400 s - 5 min
    assert window_start(cursor, OVERLAP) == at(100)  # ... and is not read again either


def test_the_cursor_survives_storage() -> None:
    cursor = advance(PollCursor(), [Row("006A", at(1.5)), Row("006B", at(2))], OVERLAP)
    value = json.loads(json.dumps(cursor.to_value()))
    assert PollCursor.from_value(value) == cursor
    assert PollCursor.from_value({}) == PollCursor()


def test_simulated_late_commits_are_never_missed_nor_handed_on_twice() -> None:
    """Writers stamp rows when they start and commit up to 60 s later; polls run every 7 s and may restart.

    Every (row, modstamp) version that was visible at some poll must be handed on exactly once.
    """
    rng = random.Random(42)
    versions: list[tuple[Row, float]] = []  # (row, visible from)
    for i in range(400):
        stamp = rng.uniform(0, 1800)
        versions.append((Row(f"006{rng.randrange(60):03d}", at(stamp)), stamp + rng.choice([0, 0, 0, rng.uniform(0, 60)])))
    # A record's versions have increasing stamps; the newest visible one is what a query returns.
    stored = {}
    handed: list[Row] = []
    for now in range(0, 1900, 7):
        if rng.random() < 0.1:
            stored = json.loads(json.dumps(stored))  # a restart: only what was saved survives
        cursor = PollCursor.from_value(stored)
        start = window_start(cursor, OVERLAP)
        current: dict[str, Row] = {}
        for row, visible in versions:
            if visible <= now and (row.id not in current or row.modstamp > current[row.id].modstamp):
                current[row.id] = row
        query = sorted((r for r in current.values() if start is None or r.modstamp >= start),
                       key=lambda r: (r.modstamp, r.id))
        new = fresh(cursor, query)
        handed += new
        stored = advance(cursor, new, OVERLAP).to_value()
    assert len(handed) == len(set(handed)), "a row was handed on twice"
    final = {}
    for row, _ in versions:
        if row.id not in final or row.modstamp > final[row.id].modstamp:
            final[row.id] = row
    assert set(final.values()) <= set(handed), "the last version of a row was missed"


def test_opportunity_ids_are_15_or_18_letters_and_digits_starting_006() -> None:
    assert is_opportunity_id("006Hs0000000003IAA")
    assert is_opportunity_id("0065g00000XyZabAAB")
    assert is_opportunity_id("006Hs0000000003")
    assert not is_opportunity_id("001Hs0000000003IAA")  # an Account
    assert not is_opportunity_id("006Hs00000000")
    assert not is_opportunity_id("006Hs000000000'OR")
    assert not is_opportunity_id(6)


def test_parse_nudge_accepts_ids_and_refuses_everything_else() -> None:
    assert parse_nudge(b'{"ids": ["006Hs0000000003IAA", "006Hs0000000003", "006Hs0000000003IAA"]}') == [
        "006Hs0000000003IAA", "006Hs0000000003"]
    for body, words in [(b"not json", "must be JSON"), (b"[]", "with at least one"), (b'{"ids": []}', "at least one"),
                        (b'{"ids": "006Hs0000000003"}', "at least one"), (b"", "at least one"),
                        (b'{"ids": ["001Hs0000000003IAA"]}', "starting 006\\): 001Hs0000000003IAA"),
                        (json.dumps({"ids": ["006Hs0000000003"] * 201}).encode(), "at most 200")]:
        with pytest.raises(InvalidInput, match=words):
            parse_nudge(body)


def test_queue_message_shape() -> None:
    assert message("006Hs0000000003IAA", source="salesforce-opportunities", modstamp=at(1)) == {
        "opportunity_id": "006Hs0000000003IAA", "source": "salesforce-opportunities",
        "modstamp": "2026-11-26T09:00:01.000Z", "urgent": False}
    assert message("006Hs0000000003", source="nudge", urgent=True)["urgent"] is True
