"""The Audit trail on the opportunity: what the connector did, in words a seller understands.

Newest line first, bounded in lines and characters (the field holds 32,768). A line that says the same as
the newest one is not written again: every Salesforce update wakes the change poll, so repeating an
unchanged message would loop and burn API calls for nothing.
"""

from __future__ import annotations

import datetime as dt

MAX_LINES = 40
MAX_CHARS = 32_000
OK_MARK = "✔"
ERROR_MARK = "✖"


def _line(now: dt.datetime, ok: bool, message: str) -> str:
    stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{stamp} {OK_MARK if ok else ERROR_MARK} {' '.join(message.split())}"


def _body(line: str) -> str:
    """A line without its time stamp, to tell whether a new line says anything new."""
    return line.split(" UTC ", 1)[-1]


def add_line(existing: str | None, message: str, *, ok: bool, now: dt.datetime) -> str | None:
    """The Audit text with `message` on top, or None when the newest line already says it.

    Args:
        existing: the field's current text.
        message: what happened, for a seller ("Sent to Partner Center: deal value, closing date").
        ok: a success (✔) or a problem (✖).
        now: the time to stamp.
    """
    line = _line(now, ok, message)
    lines = [text for text in (existing or "").splitlines() if text.strip()]
    if lines and _body(lines[0]) == _body(line):
        return None
    lines = [line, *lines][:MAX_LINES]
    text = "\n".join(lines)
    while len(text) > MAX_CHARS and len(lines) > 1:
        lines.pop()
        text = "\n".join(lines)
    return text[:MAX_CHARS]


__all__ = ["ERROR_MARK", "OK_MARK", "add_line"]
