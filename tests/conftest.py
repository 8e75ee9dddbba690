"""Session-wide fixtures: the real Azurite, the sandbox certificate authority, clean settings.

Area fixtures (the local host, the two simulators) live in tests/fixtures/ and are loaded here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.azurite import Azurite
from sandbox.ca import SandboxCA
from shared.settings import get_settings

pytest_plugins = [
    "tests.fixtures.host",
    "tests.fixtures.partner_center",
    "tests.fixtures.salesforce",
    "tests.fixtures.connector",
]

# Settings a developer may have exported must not leak into the tests: each test says what it needs.
_CONNECTOR_PREFIXES = ("PARTNER_CENTER_", "SALESFORCE_", "COSELL_")


@pytest.fixture(scope="session", autouse=True)
def _clean_environment() -> Iterator[None]:
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(_CONNECTOR_PREFIXES) or name == "AzureWebJobsStorage":
            del os.environ[name]
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Settings are cached per process; a test that changes the environment gets them read anew."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """A real, in-memory Azurite for the whole session; yields its connection string."""
    with Azurite() as instance:
        yield instance.connection_string


@pytest.fixture(scope="session")
def sandbox_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxCA]:
    """The sandbox root CA, trusted by outbound calls of this process through REQUESTS_CA_BUNDLE."""
    ca = SandboxCA.load_or_create(tmp_path_factory.mktemp("ca"))
    previous = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca.ca_pem_path)
    yield ca
    if previous is None:
        os.environ.pop("REQUESTS_CA_BUNDLE", None)
    else:
        os.environ["REQUESTS_CA_BUNDLE"] = previous


@pytest.fixture
def table_prefix() -> str:
    """A unique table-name prefix, so each test sees empty tables in the shared Azurite."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def samples_dir() -> Path:
    """The handbook's sample payloads, copied into the repo so a clone alone runs the tests."""
    return Path(__file__).resolve().parent / "samples"
