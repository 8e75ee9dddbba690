"""What the local Functions host reads from `host.json` and from app settings.

Why a module of its own: the real host reads these before it runs anything, and a mistake in them
(a bad timespan, a `%SETTING%` nobody set) must stop the host with one line naming it, not surface
later as a stack trace inside a poller thread.

host.json is also checked against the official host.json schema (SchemaStore's, vendored in
sandbox/schemas/, see its README), version 2.0 only: the v4 host refuses a host.json without
`"version": "2.0"` (HostJsonFileConfigurationSource.InitializeHostConfig, Azure/azure-functions-host).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from shared.errors import ConfigError

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_SETTING_REF = re.compile(r"%([^%]+)%")
HOST_JSON_SCHEMA = Path(__file__).resolve().parent / "schemas" / "host.schema.json"


def parse_timespan(value: Any, where: str) -> float:
    """Seconds in a .NET timespan (``[d.]hh:mm:ss[.fff]``), the format host.json uses for durations."""
    match = _TIMESPAN.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"host.json {where}: {value!r} is not a timespan like \"00:00:30\" (hh:mm:ss)")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def resolve_settings(value: str, env: Mapping[str, str], where: str) -> str:
    """Replace each ``%NAME%`` with the app setting NAME, as the host does for binding properties.

    Raises:
        ConfigError: naming the first setting that is not set (and where it is used).
    """
    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if not env.get(name):
            raise ConfigError(f"setting {name} (used as %{name}% in {where}) is not set: "
                              "add it to local.settings.json (Values) or the environment")
        return env[name]

    return _SETTING_REF.sub(lookup, value)


@dataclass(frozen=True)
class QueueOptions:
    """`extensions.queues` of host.json, with the real host's defaults."""

    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    """Seconds a failed message stays hidden before its next try."""
    max_polling_interval: float = 60.0
    """Longest wait between polls of an idle queue, in seconds."""
    message_encoding: str = "base64"

    @classmethod
    def from_json(cls, section: Mapping[str, Any]) -> QueueOptions:
        """Read the section; unknown keys (newBatchThreshold, ...) are accepted and ignored."""
        def duration(key: str, default: float) -> float:
            return parse_timespan(section[key], f"extensions.queues.{key}") if key in section else default

        options = cls(batch_size=section.get("batchSize", cls.batch_size),
                      max_dequeue_count=section.get("maxDequeueCount", cls.max_dequeue_count),
                      visibility_timeout=duration("visibilityTimeout", cls.visibility_timeout),
                      max_polling_interval=duration("maxPollingInterval", cls.max_polling_interval),
                      message_encoding=str(section.get("messageEncoding", cls.message_encoding)).lower())
        if not isinstance(options.batch_size, int) or not 1 <= options.batch_size <= 32:
            raise ConfigError(f"host.json extensions.queues.batchSize: {options.batch_size!r} is not 1-32")
        if not isinstance(options.max_dequeue_count, int) or options.max_dequeue_count < 1:
            raise ConfigError(f"host.json extensions.queues.maxDequeueCount: {options.max_dequeue_count!r} "
                              "is not a whole number >= 1")
        if options.message_encoding not in ("base64", "none"):
            raise ConfigError(f"host.json extensions.queues.messageEncoding: {options.message_encoding!r} "
                              "is not \"base64\" or \"none\"")
        return options


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json the local host honours."""

    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)

    @classmethod
    def load(cls, source: Path | Mapping[str, Any] | None) -> HostConfig:
        """Read host.json (a path, or its parsed document); None or a missing file means the defaults.

        Raises:
            ConfigError: one line saying what is wrong with the file.
        """
        if source is None or isinstance(source, Path) and not source.exists():
            return cls()
        document: Any = source
        if isinstance(source, Path):
            try:
                document = json.loads(source.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{source} is not valid JSON ({exc})") from None
        extensions = document.get("extensions", {}) if isinstance(document, Mapping) else None
        http = extensions.get("http", {}) if isinstance(extensions, Mapping) else None
        queues = extensions.get("queues", {}) if isinstance(extensions, Mapping) else None
        if not isinstance(http, Mapping) or not isinstance(queues, Mapping):
            raise ConfigError(f"{source}: host.json, its extensions, extensions.http and extensions.queues "
                              "must be JSON objects")
        prefix = http.get("routePrefix", cls.route_prefix)
        if not isinstance(prefix, str):
            raise ConfigError(f"{source}: extensions.http.routePrefix must be a string")
        config = cls(route_prefix=prefix.strip("/"), queues=QueueOptions.from_json(queues))
        if document and (problem := host_json_problem(document)):  # an empty host.json is the default one
            raise ConfigError(f"{source}: {problem}")
        return config


def host_json_problem(document: Any) -> str | None:
    """The first thing in a host.json document the official schema (version 2.0) refuses, or None."""
    error = jsonschema.exceptions.best_match(_host_json_validator().iter_errors(document))
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return f"host.json {where or '(the document)'} does not match the host.json schema: {error.message}"


_validator: jsonschema.Draft7Validator | None = None


def _host_json_validator() -> jsonschema.Draft7Validator:
    """The schema's `version-2` definition (its top level is oneOf version 1 or 2, whose errors say nothing)."""
    global _validator
    if _validator is None:
        schema = json.loads(HOST_JSON_SCHEMA.read_text(encoding="utf-8"))
        schema.pop("oneOf")
        _validator = jsonschema.Draft7Validator({**schema, "$ref": "#/definitions/version-2"})
    return _validator


__all__ = ["HOST_JSON_SCHEMA", "HostConfig", "QueueOptions", "host_json_problem", "parse_timespan",
           "resolve_settings"]
