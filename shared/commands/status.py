"""`python -m shared status`: the status page in a terminal (health, counts, dead letters, newest syncs).

The same report as `GET /api/status.json` (`--json` prints exactly that), read straight from storage and the
webhook registration API, so it works where the function app's routes are not reachable.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "status", help="health of both sides, counts, dead letters and the newest syncs",
        description="Show what the status page shows: health of each side (Salesforce poll, reconcile, Partner "
                    "Center token, webhook registration, Salesforce API budget), counts, dead letters with their "
                    "reason and the newest syncs with their field changes.")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON (as GET /api/status.json)")
    parser.add_argument("--log", type=int, default=20, metavar="N",
                        help="how many of the newest syncs to show (default 20, at most 100)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared.runtime import services
    from shared.status import collect_for, render_text

    report = collect_for(services())
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render_text(report, log_limit=max(0, args.log)))
    return 0
