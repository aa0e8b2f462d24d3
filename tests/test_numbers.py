"""Numbers read as people write them, never silently a thousand times off: the file's
delimiter says which separator groups thousands, a count cannot be a fraction, a value with
two readings is said to be ambiguous, and money in another currency is converted by a dated
rates file or refused."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.currency import load_currency_rates
from stages.importing.values import AmbiguousNumber, parse_number, read_money

RATES = load_currency_rates().usd_per_unit


@pytest.mark.parametrize(
    ("raw", "european", "integer", "expected"),
    [
        ("3.400", False, True, 3400),  # a count cannot be 3.4
        ("1.100", False, True, 1100),
        ("3,400", True, True, 3400),
        ("3.400", True, False, 3400),  # a semicolon file groups with dots
        ("1,200", False, False, 1200),  # a comma file groups with commas
        ("0.400", False, False, 0.4),
        ("3.45", True, False, 3.45),
        ("1,5", False, False, 1.5),
        ("3.4k", False, True, 3400),
        ("3,4k", True, True, 3400),
        ("10-25", False, True, 17.5),  # a range's midpoint may be a fraction
    ],
)
def test_separators_are_read_by_the_files_convention_and_the_fields_kind(
    raw, european, integer, expected
):
    assert parse_number(raw, european=european, integer=integer) == expected


@pytest.mark.parametrize(("raw", "european"), [("3.400", False), ("1,500", True)])
def test_a_value_with_two_readings_is_ambiguous_not_guessed(raw, european):
    with pytest.raises(AmbiguousNumber, match="could be"):
        parse_number(raw, european=european)


def test_a_count_never_takes_a_fraction():
    with pytest.raises(ValueError, match="not a whole number"):
        parse_number("3.4", integer=True)


def test_a_currency_is_refused_where_a_plain_number_is_needed():
    with pytest.raises(ValueError, match="has a currency"):
        parse_number("$500")


@pytest.mark.parametrize(
    ("raw", "expected", "converted"),
    [
        ("$3.4M", 3_400_000, False),
        ("3.4M USD", 3_400_000, False),
        ("$1M - $5M", 3_000_000, False),
        ("SEK 300m", 300_000_000 * RATES["SEK"], True),
        ("€ 5m", 5_000_000 * RATES["EUR"], True),
        ("1.2bn EUR", 1_200_000_000 * RATES["EUR"], True),
    ],
)
def test_money_in_another_currency_is_converted_with_a_note(raw, expected, converted):
    value, note = read_money(raw, european=False, currency="USD", usd_per_unit=RATES)
    assert value == pytest.approx(expected)
    assert (note is not None) == converted
    if converted:
        assert "converted from" in note


@pytest.mark.parametrize(
    ("raw", "why"), [("XYZ 5m", "does not list"), ("300 kr", "write the code")]
)
def test_an_unknown_currency_is_refused_not_taken_as_the_icps(raw, why):
    with pytest.raises(ValueError, match=why):
        read_money(raw, european=False, currency="USD", usd_per_unit=RATES)


def _grouped(n: int, separator: str) -> str:
    return f"{n:,}".replace(",", separator)


@st.composite
def written_numbers(draw) -> tuple[int, str]:
    """A whole number and one way a person might write it, in either convention."""
    n = draw(st.integers(min_value=0, max_value=10**12))
    style = draw(st.sampled_from(["plain", "comma", "dot", "space", "apostrophe", "suffix"]))
    if style == "plain":
        return n, str(n)
    if style == "suffix":
        for suffix, size in (("bn", 10**9), ("m", 10**6), ("k", 10**3)):
            if n >= size and n % (size // 10) == 0:
                mantissa = f"{n / size:g}"
                decimal = draw(st.sampled_from([".", ","]))
                return n, mantissa.replace(".", decimal) + suffix
        return n, str(n)
    separator = {"comma": ",", "dot": ".", "space": " ", "apostrophe": "'"}[style]
    return n, _grouped(n, separator)


@given(written_numbers(), st.booleans(), st.booleans())
def test_the_reader_is_never_a_factor_of_a_thousand_off(written, european, integer):
    n, text = written
    try:
        value = parse_number(text, european=european, integer=integer)
    except ValueError:
        return  # refused or ambiguous, and said so: never a silent wrong value
    assert value == pytest.approx(n)


def test_a_conversion_note_names_the_rates_it_used() -> None:
    rates = load_currency_rates()
    value, note = read_money(
        "SEK 300m",
        european=False,
        currency="USD",
        usd_per_unit=rates.usd_per_unit,
        rates_date=rates.date,
    )
    assert note == (
        f"converted from SEK to USD at the rates of {rates.date.isoformat()}: {value:,.0f}"
    )
