"""`python -m shared backfill [--dry-run]`: the first run on an existing tenant.

Links the referrals and opportunities that already belong together (by the referral's `externalReferenceId`
and the opportunity's Referral Identifier), creates an opportunity for every referral without one, and
queues opted-in opportunities without a referral for the normal sync. Resumable: stop it any time and run it
again. `--dry-run` reads and prints what it would do, writing nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.sync.backfill_runner import BackfillReport



def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "backfill", help="link existing referrals and opportunities, create the missing opportunities",
        description="First run on an existing tenant: link referrals and opportunities that belong together, "
                    "create an opportunity (account, contacts, contact roles, solutions) for every referral "
                    "without one, and queue opted-in opportunities without a referral for the normal sync. "
                    "Resumable: run it again after an interruption and it continues where it stopped.")
    parser.add_argument("--dry-run", action="store_true",
                        help="read and print what would be done (counts and examples), write nothing "
                             "(as COSELL_DRY_RUN)")
    parser.add_argument("--restart", action="store_true",
                        help="list every referral again, even after a finished run (linked ones are left as "
                             "they are; a batch an interrupted run was writing is still finished)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="referrals decided and written together (default 2000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared.errors import ConnectorError
    from shared.runtime import services
    from shared.sync.backfill_runner import BATCH_SIZE, Backfill

    app = services()
    dry_run = args.dry_run or app.settings.cosell_dry_run
    backfill = Backfill.from_services(app, batch_size=args.batch_size or BATCH_SIZE)
    bar = tqdm(unit=" referrals", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True)

    def progress(report: BackfillReport, size: int) -> None:
        bar.update(size)
        bar.set_postfix({"linked": report.counts["link"], "created": report.counts["create"],
                         "already": report.counts["already_linked"]}, refresh=False)

    try:
        report = backfill.run(dry_run=dry_run, restart=args.restart, on_batch=progress)
    except KeyboardInterrupt:
        bar.close()
        print("interrupted: run the command again to continue where it stopped", file=sys.stderr)
        return 130
    except ConnectorError as exc:
        bar.close()
        hint = "" if dry_run else "\nthe progress is saved: run the command again to continue where it stopped"
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    bar.close()
    print(render(report))
    return 0


def render(report: BackfillReport) -> str:
    """The report for a person: one line per kind with its count, and a few examples under it."""
    from shared.sync.backfill_runner import KINDS

    if report.already_finished:
        return (f"The backfill already finished ({report.already_finished}). Use --restart to go through every "
                "referral again.")
    lines = [("Backfill, dry run: nothing was written." if report.dry_run else "Backfill finished.")
             + (" Resumed where the last run stopped." if report.resumed else ""),
             f"{report.listed} referrals listed in {report.batches} batch(es):"]
    for kind, labels in KINDS.items():
        lines.append(f"  {labels[report.dry_run]:<72} {report.counts[kind]:>7}")
        lines += [f"      e.g. {example}" for example in report.examples.get(kind, [])]
    counts = report.counts
    if report.dry_run:
        lines.append(f"It would create {counts['accounts_created']} accounts and {counts['contacts_created']} "
                     "contacts.")
    else:
        lines.append(f"Created {counts['accounts_created']} accounts and {counts['contacts_created']} contacts; "
                     f"the first merge updated {counts['referral_updates']} referrals in Partner Center.")
    return "\n".join(lines)
