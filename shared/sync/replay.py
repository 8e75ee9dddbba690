"""Replay dead letters: put the work back on its queue, with a fresh count of attempts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from shared.errors import NotFound
from shared.store.queues import FORWARD_QUEUE, OPPORTUNITY_QUEUE, REFERRAL_QUEUE

if TYPE_CHECKING:
    from shared.models.records import DeadLetter
    from shared.store import QueueSender, Store

QUEUES = {"referral": REFERRAL_QUEUE, "opportunity": OPPORTUNITY_QUEUE, "webhook-forward": FORWARD_QUEUE}
"""Dead letter kind -> the queue its work goes back to."""
_DISPLAY_ONLY = ("url_shown", "attempt")


def replay(store: Store, queues: QueueSender, key: str | None = None) -> Iterator[DeadLetter]:
    """Re-queue one dead letter (`key`) or all of them; each is removed once its work is queued again.

    Yields:
        Each dead letter as it is replayed (for a progress bar or a count).

    Raises:
        NotFound: `key` names no dead letter.
    """
    if key is not None:
        letter = store.dead_letters.get(key)
        if letter is None:
            raise NotFound(f"no dead letter {key!r}")
        letters: Iterator[DeadLetter] = iter([letter])
    else:
        letters = store.dead_letters.list()
    for letter in letters:
        queue = QUEUES.get(letter.kind)
        if queue is None:
            raise NotFound(f"dead letter {letter.key!r} is of kind {letter.kind!r}, which cannot be replayed")
        payload = {k: v for k, v in letter.payload.items() if k not in _DISPLAY_ONLY}
        queues.send(queue, {**payload, "source": "replay"} if letter.kind != "webhook-forward" else payload)
        store.dead_letters.delete(letter)
        yield letter


__all__ = ["QUEUES", "replay"]
