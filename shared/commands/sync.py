"""`python -m shared sync --referral ID | --opportunity ID`: sync one record now and show what moved.

What an operator runs after fixing the cause of a failure, or to see why a deal looks different on the two
sides. It runs the same engine as the queue processors (read both sides fresh, merge, write what differs),
as urgent work: it may use the Salesforce API budget kept back from polling. A failure is one line and exit
code 1 here, not a retry or a dead letter: the person is watching.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "sync", help="sync one referral or opportunity now and print what changed",
        description="Sync one linked pair (or create the missing side) now, as the queue processors do, and print "
                    "the outcome with every field that changed. Recorded in the sync log like any other sync.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--referral", metavar="ID", help="a Partner Center referral id")
    target.add_argument("--opportunity", metavar="ID", help="a Salesforce Opportunity Id")
    parser.add_argument("--dry-run", action="store_true",
                        help="read both sides and show what would change; write nothing (as COSELL_DRY_RUN)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared.models.records import SyncLogEntry, SyncOutcome
    from shared.runtime import services
    from shared.status.report import log_row
    from shared.status.text import sync_lines
    from shared.sync.engine import timed

    app = services()
    engine = app.sync_engine
    engine.dry_run = engine.dry_run or args.dry_run
    with app.salesforce.urgent():
        if args.referral:
            report, millis = timed(lambda: engine.sync_referral(args.referral))
        else:
            report, millis = timed(lambda: engine.sync_opportunity(args.opportunity))
    entry = SyncLogEntry(direction=report.direction, outcome=report.outcome, referral_id=report.referral_id,
                         opportunity_id=report.opportunity_id, changes=report.changes, message=report.message,
                         duration_ms=millis, request_ids=report.request_ids)
    if report.outcome is not SyncOutcome.NO_CHANGE and not engine.dry_run:
        app.store.synclog.append(entry)
    print("\n".join(sync_lines(log_row(entry))))
    if report.outcome is SyncOutcome.NO_CHANGE:
        print("    both sides already agree: nothing was written")
    return 0
