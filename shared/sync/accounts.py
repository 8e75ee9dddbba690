"""Which Salesforce account a referral's customer is: one match, a new account, or a person's choice.

Matching is by name (the query) and then by country (here): the same company name in two countries is two
customers. Several matches are never guessed between: the candidates go to the Audit and the sync log.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.mapping import Mapping


@dataclass(frozen=True)
class AccountChoice:
    """`account_id` to use, or `create` a new one, or neither with `candidates` for a person to pick."""

    account_id: str | None = None
    create: bool = False
    candidates: list[dict[str, Any]] = field(default_factory=list)


def choose_account(mapping: Mapping, referral: MappingABC[str, Any],
                   accounts: Sequence[MappingABC[str, Any]]) -> AccountChoice:
    """Pick among accounts whose name equals the customer's.

    Args:
        mapping: gives the canonical country of both sides (ISO alpha-2 whatever the org stores).
        referral: the referral (API JSON).
        accounts: accounts with the customer's name, read with their mapped fields.
    """
    country_field = next((f for f in mapping.account.fields
                          if f.pc_path == "customerProfile.address.country"), None)
    wanted = country_field.pc_value(referral) if country_field else None
    same = [a for a in accounts
            if wanted is None or country_field is None or country_field.sf_value(a) in (wanted, None)]
    if not same:
        return AccountChoice(create=True)
    if len(same) == 1:
        return AccountChoice(account_id=str(same[0]["Id"]))
    return AccountChoice(candidates=[{"Id": a["Id"], "Name": a.get("Name")} for a in same])


__all__ = ["AccountChoice", "choose_account"]
