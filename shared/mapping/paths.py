"""Dotted referral paths (`details.dealValue`): read, write, and the catalogue of paths that exist.

Why a catalogue from the model: a mapping file naming `details.dealvalue` would otherwise map nothing,
silently. The known paths are read off the `Referral` pydantic model (its camelCase aliases), so the
mapping can never accept a path the connector's own model does not have. List items are written `[]`:
`customerProfile.team[].email`.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping, MutableMapping
from typing import Any

from pydantic import AliasChoices, BaseModel


def split(path: str) -> list[str]:
    return path.split(".") if path else []


def get_path(document: Mapping[str, Any] | None, path: str) -> Any:
    """The value at `path`, or None when any part of it is missing (or not an object)."""
    current: Any = document
    for part in split(path):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def set_path(document: MutableMapping[str, Any], path: str, value: Any) -> None:
    """Set `path` to `value`, creating (or replacing non-object) intermediate objects on the way."""
    parts = split(path)
    current = document
    for part in parts[:-1]:
        child = current.get(part)
        if not isinstance(child, MutableMapping):
            child = {}
            current[part] = child
        current = child
    current[parts[-1]] = value


def to_pointer(path: str) -> str:
    """A dotted path as a JSON Pointer (RFC 6901), as JSON Patch wants it."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in split(path))


def _unwrap(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the model inside an annotation or None, whether it is a list of it)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model, is_list = _unwrap(arg)
            if model is not None:
                return model, is_list
        return None, False
    if origin is list:
        model, _ = _unwrap(typing.get_args(annotation)[0])
        return model, model is not None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def _names(name: str, info: Any) -> set[str]:
    names = {info.serialization_alias or info.alias or name}
    if isinstance(info.validation_alias, AliasChoices):
        names.update(choice for choice in info.validation_alias.choices
                     if isinstance(choice, str) and "_" not in choice)  # wire names are camelCase
    return names


def model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted path of `model` by wire name, objects and leaves alike; list items as `name[]`."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        for wire in _names(name, info):
            path = f"{prefix}{wire}"
            paths.add(path)
            child, is_list = _unwrap(info.annotation)
            if child is not None:
                item = f"{path}[]" if is_list else path
                if is_list:
                    paths.add(item)
                paths |= model_paths(child, item + ".")
    return paths


@functools.cache
def referral_paths() -> frozenset[str]:
    """The catalogue of the referral model's paths (cached: the model does not change at run time)."""
    from shared.models.referral import Referral

    return frozenset(model_paths(Referral))


__all__ = ["get_path", "model_paths", "referral_paths", "set_path", "split", "to_pointer"]
