"""What the mapping refuses, in words for the person who has to fix it.

Two audiences: an admin editing `mappings/salesforce.json` gets `MappingError` with every problem at once,
each at its JSON path (fixing one mistake per deploy would be slow); a seller gets `UnmappedValue`,
`IllegalTransition` or `MissingPrerequisites` in the opportunity's Audit field, saying what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ConfigError, InvalidInput


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake in a mapping file.

    Attributes:
        path: where, as a JSON path (`$.objects.opportunity.fields[2].salesforce`).
        message: what is wrong and, where it helps, what would be right.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class MappingError(ConfigError):
    """The mapping file cannot be used; `problems` lists every reason, in file order."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"mapping {source} has {len(problems)} problem(s):\n{lines}")


class UnmappedValue(InvalidInput):
    """A value has no counterpart on the other side (a stage missing from the stage table, an unknown country)."""


class IllegalTransition(InvalidInput):
    """The stage asks for a status change Partner Center does not allow from the referral's current status."""


class MissingPrerequisites(InvalidInput):
    """A referral cannot be created yet; `missing` says, one sentence each, what the seller should add."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__("Not shared with Partner Center yet: " + " ".join(missing))


__all__ = ["IllegalTransition", "MappingError", "MissingPrerequisites", "Problem", "UnmappedValue"]
