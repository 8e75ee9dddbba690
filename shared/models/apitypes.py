"""Field types for payloads that belong to Microsoft: tolerant on the way in, faithful on the way out.

Why these exist: the connector reads a referral, changes a few fields and writes it back. Anything it
cannot represent exactly would be silently rewritten on that write (a timestamp re-formatted, an enum value
Microsoft added last month rejected). So:

- `ApiDateTime` is a real `datetime` (comparable, timezone-aware) that remembers the text it was parsed
  from and serialises back to exactly that text; a value the connector sets itself is written as ISO 8601
  UTC with a `Z`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema


class ApiDateTime(dt.datetime):
    """A timezone-aware datetime that serialises back to the exact text Microsoft sent.

    Naive input (Partner Center sometimes omits the offset on `...UtcDate` fields) is taken as UTC.
    Arithmetic returns a plain `datetime`, so a computed value is formatted afresh.
    """

    raw: str | None = None
    """The text this value was parsed from, None when the connector made it."""

    @classmethod
    def parse(cls, text: str) -> ApiDateTime:
        """Parse ISO 8601 text (any fraction length, `Z` or an offset, or naive = UTC)."""
        parsed = dt.datetime.fromisoformat(text.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        value = cls.from_datetime(parsed)
        value.raw = text
        return value

    @classmethod
    def from_datetime(cls, value: dt.datetime) -> ApiDateTime:
        """Wrap a datetime (naive = UTC) without remembered text: it will be formatted as ISO UTC."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        made = cls(value.year, value.month, value.day, value.hour, value.minute, value.second,
                   value.microsecond, value.tzinfo, fold=value.fold)
        made.raw = None
        return made

    def __copy__(self) -> ApiDateTime:
        return self  # immutable, like every datetime; keeps `raw` through model_copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> ApiDateTime:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        plain = dt.datetime(self.year, self.month, self.day, self.hour, self.minute, self.second,
                            self.microsecond, self.tzinfo, fold=self.fold)
        return _rebuild, (plain, self.raw)

    def to_api(self) -> str:
        """The text to send: the original when unchanged, else ISO 8601 UTC with `Z` (milliseconds if any)."""
        if self.raw is not None:
            return self.raw
        return format_api_datetime(self)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def validate(value: Any) -> ApiDateTime:
            if isinstance(value, ApiDateTime):
                return value
            if isinstance(value, dt.datetime):
                return cls.from_datetime(value)
            if isinstance(value, str):
                try:
                    return cls.parse(value)
                except ValueError:
                    raise ValueError(f"not an ISO 8601 date-time: {value[:40]!r}") from None
            raise ValueError("expected an ISO 8601 date-time string")

        def serialize(value: dt.datetime, info: core_schema.SerializationInfo) -> Any:
            text = value.to_api() if isinstance(value, ApiDateTime) else format_api_datetime(value)
            return text if info.mode_is_json() else value

        return core_schema.no_info_plain_validator_function(
            validate,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(serialize, info_arg=True),
        )


def format_api_datetime(value: dt.datetime) -> str:
    """ISO 8601 in UTC with a `Z`, milliseconds only when there are any: the form Partner Center accepts."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    value = value.astimezone(dt.timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond // 1000:03d}"
    return text + "Z"


def _rebuild(value: dt.datetime, raw: str | None) -> ApiDateTime:
    made = ApiDateTime.from_datetime(value)
    made.raw = raw
    return made


__all__ = ["ApiDateTime", "format_api_datetime"]
