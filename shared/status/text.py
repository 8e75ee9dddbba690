"""The status report for a terminal (`python -m shared status`): the same facts as the page, in plain lines.

Why its own renderer: an operator on a server has a shell, not a browser. It shows what needs a person first
(health, dead letters) and the newest syncs; `--json` gives the whole report to scripts.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from shared.status.page import DIRECTIONS, HEALTH_TITLES, SIDES, STATE_WORDS, field_label
from shared.status.report import ERROR, OK, UNKNOWN, WARNING, ago

MARKS = {OK: "✔", WARNING: "!", ERROR: "✖", UNKNOWN: "·"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: Any) -> str:
    """User text made safe for a terminal: control characters (an escape sequence in a deal name could
    rewrite the screen or the window title) are shown as `\\xNN`, a line break as `↵`."""
    return _CONTROL.sub(lambda m: "↵" if m.group() == "\n" else f"\\x{ord(m.group()):02x}", str(text))


def _value(value: Any) -> str:
    return "(empty)" if value is None or value == "" else clean(value)


def sync_lines(entry: dict[str, Any], now: dt.datetime | None = None) -> list[str]:
    """One sync log entry (as in the report) as a headline and one indented line per field change."""
    short = DIRECTIONS.get(entry["direction"], (entry["direction"],))[0]
    records = " ⇄ ".join(f"{label} {clean(value)}" for label, value in (("referral", entry.get("referral_id")),
                                                                   ("opportunity", entry.get("opportunity_id"))) if value)
    when = f"{ago(entry['at'], now)}  " if now and entry.get("at") else ""
    took = f"  ({float(entry['duration_ms']):.0f} ms)" if entry.get("duration_ms") is not None else ""
    lines = [f"{when}{short}  {entry['outcome'].replace('_', ' ')}  {records}{took}"]
    for change in entry["changes"]:
        side = f"  ({SIDES.get(change['to'], change['to'])})" if change["to"] else ""
        lines.append(f"    {field_label(change['field'])}: {_value(change['before'])} → {_value(change['after'])}{side}")
    for conflict in entry["conflicts"]:
        lines.append(f"    {field_label(conflict['field'])}: both changed (PC {_value(conflict['partner_center'])}, "
                     f"SF {_value(conflict['salesforce'])}); kept {conflict['winner']}")
    if entry["account_candidates"]:
        lines.append("    accounts to choose from: " + ", ".join(f"{_value(c['name'])} ({clean(c['id'])})"
                                                            for c in entry["account_candidates"]))
    if entry.get("message"):
        lines.append(f"    {clean(entry['message'])}")
    if entry.get("request_ids"):
        lines.append(f"    request-id {clean(', '.join(entry['request_ids']))}")
    return lines


def render_text(report: dict[str, Any], *, log_limit: int = 20) -> str:
    """The report as terminal text: health, counts, dead letters, open create intents, the newest syncs."""
    now = dt.datetime.fromisoformat(report["generated_at"])
    lines = [f"Co-sell connector status, {report['generated_at'][:19].replace('T', ' ')} UTC"
             + ("  [DRY RUN: nothing is written]" if report["dry_run"] else ""), "", "Health"]
    width = max(len(title) for title in HEALTH_TITLES.values())
    for key, item in report["health"].items():
        state = item.get("state", UNKNOWN)
        lines.append(f"  {MARKS.get(state, '?')} {HEALTH_TITLES.get(key, key):<{width}}  "
                     f"{STATE_WORDS.get(state, state):<9}  {clean(item.get('summary', ''))}")
    counts = report["counts"]
    outcomes = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts["sync_log_outcomes"].items()) or "none"
    lines += ["", "Counts",
              f"  links {counts['links']}{'+' if counts['links_more'] else ''} · open create intents "
              f"{counts['open_intents']} · dead letters {counts['dead_letters']}{'+' if counts['dead_letters_more'] else ''}",
              f"  last {counts['sync_log_window']} syncs: {outcomes}"]
    if report["dead_letters"]:
        lines += ["", f"Dead letters ({counts['dead_letters']}; replay: python -m shared replay KEY | --all)"]
        for letter in report["dead_letters"]:
            lines.append(f"  {clean(letter['key'])}  {clean(letter['subject'])}  {letter['attempts']} tries, last failed "
                         f"{ago(letter['last_failed_at'], now)}")
            lines.append(f"      {clean(letter['reason'])}")
    if report["intents"]:
        lines += ["", "Open create intents (a referral POST not confirmed yet)"]
        lines += [f"  opportunity {clean(i['opportunity_id'])}  since {ago(i['attempted_at'], now)}" for i in report["intents"]]
    entries = report["sync_log"][:log_limit]
    lines += ["", f"Recent syncs (newest first, {len(entries)} of the last {counts['sync_log_window']})"]
    if not entries:
        lines.append("  nothing synced yet")
    for entry in entries:
        lines += ["  " + line for line in sync_lines(entry, now)]
    return "\n".join(lines)


__all__ = ["clean", "render_text", "sync_lines"]
