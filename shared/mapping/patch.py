"""JSON Patch for referral paths: `replace` where the target exists, `add` where it does not.

Why both: Partner Center accepts only `add` and `replace`, and RFC 6902 `replace` fails on a missing
member (and `add` on a missing parent). So each change is planned against a working copy of the referral:
the first change under a missing `details.requirements` adds the object, the next one then replaces a
member inside it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from shared.mapping.paths import set_path, split, to_pointer


def patch_ops(referral: Mapping[str, Any], changes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch operations that set each dotted path of `changes` in `referral`.

    Args:
        referral: the referral as read (camelCase JSON); not modified.
        changes: dotted path -> new value, applied in order.

    Returns:
        Operations for `PATCH /referrals/{id}` (empty when `changes` is).
    """
    working: dict[str, Any] = copy.deepcopy(dict(referral))
    ops: list[dict[str, Any]] = []
    for path, value in changes.items():
        parts = split(path)
        node: Any = working
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if not isinstance(node, dict) or part not in node or (not last and not isinstance(node[part], dict)):
                # `part` is missing (or not an object on the way): add it, with the rest nested inside.
                rest: Any = value
                for inner in reversed(parts[depth + 1:]):
                    rest = {inner: rest}
                target = ".".join(parts[: depth + 1])
                ops.append({"op": "add", "path": to_pointer(target), "value": copy.deepcopy(rest)})
                break
            if last:
                ops.append({"op": "replace", "path": to_pointer(path), "value": copy.deepcopy(value)})
            node = node[part]
        set_path(working, path, copy.deepcopy(value))
    return ops


__all__ = ["patch_ops"]
