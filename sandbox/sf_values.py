"""Salesforce's value rules: Ids, the JSON forms of each field type, and per-field validation.

Why strict: Salesforce refuses a datetime string in a Date field with JSON_PARSER_ERROR (the whole
request fails), text longer than the field with STRING_TOO_LONG, an unknown value of a restricted picklist
with INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST. A lenient simulator would let the connector ship code that
only fails in a customer's org, so these rules follow the real API as closely as the handbook states them.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox.sf_model import NUMBER_TYPES, FieldDef, FieldType

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"^[0-9A-Za-z]{15}$")
_ID18 = re.compile(r"^[0-9A-Za-z]{18}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ValueParseError(ValueError):
    """A JSON value of the wrong shape for its field: Salesforce's JSON_PARSER_ERROR (the whole request fails)."""


class FieldValueError(ValueError):
    """A well-formed value the field refuses (per record): `code` is Salesforce's status code."""

    def __init__(self, code: str, message: str, field_name: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field_name = field_name


# ---------------------------------------------------------------------------------------------------------
# Ids


def _checksum(id15: str) -> str:
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, ch in enumerate(id15[chunk * 5:chunk * 5 + 5]) if "A" <= ch <= "Z")
        suffix += _SUFFIX[bits]
    return suffix


def make_id(prefix: str, number: int, pod: str = "Hs") -> str:
    """An 18-character Id: key prefix, pod, a reserved 0, nine base-62 digits, and the case checksum.

    The base-62 digits sort in ASCII order, so Ids made from a growing counter also sort by creation
    (what `ORDER BY Id` and a (timestamp, Id) polling cursor rely on).
    """
    digits = ""
    for _ in range(9):
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    id15 = f"{prefix}{pod}0{digits}"
    return id15 + _checksum(id15)


def normalize_id(raw: Any) -> str | None:
    """The 18-character form of a 15- or 18-character Id, or None when `raw` is not a well-formed Id."""
    if not isinstance(raw, str):
        return None
    if _ID15.match(raw):
        return raw + _checksum(raw)
    if _ID18.match(raw) and raw[15:].upper() == _checksum(raw[:15]):
        return raw[:15] + _checksum(raw[:15])
    return None


# ---------------------------------------------------------------------------------------------------------
# Dates and times


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def format_datetime(value: dt.datetime) -> str:
    """Salesforce's form: `2026-11-26T05:36:00.000+0000` (milliseconds, UTC)."""
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def parse_date(text: str) -> dt.date | None:
    if not _DATE.match(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def parse_datetime(text: str, *, zone_required: bool = False) -> dt.datetime | None:
    """An aware UTC datetime from the ISO 8601 forms Salesforce accepts, truncated to milliseconds."""
    match = _DATETIME.match(text)
    if not match:
        return None
    day, hour, minute, second, fraction, zone = match.groups()
    if zone is None and zone_required:
        return None
    try:
        value = dt.datetime.fromisoformat(f"{day}T{hour}:{minute}:{second}")
    except ValueError:
        return None
    micros = int((fraction or "0")[:3].ljust(3, "0")) * 1000
    offset = dt.timedelta(0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return value.replace(microsecond=micros, tzinfo=dt.timezone(offset)).astimezone(dt.timezone.utc)


# ---------------------------------------------------------------------------------------------------------
# JSON in and out


def _json_kind(raw: Any) -> str:
    if isinstance(raw, bool):
        return "VALUE_TRUE" if raw else "VALUE_FALSE"
    if isinstance(raw, int):
        return "VALUE_NUMBER_INT"
    if isinstance(raw, float):
        return "VALUE_NUMBER_FLOAT"
    if isinstance(raw, str):
        return "VALUE_STRING"
    return "START_OBJECT" if isinstance(raw, dict) else "START_ARRAY"


def _refuse(definition: FieldDef, raw: Any, java_type: str) -> ValueParseError:
    return ValueParseError(
        f"Cannot deserialize instance of {java_type} from {_json_kind(raw)} value {raw} or request may be "
        f"missing a required field")


def parse_input(definition: FieldDef, raw: Any) -> Any:
    """The stored form of a JSON value written to `definition`; ValueParseError when its shape is wrong."""
    if raw is None:
        return None
    kind = definition.type
    if kind == FieldType.BOOLEAN:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise _refuse(definition, raw, "boolean")
    if kind in NUMBER_TYPES:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise _refuse(definition, raw, "double" if kind != FieldType.INT else "int")
        try:
            number = Decimal(str(raw).strip())
        except InvalidOperation:
            raise _refuse(definition, raw, "double") from None
        if not number.is_finite():
            raise _refuse(definition, raw, "double")
        if kind == FieldType.INT:
            if number != number.to_integral_value():
                raise _refuse(definition, raw, "int")
            return int(number)
        return float(number)
    if kind == FieldType.DATE:
        value = parse_date(raw) if isinstance(raw, str) else None
        if value is None:
            raise _refuse(definition, raw, "date")
        return value
    if kind == FieldType.DATETIME:
        moment = parse_datetime(raw) if isinstance(raw, str) else None
        if moment is None:
            raise _refuse(definition, raw, "datetime")
        return moment
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)
    raise _refuse(definition, raw, "string")


def check_value(definition: FieldDef, value: Any) -> Any:
    """Apply the field's limits to a parsed value; returns it (numbers rounded to the field's scale).

    Raises:
        FieldValueError: STRING_TOO_LONG, INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST, INVALID_EMAIL_ADDRESS,
            NUMBER_OUTSIDE_VALID_RANGE.
    """
    if value is None:
        return None
    kind = definition.type
    if isinstance(value, str) and kind not in (FieldType.ID, FieldType.REFERENCE):
        if definition.length and len(value) > definition.length:
            raise FieldValueError(
                "STRING_TOO_LONG",
                f"{definition.label}: data value too large: {value[:40]}{'...' if len(value) > 40 else ''} "
                f"(max length={definition.length})", definition.name)
        if kind == FieldType.PICKLIST and definition.restricted and value not in definition.picklist:
            raise FieldValueError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                  f"{definition.label}: bad value for restricted picklist field: {value}",
                                  definition.name)
        if kind == FieldType.EMAIL and value and not _EMAIL.match(value):
            raise FieldValueError("INVALID_EMAIL_ADDRESS", f"{definition.label}: invalid email address: {value}",
                                  definition.name)
    if kind in (FieldType.CURRENCY, FieldType.DOUBLE, FieldType.PERCENT) and definition.precision:
        rounded = round(float(value), definition.scale)
        if abs(rounded) >= 10 ** (definition.precision - definition.scale):
            raise FieldValueError("NUMBER_OUTSIDE_VALID_RANGE",
                                  f"{definition.label}: value outside of valid range on numeric field: {value}",
                                  definition.name)
        return rounded
    if kind == FieldType.INT and definition.precision and abs(value) >= 10 ** definition.precision:
        raise FieldValueError("NUMBER_OUTSIDE_VALID_RANGE",
                              f"{definition.label}: value outside of valid range on numeric field: {value}",
                              definition.name)
    return value


def format_value(definition: FieldDef, value: Any) -> Any:
    """The JSON form Salesforce returns for a stored value."""
    if value is None:
        return None
    if definition.type == FieldType.DATETIME:
        return format_datetime(value)
    if definition.type == FieldType.DATE:
        return value.isoformat()
    if definition.type in (FieldType.CURRENCY, FieldType.DOUBLE, FieldType.PERCENT):
        return float(value)
    return value


__all__ = [
    "FieldValueError", "ValueParseError", "check_value", "format_datetime", "format_value", "make_id",
    "normalize_id", "now_utc", "parse_date", "parse_datetime", "parse_input",
]
