"""The operator's command line: one sub-command per module in shared/commands/.

Each command module exposes `register(subparsers)` and sets `func` on its parser; errors the connector
raises on purpose become one line on stderr and exit code 1, never a stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

COMMAND_MODULES: tuple[str, ...] = ("doctor", "register_webhook", "webhook_status", "validate_mapping", "status", "sync",
                                     "replay", "backfill")
"""Modules of shared/commands/ to offer, in the order `--help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared", description="Co-sell connector operator commands.")
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"),
                        help="local.settings.json to read Values from (environment variables win)")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"shared.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from shared.errors import ConnectorError
    from shared.settings import load_local_settings

    args = build_parser().parse_args(argv)
    try:
        load_local_settings(args.settings)
        return int(args.func(args) or 0)
    except ConnectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
