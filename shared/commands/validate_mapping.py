"""`python -m shared validate-mapping [FILE] [--describe-from-org]`: check a mapping before deploying it.

Prints exactly what the function app would refuse at load: every problem at its JSON path. With
`--describe-from-org` it also reads the org's describe (the Salesforce settings are needed), so unknown
fields, picklist values and stages without a phase are found before a seller meets them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "validate-mapping", help="check a mapping file (every problem, by JSON path)",
        description="Check a mapping file against its JSON schema, the referral model and the stage table; "
                    "with --describe-from-org also against the Salesforce org. Exit code 1 on any problem.")
    parser.add_argument("file", type=Path, nargs="?",
                        help="the mapping file (default: COSELL_MAPPING_FILE, mappings/salesforce.json)")
    parser.add_argument("--describe-from-org", action="store_true",
                        help="also check Salesforce objects, fields and picklist values in the org")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared.mapping import Mapping, MappingError
    from shared.settings import get_settings

    path = args.file or get_settings().mapping_path
    describe = None
    if args.describe_from_org:
        from shared.salesforce import SalesforceClient

        describe = SalesforceClient.from_settings(get_settings()).org_schema
    try:
        mapping = Mapping.load(path, describe=describe)
    except MappingError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    checked = "the org's describe" if describe else "the schema and the referral model (no org describe)"
    print(f"{path}: OK, {len(mapping.fields)} merge fields, checked against {checked}")
    return 0
