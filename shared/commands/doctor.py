"""`python -m shared doctor`: the read-only preflight a partner runs before going live.

One line per check, ✓ or ✗ with the sentence that says what to do; exit code 1 on any ✗; `--json` for
tooling. It reads (a token, one referral page, the webhook registration, the org's describe, limits and
permission sets, the storage accounts) and writes nothing; no secret is printed.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "doctor", help="check the settings against the real tenant, org and storage (read-only)",
        description="Check, without changing anything: the Partner Center refresh token (and whether its sign-in "
                    "used MFA), one page of referrals, the webhook registration (does it point at this app?), the "
                    "Salesforce login, the mapping against the org's describe (fields, writability, picklists, "
                    "stages), the integration user's permission set, the API budget, SALESFORCE_ORG_ID for "
                    "outbound messages, and Table/Queue storage. Exit code 1 when any check fails.")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON (check, title, ok, detail)")
    parser.add_argument("--permission-set", default=None, metavar="NAME",
                        help="the permission set the integration user must hold "
                             "(default: Partner_Center_Co_sell_Integration, as salesforce/force-app deploys it)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared.doctor import checks, probes
    from shared.settings import get_settings

    settings = get_settings()
    permission_set = args.permission_set or checks.INTEGRATION_PERMISSION_SET
    verdicts = probes.run_all(settings, permission_set=permission_set)
    if args.json:
        print(json.dumps({"ok": checks.exit_code(verdicts) == 0, "checks": [v.to_dict() for v in verdicts]},
                         indent=2, ensure_ascii=False))
    else:
        for verdict in verdicts:
            print(verdict.line())
        failed = sum(not v.ok for v in verdicts)
        print(f"\n{len(verdicts) - failed} of {len(verdicts)} checks passed" + ("" if not failed else
              f"; fix the {failed} marked ✗ before going live"))
    return checks.exit_code(verdicts)
