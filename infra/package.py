"""Build the zip that `func azure functionapp publish` uploads, file for file, to see what would ship.

Why a copy of Core Tools' rules rather than `git archive` or real gitignore semantics: Core Tools walks the
app root itself (`FileSystemHelpers.GetLocalFiles`): it always skips folders named `.git` and `.vscode`
and files named `.funcignore`, `.gitignore`, `local.settings.json` and `project.lock.json`, at any depth;
then it applies `.funcignore` with `GitIgnoreParser`, a port of the npm `gitignore-parser`. That parser is
not git: every pattern becomes a regular expression anchored at the START of the path relative to the app
root (and not at its end), `*` matches within one folder, `**` across folders, a leading `/` is dropped,
and a `!pattern` re-includes whatever it matches, wherever it appears in the file. For a Python app with
the default remote build the zip holds exactly the files that pass (plus nothing: the platform installs
requirements.txt), and the publish refuses to start without requirements.txt.

Usage (from the repository root):
    python infra/package.py                 # writes build/functionapp.zip, prints the file count
    python infra/package.py --list          # prints what would ship
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import zipfile
from pathlib import Path

ALWAYS_SKIPPED_FOLDERS = frozenset({".git", ".vscode"})
ALWAYS_SKIPPED_FILES = frozenset({".funcignore", ".gitignore", "local.settings.json", "project.lock.json"})
_ESCAPE = re.compile(r"[\-\[\]/{}()+?.\\^$|]")
_NEVER = re.compile(r"$^")


def _pattern(line: str) -> str:
    """One `.funcignore` line as Core Tools' regular expression (escape, then `**` and `*`)."""
    return _ESCAPE.sub(lambda match: "\\" + match.group(0), line).replace("**", "(.+)").replace("*", "([^\\/]+)")


class FuncIgnore:
    """The rules of one `.funcignore`, matched the way Core Tools matches them."""

    def __init__(self, text: str) -> None:
        positive: list[str] = []
        negative: list[str] = []
        for raw in text.split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = positive
            if line.startswith("!"):
                line, target = line[1:], negative
            if line.startswith("/"):
                line = line[1:]
            target.append(line)
        self._positive = self._compile(positive)
        self._negative = self._compile(negative)

    @staticmethod
    def _compile(lines: list[str]) -> re.Pattern[str]:
        if not lines:
            return _NEVER
        return re.compile("^((" + ")|(".join(_pattern(line) for line in sorted(lines)) + "))")

    def denies(self, path: str) -> bool:
        """True when the file at `path` (relative, `/`-separated) stays out of the package."""
        return bool(self._positive.search(path)) and not self._negative.search(path)


def package_files(root: Path) -> list[str]:
    """The files `func azure functionapp publish` would zip, as sorted `/`-separated relative paths."""
    funcignore = root / ".funcignore"
    rules = FuncIgnore(funcignore.read_text(encoding="utf-8")) if funcignore.exists() else None
    shipped: list[str] = []
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if name.lower() not in ALWAYS_SKIPPED_FOLDERS]
        for name in files:
            if name.lower() in ALWAYS_SKIPPED_FILES:
                continue
            relative = (Path(folder) / name).relative_to(root).as_posix()
            if rules is None or not rules.denies(relative):
                shipped.append(relative)
    return sorted(shipped)


def build_zip(root: Path, out: Path) -> list[str]:
    """Write the package to `out`; returns what it holds.

    Raises:
        FileNotFoundError: requirements.txt is missing (Core Tools refuses to publish a Python app then).
    """
    if not (root / "requirements.txt").exists():
        raise FileNotFoundError(f"{root / 'requirements.txt'} is required to publish a Python function app")
    files = package_files(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in files:
            archive.write(root / relative, relative)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Function App package as Core Tools would.")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the app root (where function_app.py and .funcignore are)")
    parser.add_argument("--out", type=Path, default=None, help="zip to write (default: <root>/build/functionapp.zip)")
    parser.add_argument("--list", action="store_true", help="print the files instead of writing the zip")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(package_files(args.root)))
        return 0
    out = args.out or args.root / "build" / "functionapp.zip"
    files = build_zip(args.root, out)
    print(f"{out}: {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
