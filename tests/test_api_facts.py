"""docs/api-facts.md stays true to the code, and the simulator follows the facts it cites.

The table points at `file:function` for every fact; a pointer to something that no longer exists would send
the next reader (or the lead, at merge) to the wrong place, so each one is resolved here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandbox.partner_center import PartnerCenterSim
from shared.errors import InvalidInput
from shared.partner_center import PartnerCenterClient, PatchOperation
from shared.settings import APP_ROOT, get_settings

FACTS = APP_ROOT / "docs" / "api-facts.md"
ABBREVIATIONS = {"PC": "shared/partner_center", "SF": "shared/salesforce", "PCsim": "sandbox/partner_center.py",
                 "SFsim": "sandbox/salesforce.py"}
POINTER = re.compile(r"`((?:PC|SF)/[\w/]+\.py|PCsim|SFsim|(?:shared|sandbox)/[\w/]+\.py):([\w.]+)`"
                     r"((?:, `[\w.]+`)*)")
"""`file:name`, then the names listed after it in the same file: `PCsim:ALLOWED_TRANSITIONS`, `_check_transition`."""


def pointers() -> list[tuple[str, str]]:
    found = []
    for prefix, first, more in POINTER.findall(FACTS.read_text(encoding="utf-8")):
        head, _, rest = prefix.partition("/")
        path = f"{ABBREVIATIONS[head]}/{rest}" if rest and head in ABBREVIATIONS else ABBREVIATIONS.get(prefix, prefix)
        found += [(path, names) for names in [first, *re.findall(r"`([\w.]+)`", more)]]
    return found


def test_the_table_points_at_many_places() -> None:
    assert len(pointers()) >= 150


@pytest.mark.parametrize(("path", "names"), pointers(), ids=lambda value: str(value))
def test_every_pointer_names_something_that_exists(path: str, names: str) -> None:
    source = Path(APP_ROOT / path)
    assert source.is_file(), f"{path} does not exist"
    text = source.read_text(encoding="utf-8")
    for name in names.split("."):
        assert re.search(rf"\b{re.escape(name)}\b", text), f"{path} has no {name}"


@pytest.fixture
def client(pc_sim: PartnerCenterSim, pc_env: dict[str, str], pc_store: object) -> PartnerCenterClient:
    return PartnerCenterClient.from_settings(get_settings(), store=pc_store)  # type: ignore[arg-type]


def test_a_closed_referral_may_change_substatus_but_never_reopen(pc_sim: PartnerCenterSim,
                                                                 client: PartnerCenterClient) -> None:
    """"Update a referral": Closed → Closed (Won, Lost, Declined, Expired); no way back to New or Active."""
    referral_id = pc_sim.create_incoming()["id"]
    etag = client.get_referral(referral_id).e_tag
    accepted = client.update_referral(referral_id, [PatchOperation.replace("/status", "Active"),
                                                    PatchOperation.replace("/substatus", "Accepted")], etag=etag)
    lost = client.update_referral(referral_id, [PatchOperation.replace("/status", "Closed"),
                                                PatchOperation.replace("/substatus", "Lost"),
                                                PatchOperation.replace("/statusReason", "Budget cut")],
                                  etag=accepted.e_tag)
    won = client.update_referral(referral_id, [PatchOperation.replace("/substatus", "Won")], etag=lost.e_tag)
    assert (won.status.value, won.substatus.value) == ("Closed", "Won")
    with pytest.raises(InvalidInput, match="cannot move from Closed to Active"):
        client.update_referral(referral_id, [PatchOperation.replace("/status", "Active"),
                                             PatchOperation.replace("/substatus", "Accepted")], etag=won.e_tag)
    with pytest.raises(InvalidInput, match="substatus 'Accepted' is not allowed with status Closed"):
        client.update_referral(referral_id, [PatchOperation.replace("/substatus", "Accepted")], etag=won.e_tag)
