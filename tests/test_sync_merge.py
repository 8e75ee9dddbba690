"""The three-way merge and the retry decision: plain functions, no I/O."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from shared.errors import Conflict, InvalidInput, LimitExceeded, MfaRequired, Throttled, Unavailable
from shared.sync.failures import LIMIT_DELAY, GiveUp, Retry, backoff, decide
from shared.sync.merge import FieldConflict, merge


@dataclass
class Rule:
    key: str
    direction: str = "both"
    policy: str = "partner_center"


T0 = dt.datetime(2026, 11, 20, 10, tzinfo=dt.timezone.utc)
T1 = T0 + dt.timedelta(minutes=5)


def test_nothing_changed_means_nothing_to_write() -> None:
    values = {"amount": 100, "name": "Deal"}
    result = merge([Rule("amount"), Rule("name")], values, dict(values), dict(values))
    assert not result.changed
    assert result.merged == values and result.conflicts == []


def test_change_on_one_side_is_copied_to_the_other() -> None:
    base = {"amount": 100, "name": "Deal"}
    result = merge([Rule("amount"), Rule("name")], base, {"amount": 200, "name": "Deal"},
                   {"amount": 100, "name": "Deal (renamed)"})
    assert result.to_salesforce == {"amount": 200}
    assert result.to_partner_center == {"name": "Deal (renamed)"}
    assert result.merged == {"amount": 200, "name": "Deal (renamed)"}
    assert result.conflicts == []


@pytest.mark.parametrize(
    ("policy", "pc_modified", "sf_modified", "expected", "winner"),
    [
        ("partner_center", T1, T0, 200, "partner_center"),
        ("salesforce", T1, T0, 300, "salesforce"),
        ("newest", T0, T1, 300, "salesforce"),
        ("newest", T1, T0, 200, "partner_center"),
    ],
)
def test_both_sides_changed_the_same_field_the_policy_decides(
    policy: str, pc_modified: dt.datetime, sf_modified: dt.datetime, expected: int, winner: str
) -> None:
    result = merge([Rule("amount", policy=policy)], {"amount": 100}, {"amount": 200}, {"amount": 300},
                   pc_modified=pc_modified, sf_modified=sf_modified)
    assert result.merged == {"amount": expected}
    assert result.conflicts == [FieldConflict("amount", 200, 300, winner)]
    if winner == "partner_center":
        assert result.to_salesforce == {"amount": 200} and result.to_partner_center == {}
    else:
        assert result.to_partner_center == {"amount": 300} and result.to_salesforce == {}


def test_both_sides_changed_to_the_same_value_is_no_conflict_and_no_write() -> None:
    result = merge([Rule("amount")], {"amount": 100}, {"amount": 250}, {"amount": 250})
    assert not result.changed and result.conflicts == [] and result.merged == {"amount": 250}


def test_first_sync_settles_differences_by_policy_without_calling_them_conflicts() -> None:
    result = merge([Rule("amount", policy="salesforce"), Rule("name")], None,
                   {"amount": 1, "name": "PC"}, {"amount": 2, "name": "SF"})
    assert result.to_partner_center == {"amount": 2}
    assert result.to_salesforce == {"name": "PC"}
    assert result.conflicts == []


def test_one_way_field_follows_its_source_and_leaves_local_edits_alone() -> None:
    rules = [Rule("status", direction="to_salesforce"), Rule("name", direction="to_partner_center")]
    base = {"status": "New", "name": "Deal"}

    # Salesforce edited a Partner Center-owned field, Partner Center edited a Salesforce-owned one:
    # neither is sent, and the base keeps each source's value.
    quiet = merge(rules, base, {"status": "New", "name": "PC rename"}, {"status": "Edited", "name": "Deal"})
    assert not quiet.changed
    assert quiet.merged == {"status": "New", "name": "Deal"}

    # When the source moves, the other side follows.
    moved = merge(rules, quiet.merged, {"status": "Active", "name": "PC rename"},
                  {"status": "Edited", "name": "SF rename"})
    assert moved.to_salesforce == {"status": "Active"}
    assert moved.to_partner_center == {"name": "SF rename"}


def test_merged_values_as_the_next_base_make_the_echo_a_no_change() -> None:
    rules = [Rule("amount"), Rule("name")]
    first = merge(rules, {"amount": 1, "name": "a"}, {"amount": 2, "name": "a"}, {"amount": 1, "name": "b"})
    # Both sides now hold the merged values (our writes); reading them back changes nothing.
    echo = merge(rules, first.merged, dict(first.merged), dict(first.merged))
    assert not echo.changed


def test_a_field_new_to_the_mapping_is_settled_like_a_first_sync() -> None:
    result = merge([Rule("amount"), Rule("currency")], {"amount": 1}, {"amount": 1, "currency": "EUR"},
                   {"amount": 1, "currency": "USD"})
    assert result.to_salesforce == {"currency": "EUR"} and result.conflicts == []


@pytest.mark.parametrize("error", [InvalidInput("400"), MfaRequired("no MFA")])
def test_errors_a_retry_cannot_fix_give_up_at_once(error: Exception) -> None:
    decision = decide(error, attempt=1, max_attempts=5)
    assert isinstance(decision, GiveUp) and decision.reason == str(error)


def test_transient_errors_retry_with_growing_delay_until_the_limit() -> None:
    delays = [decide(Unavailable("503"), attempt=n, max_attempts=5) for n in (1, 2, 3, 4)]
    assert all(isinstance(d, Retry) for d in delays)
    assert [round(backoff(n, jitter=0)) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert isinstance(decide(Unavailable("503"), attempt=5, max_attempts=5), GiveUp)


def test_throttling_waits_at_least_as_long_as_asked_and_budget_waits_long() -> None:
    decision = decide(Throttled("429", retry_after=120), attempt=1, max_attempts=5)
    assert isinstance(decision, Retry) and decision.delay_seconds >= 120
    budget = decide(LimitExceeded("daily limit"), attempt=1, max_attempts=5)
    assert isinstance(budget, Retry) and budget.delay_seconds == LIMIT_DELAY


def test_a_bug_is_retried_then_kept_with_a_reason_that_hides_details() -> None:
    assert isinstance(decide(KeyError("secret-ish"), attempt=1, max_attempts=2), Retry)
    final = decide(KeyError("secret-ish"), attempt=2, max_attempts=2)
    assert isinstance(final, GiveUp)
    assert final.reason == "unexpected KeyError; see the function logs"


def test_conflict_is_retried() -> None:
    assert isinstance(decide(Conflict("412"), attempt=1, max_attempts=3), Retry)


# The Audit trail (shared/sync/audit.py)
from shared.sync.audit import MAX_CHARS, MAX_LINES, add_line  # noqa: E402


def test_audit_puts_the_newest_line_first_with_a_mark() -> None:
    first = add_line(None, "Referral created in Partner Center", ok=True, now=T0)
    second = add_line(first, "Add a customer contact", ok=False, now=T1)
    assert second is not None
    assert second.splitlines() == ["2026-11-20 10:05 UTC ✖ Add a customer contact",
                                   "2026-11-20 10:00 UTC ✔ Referral created in Partner Center"]


def test_audit_does_not_repeat_the_newest_message() -> None:
    text = add_line(None, "Add a customer contact", ok=False, now=T0)
    assert add_line(text, "Add a  customer contact", ok=False, now=T1) is None
    assert add_line(text, "Add a customer contact", ok=True, now=T1) is not None


def test_audit_stays_within_the_field() -> None:
    text = None
    for index in range(MAX_LINES + 10):
        text = add_line(text, f"update {index} " + "x" * 2000, ok=True, now=T0) or text
    assert text is not None and len(text) <= MAX_CHARS
    assert text.splitlines()[0].startswith("2026-11-20 10:00 UTC ✔ update 49")
    assert len(text.splitlines()) <= MAX_LINES


# Writes announced before they are made (shared/sync/plan.py effective_base)
from shared.sync.plan import effective_base  # noqa: E402


def test_an_announced_write_that_landed_counts_as_base_one_that_did_not_does_not() -> None:
    base = {"stage": "open", "dealValue": 100}
    pending = {"partner_center": {"stage": "accepted"}, "salesforce": {"dealValue": 200}}

    # The sync died after its Partner Center PATCH, before its Salesforce write.
    effective = effective_base(base, pending, {"stage": "accepted", "dealValue": 200}, {"stage": "won",
                                                                                         "dealValue": 100})

    assert effective == {"stage": "accepted", "dealValue": 100}
    assert effective_base(base, {}, {}, {}) is base


from shared.sync.plan import PairPlan, landed_changes  # noqa: E402


def test_the_changes_that_landed_are_those_partner_center_holds_with_the_value_it_holds() -> None:
    plan = PairPlan(changes={"stage": ["open", "won", "partner_center"], "dealValue": [100, 130, "partner_center"],
                             "notes": [None, "from Microsoft", "salesforce"]})

    # The accept landed with the deal value riding on it; the win met a 412.
    landed = landed_changes(plan, {"stage": "accepted", "dealValue": 130, "notes": None})

    assert landed == {"stage": ["open", "accepted", "partner_center"], "dealValue": [100, 130, "partner_center"]}
    assert landed_changes(plan, {"stage": "open", "dealValue": 100}) == {}  # nothing landed: nothing claimed


from shared.mapping.stages import Phase, phases_on_the_way  # noqa: E402


def test_a_step_of_an_announced_stage_move_counts_as_base_an_unrelated_stage_does_not() -> None:
    base, pending = {"stage": "open", "dealValue": 100}, {"partner_center": {"stage": "won", "dealValue": 130}}

    # The accept landed with the deal value; the win is not sent yet (or failed).
    effective = effective_base(base, pending, {"stage": "accepted", "dealValue": 130}, {"stage": "won"},
                               stage_key="stage")

    assert effective == {"stage": "accepted", "dealValue": 130}
    # Lost is no step on the way to won, and a field that is not the stage takes no steps.
    assert effective_base(base, pending, {"stage": "lost", "dealValue": 100}, {}, stage_key="stage") == base
    assert effective_base(base, pending, {"stage": "accepted"}, {}, stage_key=None) == base
    assert effective_base({"stage": "accepted"}, {"partner_center": {"stage": "won"}}, {"stage": "accepted"}, {},
                          stage_key="stage") == {"stage": "accepted"}


def test_the_phases_on_the_way_are_those_the_state_machine_passes_through() -> None:
    assert phases_on_the_way("open", "won") == (Phase.ACCEPTED,)  # accept, then win
    assert phases_on_the_way("open", "lost") == ()  # one PATCH: declined
    assert phases_on_the_way("accepted", "won") == ()
    assert phases_on_the_way("won", "lost") == ()  # nothing leaves a closed phase
    assert phases_on_the_way(None, "won") == ()  # no base: nothing is known to be on the way
