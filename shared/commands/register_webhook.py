"""`python -m shared register-webhook`: point the tenant's Partner Center webhook at this app (or a URL).

The same rules as `POST /api/partnercenter/webhook`: a registration pointing elsewhere is replaced only
with `--overwrite`, and the refusal says where it points.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "register-webhook", help="register (or update) the Partner Center webhook",
        description="Register the tenant's Partner Center webhook. Default URL: COSELL_PUBLIC_URL + "
                    "/api/partnercenter/events (with the function key); default events: the referral events "
                    "Partner Center offers, plus test-created.")
    parser.add_argument("--url", help="the receiver URL (default: this app's own receiver)")
    parser.add_argument("--events", help="comma-separated event names (default: the referral events + test-created)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a registration that points somewhere else (it stops receiving events)")
    parser.add_argument("--update", action="store_true",
                        help="change the existing registration (PUT): what is not given stays as it is")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared.errors import ConfigError
    from shared.partner_center import WebhookRegistrationClient, registration
    from shared.settings import get_settings

    settings = get_settings()
    try:
        own_url = registration.receiver_url(settings)
    except ConfigError:
        if not args.url:
            raise
        own_url = None
    client = WebhookRegistrationClient.from_settings(settings)
    events = [e.strip() for e in args.events.split(",") if e.strip()] if args.events else None
    if args.update:
        outcome = registration.update(client, own_url=own_url, url=args.url, events=events)
    else:
        outcome = registration.register(client, own_url=own_url, url=args.url, events=events,
                                        overwrite=args.overwrite)
    print(json.dumps(outcome.to_dict(), indent=2))
    return 0
