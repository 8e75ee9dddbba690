"""`python -m shared replay KEY | --all`: put dead letters back on their queues once their cause is fixed.

Each dead letter is removed only after its work is queued again, so an interrupted `--all` loses nothing:
run it again. The processors then sync as usual (a letter that fails again comes back with its new reason).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "replay", help="re-queue one dead letter (KEY) or all of them",
        description="Re-queue dead letters: KEY as `python -m shared status` lists it (e.g. referral-<id>), or "
                    "--all. Each one is removed once its work is back on its queue.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("key", nargs="?", metavar="KEY", help="the dead letter's key")
    target.add_argument("--all", action="store_true", help="every dead letter, with a progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared.runtime import services
    from shared.status.report import dead_letter_row
    from shared.sync.replay import replay

    app = services()
    if not args.all:
        for letter in replay(app.store, app.queues, key=args.key):
            print(f"re-queued {letter.key}: {dead_letter_row(letter)['subject']}")
        return 0
    total = sum(1 for _ in app.store.dead_letters.list())
    if not total:
        print("no dead letters: nothing to replay")
        return 0
    count = 0
    with tqdm(total=total, unit="letter", desc="replaying") as bar:
        for letter in replay(app.store, app.queues):
            bar.write(f"re-queued {letter.key}: {dead_letter_row(letter)['subject']}")
            bar.update()
            count += 1
    print(f"{count} dead letter(s) re-queued")
    return 0
