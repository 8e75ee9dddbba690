"""`python -m shared webhook-status`: where the Partner Center webhook points, token health, optional test.

What an operator checks first when events stop arriving: is the registration still ours (another tool
may have replaced it), is the refresh token healthy, and does a test event get through.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "webhook-status", help="show the webhook registration and token health",
        description="Show the Partner Center webhook registration (does it point at this app?) and the "
                    "refresh token's health; --test also sends the test event and reports its delivery.")
    parser.add_argument("--test", action="store_true", help="send the test event (at most 2 a minute)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared.errors import ConfigError, ConnectorError
    from shared.partner_center import WebhookRegistrationClient, registration
    from shared.partner_center.token import TOKEN_STATUS
    from shared.settings import get_settings
    from shared.store import Store

    settings = get_settings()
    try:
        own_url = registration.receiver_url(settings)
    except ConfigError:
        own_url = None
    client = WebhookRegistrationClient.from_settings(settings)
    report: dict[str, Any] = {"webhook": registration.describe(client.get_registration(), own_url)}
    try:
        doc = Store.from_settings(settings).status.get(TOKEN_STATUS)
        report["token"] = doc.data if doc else "no refresh has been recorded yet"
    except ConnectorError as exc:
        report["token"] = f"unknown: {exc}"
    if args.test:
        status = registration.send_test(client)
        report["test"] = {"correlation_id": status.correlation_id, "status": status.status,
                          "delivered": status.delivered,
                          "results": [r.model_dump(mode="json", by_alias=True) for r in status.results]}
    print(json.dumps(report, indent=2, default=str))
    webhook = report["webhook"]
    return 0 if webhook["registered"] and webhook["points_here"] and report.get("test", {}).get("delivered", True) else 1
