"""The deployment package: `.funcignore` read the way Core Tools reads it, and the zip it leads to.

The zip is built from a copy of the repository (plus the clutter a developer's checkout has: a
local.settings.json, bytecode, editor folders) with infra/package.py, which follows Core Tools' rules; then
its content is checked, and every module of the package is imported from the unpacked zip alone, so the
deployed app provably needs nothing that stays behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pathspec
import pytest

ROOT = Path(__file__).resolve().parent.parent
# infra/ is not a package (it is not deployed and holds no Python but this tool): load the file itself.
_spec = importlib.util.spec_from_file_location("infra_package", ROOT / "infra" / "package.py")
assert _spec is not None and _spec.loader is not None
infra_package = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(infra_package)
FuncIgnore, build_zip, package_files = infra_package.FuncIgnore, infra_package.build_zip, infra_package.package_files


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as a developer has it: the tracked tree plus local files that must never ship."""
    root = tmp_path_factory.mktemp("checkout") / "app"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns(".venv", "node_modules", ".git", "__pycache__",
                                                             "build", ".sandbox", ".pytest_cache"))
    (root / "local.settings.json").write_text('{"Values": {"SALESFORCE_PASSWORD": "not for Azure"}}')
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".vscode").mkdir()
    (root / ".vscode" / "settings.json").write_text("{}")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "site.py").write_text("")
    (root / ".azure" / "prod").mkdir(parents=True)  # azd's environment: its .env may hold what `azd env set` got
    (root / ".azure" / "prod" / ".env").write_text('AZURE_ENV_NAME="prod"\n')
    (root / "node_modules" / "azurite").mkdir(parents=True)
    (root / "node_modules" / "azurite" / "package.json").write_text("{}")
    (root / "shared" / "__pycache__").mkdir(exist_ok=True)
    (root / "shared" / "__pycache__" / "errors.cpython-311.pyc").write_bytes(b"\0")
    return root


@pytest.fixture(scope="module")
def package(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    out = tmp_path_factory.mktemp("build") / "functionapp.zip"
    build_zip(checkout, out)
    with zipfile.ZipFile(out) as archive:
        names = sorted(archive.namelist())
        unpacked = out.parent / "unpacked"
        archive.extractall(unpacked)
    return names, unpacked


def test_the_app_is_in_the_package(package: tuple[list[str], Path], checkout: Path) -> None:
    names, _ = package
    for required in ("function_app.py", "host.json", "requirements.txt", "shared/__init__.py",
                     "shared/settings.py", "shared/store/__init__.py", "shared/functions/__init__.py"):
        assert required in names, required
    assert any(name.startswith("mappings/") for name in names)
    app_sources = {path.relative_to(checkout).as_posix() for folder in ("shared", "mappings")
                   for path in (checkout / folder).rglob("*") if path.is_file() and "__pycache__" not in path.parts}
    assert app_sources <= set(names), app_sources - set(names)


@pytest.mark.parametrize("left_out", ["sandbox/", "tests/", "bench/", "infra/", "salesforce/", ".venv/",
                                      "node_modules/", ".git/", ".vscode/", ".ci/", ".github/", ".azure/"])
def test_development_folders_stay_out(package: tuple[list[str], Path], left_out: str) -> None:
    names, _ = package
    assert not [name for name in names if name.startswith(left_out)]


def test_local_settings_bytecode_and_tooling_files_stay_out(package: tuple[list[str], Path]) -> None:
    names, _ = package
    for left_out in ("local.settings.json", "local.settings.example.json", "Makefile", "pyproject.toml",
                     "requirements-dev.txt", "package.json", "package-lock.json", ".funcignore", ".gitignore"):
        assert left_out not in names, left_out
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc") or name.endswith(".md")]


def test_every_module_of_the_package_imports_from_the_package_alone(package: tuple[list[str], Path]) -> None:
    # Nothing deployed may import sandbox/, tests/ or anything else that stays behind.
    _, unpacked = package
    script = (
        "import importlib, pkgutil, function_app\n"
        "import shared\n"
        "for module in pkgutil.walk_packages(shared.__path__, 'shared.'):\n"
        "    if not module.name.endswith('__main__'):\n"
        "        importlib.import_module(module.name)\n"
        "import sys\n"
        "leaked = sorted(name for name in sys.modules if name.split('.')[0] in ('sandbox', 'tests', 'bench'))\n"
        "assert not leaked, leaked\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=unpacked, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def azd_package_files(root: Path) -> list[str]:
    """The files `azd deploy` zips for a `host: function` service: the same `.funcignore`, read with git's rules.

    azd (cli/azd/pkg/project, createDeployableZip) parses the service's `.funcignore` with
    github.com/denormal/go-gitignore, skips the `.azure` folder, the ignore file and local.settings.json, and
    leaves out a whole folder that a pattern matches. pathspec's GitIgnoreSpec follows the same git rules.
    """
    rules = pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text(encoding="utf-8").splitlines())
    shipped: list[str] = []
    for folder, folders, files in os.walk(root):
        base = Path(folder).relative_to(root)
        folders[:] = [name for name in folders
                      if name != ".azure" and not rules.match_file(f"{(base / name).as_posix()}/")]
        for name in files:
            relative = (base / name).as_posix()
            if name not in (".funcignore", "local.settings.json") and not rules.match_file(relative):
                shipped.append(relative)
    return sorted(shipped)


def test_azd_deploy_ships_what_core_tools_publishes(package: tuple[list[str], Path], checkout: Path) -> None:
    # git anchors a pattern to the root only when it holds a "/" before its end: "salesforce/" would also drop
    # shared/salesforce/ from what azd uploads, and the app would not import.
    names, _ = package
    assert azd_package_files(checkout) == names


def test_the_listing_matches_the_zip(package: tuple[list[str], Path], checkout: Path) -> None:
    names, _ = package
    assert package_files(checkout) == names


def test_publishing_without_requirements_txt_is_refused(tmp_path: Path) -> None:
    (tmp_path / "function_app.py").write_text("")
    with pytest.raises(FileNotFoundError, match="requirements.txt"):
        build_zip(tmp_path, tmp_path / "out.zip")


# --- Core Tools' matching, which is not git's ---------------------------------------------------------


def test_a_pattern_matches_the_start_of_the_path() -> None:
    rules = FuncIgnore("tests\nbench/\n")
    assert rules.denies("tests/test_store.py")
    assert rules.denies("tests_util.py")  # unlike git: a prefix is enough
    assert not rules.denies("shared/tests/helper.py")  # unlike git: not below the root
    assert rules.denies("bench/run.py") and not rules.denies("benchmarks.py")


def test_double_star_reaches_below_the_root_and_star_stays_in_one_folder() -> None:
    rules = FuncIgnore("**/__pycache__/\n*.pyc\n")
    assert rules.denies("shared/store/__pycache__/tables.cpython-311.pyc")
    assert not rules.denies("__pycache__/x.py")  # "**/" needs a folder before it
    assert rules.denies("setup.pyc") and not rules.denies("shared/setup.pyc")


def test_negation_wins_wherever_it_stands_and_comments_and_leading_slashes_are_ignored() -> None:
    rules = FuncIgnore("!mappings/salesforce.json\n# mappings/ is data\n/mappings/\n\n")
    assert rules.denies("mappings/schema.json")
    assert not rules.denies("mappings/salesforce.json")
    assert not FuncIgnore("# only a comment\n").denies("function_app.py")
