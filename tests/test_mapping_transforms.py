"""Every transform, both ways, and the round-trip rule that keeps the sync loop-free."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.mapping.countries import COUNTRIES
from shared.mapping.errors import UnmappedValue
from shared.mapping.transforms import (
    Boolean,
    Context,
    Country,
    Currency,
    Date,
    DateTime,
    Link,
    Number,
    Table,
    Text,
    build,
)


def test_text_normalises_and_cuts_to_the_salesforce_length() -> None:
    text = Text(max_length=10)
    assert text.from_pc("  line one\r\nline two  ") == "line one\nline two"
    assert text.from_pc("   ") is None and text.from_sf("") is None and text.from_pc(None) is None
    assert text.to_sf("abcdefghijKLM") == "abcdefghij"
    assert text.to_pc("kept whole") == "kept whole"
    # A Partner Center value longer than the field compares equal to what Salesforce reads back.
    assert text.pc_canonical("abcdefghijKLM") == text.from_sf(text.to_sf("abcdefghijKLM")) == "abcdefghij"


def test_text_takes_the_length_from_the_org_describe_when_the_mapping_gives_none() -> None:
    assert build({"transform": "text"}, Context({}, {}, sf_length=5)).to_sf("123456789") == "12345"
    assert build({"transform": "text", "maxLength": 3}, Context({}, {}, sf_length=5)).to_sf("123456") == "123"


def test_number_rounds_to_scale_and_keeps_integers_integral() -> None:
    number = Number(scale=2)
    assert number.from_pc(48000) == 48000 and isinstance(number.from_sf(48000.0), int)
    assert number.from_sf("1234.5678") == 1234.57
    assert number.to_sf(125000) == 125000 and number.to_pc(99.5) == 99.5
    assert number.from_pc(None) is None and number.from_sf("") is None
    with pytest.raises(UnmappedValue):
        number.from_pc(True)
    with pytest.raises(UnmappedValue):
        number.from_sf("a lot")


def test_boolean_both_ways() -> None:
    boolean = Boolean()
    assert boolean.from_pc(True) is True and boolean.from_sf(False) is False
    assert boolean.from_sf("true") is True and boolean.from_pc("no") is False
    assert boolean.from_pc(None) is None
    assert boolean.to_sf(True) is True and boolean.to_pc(False) is False


def test_date_takes_the_nearest_date_and_writes_midnight_utc_to_partner_center() -> None:
    date = Date()
    assert date.from_pc("2027-03-15T00:00:00Z") == "2027-03-15"
    assert date.from_pc("2027-03-14T23:00:00-08:00") == "2027-03-15"  # 07:00 UTC on the 15th
    assert date.from_pc("2027-03-15T10:11:12.123Z") == "2027-03-15"
    assert date.from_sf("2027-03-15") == "2027-03-15"
    assert date.to_sf("2027-03-15") == "2027-03-15"  # a Date field takes YYYY-MM-DD only
    assert date.to_pc("2027-03-15") == "2027-03-15T00:00:00Z"
    assert date.to_pc(None) is None and date.from_sf(None) is None
    with pytest.raises(UnmappedValue):
        date.from_sf("15/03/2027")


def test_a_local_midnight_written_in_utc_is_that_local_date() -> None:
    """Real closing dates (Microsoft Learn, Get a list of referrals; captured responses) are local midnights."""
    date = Date()
    assert date.from_pc("2022-03-24T18:30:00Z") == "2022-03-25"  # India, UTC+5:30
    assert date.from_pc("2022-06-29T23:00:00Z") == "2022-06-30"  # Central Europe, UTC+1
    assert date.from_pc("2022-03-04T03:00:00Z") == "2022-03-04"  # Brazil, UTC-3
    assert date.from_pc("2022-03-04T00:00:00+05:30") == "2022-03-04"  # the same midnight with its offset


def test_a_closing_date_survives_round_trips_for_every_offset_users_have() -> None:
    """From -11:30 to +12:00 by half hours: read, written back, read again: the same date each time."""
    date = Date()
    for half_hours in range(-23, 25):
        local_midnight = dt.datetime(2027, 3, 15, tzinfo=dt.timezone(dt.timedelta(minutes=30 * half_hours)))
        text = local_midnight.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        first = date.pc_canonical(text)
        assert first == "2027-03-15", text
        assert date.pc_canonical(date.to_pc(date.from_sf(date.to_sf(first)))) == first


def test_datetime_compares_instants_in_utc() -> None:
    moment = DateTime()
    assert moment.from_sf("2026-11-20T09:14:03.000+0000") == "2026-11-20T09:14:03Z"
    assert moment.from_pc("2026-11-20T10:14:03+01:00") == "2026-11-20T09:14:03Z"
    assert moment.from_pc("2026-11-20T09:14:03") == "2026-11-20T09:14:03Z"  # naive = UTC
    assert moment.to_sf("2026-11-20T09:14:03Z") == moment.to_pc("2026-11-20T09:14:03Z") == "2026-11-20T09:14:03Z"


def test_currency_is_an_upper_case_iso_code() -> None:
    currency = Currency()
    assert currency.from_pc("eur") == "EUR" and currency.from_sf(" usd ") == "USD"
    assert currency.to_sf("EUR") == currency.to_pc("EUR") == "EUR"
    with pytest.raises(UnmappedValue, match="ISO 4217"):
        currency.from_sf("Euro")


def test_country_alpha2_to_picklist_names_and_back_from_names_codes_and_aliases() -> None:
    assert len(COUNTRIES) == 249
    country = Country(format="name", aliases={"Bundesrepublik": "DE"})
    assert country.to_sf(country.from_pc("de")) == "Germany"
    assert country.from_sf("Germany") == "DE"
    assert country.from_sf("germany ") == "DE"
    assert country.from_sf("DE") == "DE"
    assert country.from_sf("U.S.A.") == "US"
    assert country.from_sf("United Kingdom") == "GB" and country.from_sf("UK") == "GB"
    assert country.from_sf("Curacao") == "CW"  # accents folded
    assert country.from_sf("Bundesrepublik") == "DE"  # an alias from the mapping file
    assert country.to_pc("DE") == "DE"
    assert Country(format="code").to_sf("DE") == "DE"
    with pytest.raises(UnmappedValue, match="two-letter code"):
        country.from_sf("Atlantis")
    with pytest.raises(UnmappedValue, match="alpha-2"):
        country.from_pc("XX")


def test_every_country_name_reads_back_as_its_code() -> None:
    country = Country()
    assert all(country.from_sf(country.to_sf(code)) == code for code in COUNTRIES)


def test_table_both_ways_with_defaults_and_round_trip() -> None:
    table = Table(table="assistance", values={"Unknown": "Not specified", "QuotesOrLicensing": "Quotes"},
                  default_sf="Not specified")
    assert table.to_sf("QuotesOrLicensing") == "Quotes"
    assert table.from_sf("Quotes") == "QuotesOrLicensing"
    assert table.to_pc("QuotesOrLicensing") == "QuotesOrLicensing"
    # A code Microsoft added later is written as the default, and its canonical form is what reads back,
    # so the next sync does not see a change.
    assert table.to_sf("BrandNewCode") == "Not specified"
    assert table.pc_canonical("BrandNewCode") == "Unknown"
    with pytest.raises(UnmappedValue, match="assistance table"):
        table.from_sf("Something else")
    strict = Table(table="t", values={"A": "a"})
    with pytest.raises(UnmappedValue):
        strict.to_sf("B")
    assert Table(table="t", values={"A": "a"}, default_pc="A").from_sf("zzz") == "A"


def test_link_is_built_from_the_id_and_never_goes_back() -> None:
    link = Link(template="https://example.test/referrals/{id}")
    assert link.pc_canonical("abc") == "https://example.test/referrals/abc"
    assert link.from_sf(" https://example.test/referrals/abc ") == "https://example.test/referrals/abc"
    with pytest.raises(UnmappedValue):
        link.to_pc("https://example.test/referrals/abc")


def test_build_names_every_transform_of_the_mapping_schema() -> None:
    ctx = Context({"t": {"values": {"A": "a"}}}, {})
    made = {name: build({"transform": name, "table": "t", "template": "{id}"}, ctx)
            for name in ("text", "number", "boolean", "date", "datetime", "currency", "country", "table", "link")}
    assert {name: t.name for name, t in made.items()} == {name: name for name in made}
    with pytest.raises(KeyError):
        build({"transform": "rot13"}, ctx)
