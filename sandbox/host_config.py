"""What the local Functions host reads from `host.json` and from app settings.

Why a module of its own: the real host reads these before it runs anything, and a mistake in them
(a bad timespan, a `%SETTING%` nobody set) must stop the host with one line naming it, not surface
later as a stack trace inside a poller thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_SETTING_REF = re.compile(r"%([^%]+)%")


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
        return cls(route_prefix=prefix.strip("/"), queues=QueueOptions.from_json(queues))


__all__ = ["HostConfig", "QueueOptions", "parse_timespan", "resolve_settings"]
