"""Named value transforms between a referral value and a Salesforce field value.

Each transform defines one *canonical* form per mapped field, the form the sync engine compares in its
three-way merge and keeps as the base. The rule that keeps the sync loop-free: the canonical form of a
Partner Center value is what survives a trip through Salesforce (`from_sf(to_sf(from_pc(v)))`). So a note
longer than the Salesforce field, or an assistance code the picklist folds into another, compares equal
to what Salesforce will read back, and the connector's own write never looks like a seller's edit.

Canonical values are plain JSON (str, int/float, bool, None) so the base can be stored as is.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shared.mapping.countries import COUNTRIES, build_index, fold
from shared.mapping.errors import UnmappedValue


class Transform:
    """Base: identity on stripped values. Subclasses override the four conversions they change."""

    name: ClassVar[str] = "identity"

    def from_pc(self, value: Any) -> Any:
        """A Partner Center value in the transform's normal form (before the round trip through Salesforce)."""
        return value

    def from_sf(self, value: Any) -> Any:
        """A Salesforce field value as canonical value."""
        return value

    def to_sf(self, value: Any) -> Any:
        """A canonical value as the Salesforce field wants it."""
        return value

    def to_pc(self, value: Any) -> Any:
        """A canonical value as the referral wants it."""
        return value

    def pc_canonical(self, value: Any) -> Any:
        """The canonical value of a referral value: its normal form, as read back from Salesforce."""
        normal = self.from_pc(value)
        return None if normal is None else self.from_sf(self.to_sf(normal))


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@dataclass(frozen=True)
class Text(Transform):
    """Text; line endings as `\\n`, surrounding blanks dropped, empty as None, cut to the field's length.

    Why cut: Salesforce refuses a too long value (`STRING_TOO_LONG`) and fails the whole record.
    """

    name: ClassVar[str] = "text"
    max_length: int | None = None

    def from_pc(self, value: Any) -> str | None:
        if _blank(value):
            return None
        return str(value).replace("\r\n", "\n").strip()

    from_sf = from_pc

    def to_sf(self, value: Any) -> str | None:
        if value is None or self.max_length is None:
            return value
        return value[: self.max_length].rstrip()


@dataclass(frozen=True)
class Number(Transform):
    """A number rounded to `scale` decimals (Salesforce currency fields keep 2); 48000.0 is written 48000."""

    name: ClassVar[str] = "number"
    scale: int = 2

    def from_pc(self, value: Any) -> int | float | None:
        if _blank(value):
            return None
        if isinstance(value, bool):
            raise UnmappedValue(f"expected a number, got {value!r}")
        try:
            number = round(float(value), self.scale)
        except (TypeError, ValueError):
            raise UnmappedValue(f"expected a number, got {str(value)[:40]!r}") from None
        return int(number) if number.is_integer() else number

    from_sf = from_pc


@dataclass(frozen=True)
class Boolean(Transform):
    name: ClassVar[str] = "boolean"

    def from_pc(self, value: Any) -> bool | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)

    from_sf = from_pc


def _parse_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    try:
        return dt.datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise UnmappedValue(f"not an ISO 8601 date or date-time: {str(value)[:40]!r}") from None


def nearest_date(value: Any) -> dt.date:
    """The calendar date nearest to a date-time, taken in UTC (a value without offset counts as UTC).

    Why: Partner Center writes a closing date as the user's local midnight in UTC: real values read
    `2022-03-24T18:30:00Z` (India, the 25th), `2022-06-29T23:00:00Z` (Central Europe, the 30th),
    `2022-03-04T03:00:00Z` (Brazil, the 4th). The nearest UTC midnight is that local date for every offset
    from -11:59 to +12:00; taking the UTC date would put every deal east of UTC one day early.
    """
    moment = _parse_datetime(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return (moment + dt.timedelta(hours=12)).date()


@dataclass(frozen=True)
class Date(Transform):
    """Partner Center date-time <-> Salesforce Date (`YYYY-MM-DD` only: a time there fails the request).

    Read as the nearest date (`nearest_date`: local midnight written in UTC); written back as that date's
    UTC midnight, which reads back as the same date, so a date survives any number of round trips.
    """

    name: ClassVar[str] = "date"

    def from_pc(self, value: Any) -> str | None:
        if _blank(value):
            return None
        return nearest_date(value).isoformat()

    def from_sf(self, value: Any) -> str | None:
        if _blank(value):
            return None
        if isinstance(value, str) and len(value.strip()) == 10:
            return _parse_datetime(value).date().isoformat()  # a Salesforce Date: already the calendar date
        return nearest_date(value).isoformat()

    def to_pc(self, value: Any) -> str | None:
        return None if value is None else f"{value}T00:00:00Z"


@dataclass(frozen=True)
class DateTime(Transform):
    """Partner Center date-time <-> Salesforce DateTime, canonical as UTC to the second (`...Z`)."""

    name: ClassVar[str] = "datetime"

    def from_pc(self, value: Any) -> str | None:
        if _blank(value):
            return None
        moment = _parse_datetime(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    from_sf = from_pc


_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Currency(Transform):
    """An ISO 4217 code, upper case."""

    name: ClassVar[str] = "currency"

    def from_pc(self, value: Any) -> str | None:
        if _blank(value):
            return None
        code = str(value).strip().upper()
        if not _CURRENCY.match(code):
            raise UnmappedValue(f"{str(value)[:20]!r} is not an ISO 4217 currency code such as USD or EUR")
        return code

    from_sf = from_pc


@dataclass(frozen=True)
class Country(Transform):
    """ISO 3166 alpha-2 (Partner Center) <-> a Salesforce country name or code.

    Reading Salesforce accepts the picklist name, the code, or a known alias, in any case; writing uses
    `format` ("name": "Germany", "code": "DE").
    """

    name: ClassVar[str] = "country"
    format: str = "name"
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", build_index(dict(self.aliases)))

    def from_pc(self, value: Any) -> str | None:
        if _blank(value):
            return None
        code = str(value).strip().upper()
        if code not in COUNTRIES:
            raise UnmappedValue(f"{str(value)[:40]!r} is not an ISO 3166 alpha-2 country code")
        return code

    def from_sf(self, value: Any) -> str | None:
        if _blank(value):
            return None
        code = self._index.get(fold(str(value)))  # type: ignore[attr-defined]
        if code is None:
            raise UnmappedValue(
                f"the country {str(value)[:40]!r} is not one Partner Center knows: use the country's English "
                "name (for example Germany) or its two-letter code (DE)"
            )
        return code

    def to_sf(self, value: Any) -> str | None:
        if value is None:
            return None
        return COUNTRIES[value] if self.format == "name" else value


@dataclass(frozen=True)
class Table(Transform):
    """A value table (a picklist): canonical is the Partner Center value.

    Attributes:
        table: the table's name in the mapping (for messages).
        values: Partner Center value -> Salesforce value.
        default_sf: written to Salesforce for a Partner Center value the table lacks (None: refuse it).
        default_pc: read for a Salesforce value the table lacks (None: refuse it).
    """

    name: ClassVar[str] = "table"
    table: str = ""
    values: Mapping[str, str] = field(default_factory=dict)
    default_sf: str | None = None
    default_pc: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_reverse", {sf: pc for pc, sf in self.values.items()})

    def from_pc(self, value: Any) -> str | None:
        return None if _blank(value) else str(value)

    def from_sf(self, value: Any) -> str | None:
        if _blank(value):
            return None
        found = self._reverse.get(value, self.default_pc)  # type: ignore[attr-defined]
        if found is None:
            raise UnmappedValue(f"{str(value)[:60]!r} is not in the mapping's {self.table} table")
        return found

    def to_sf(self, value: Any) -> str | None:
        if value is None:
            return None
        found = self.values.get(value, self.default_sf)
        if found is None:
            raise UnmappedValue(f"{str(value)[:60]!r} is not in the mapping's {self.table} table")
        return found


@dataclass(frozen=True)
class Link(Transform):
    """A URL built from a referral value (`template` with `{id}`): Salesforce only, never read back to PC."""

    name: ClassVar[str] = "link"
    template: str = "{id}"

    def from_pc(self, value: Any) -> str | None:
        return None if _blank(value) else self.template.format(id=value)

    def from_sf(self, value: Any) -> str | None:
        return None if _blank(value) else str(value).strip()

    def to_pc(self, value: Any) -> Any:
        raise UnmappedValue("a link is built from the referral; it is never copied back to Partner Center")


@dataclass(frozen=True)
class Context:
    """What transform factories may need besides the field's own options."""

    tables: Mapping[str, Mapping[str, Any]]
    country_aliases: Mapping[str, str]
    sf_length: int | None = None
    """The Salesforce field's length from the org's describe, when known."""


def _text(spec: Mapping[str, Any], ctx: Context) -> Transform:
    return Text(max_length=spec.get("maxLength") or ctx.sf_length)


def _table(spec: Mapping[str, Any], ctx: Context) -> Transform:
    name = spec["table"]
    table = ctx.tables[name]
    return Table(table=name, values=dict(table["values"]),
                 default_sf=table.get("defaultSalesforce"), default_pc=table.get("defaultPartnerCenter"))


TRANSFORMS: dict[str, Callable[[Mapping[str, Any], Context], Transform]] = {
    "text": _text,
    "number": lambda spec, ctx: Number(scale=spec.get("scale", 2)),
    "boolean": lambda spec, ctx: Boolean(),
    "date": lambda spec, ctx: Date(),
    "datetime": lambda spec, ctx: DateTime(),
    "currency": lambda spec, ctx: Currency(),
    "country": lambda spec, ctx: Country(format=spec.get("format", "name"), aliases=dict(ctx.country_aliases)),
    "table": _table,
    "link": lambda spec, ctx: Link(template=spec["template"]),
}
"""Transform name (as written in the mapping file) -> factory from the field's options."""


def build(spec: Mapping[str, Any], ctx: Context) -> Transform:
    """The transform a field spec names (`text` when it names none).

    Raises:
        KeyError: the name is unknown, or a table it names does not exist (the loader reports both).
    """
    return TRANSFORMS[spec.get("transform", "text")](spec, ctx)


__all__ = [
    "TRANSFORMS",
    "Boolean",
    "Context",
    "Country",
    "Currency",
    "Date",
    "nearest_date",
    "DateTime",
    "Link",
    "Number",
    "Table",
    "Text",
    "Transform",
    "build",
]
