import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scmt_cli.domain.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_rate,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("512B", 512),
        ("1KiB", 1024),
        ("4M", 4 * 1024**2),
        ("8GiB", 8 * 1024**3),
        ("1.5TiB", int(1.5 * 1024**4)),
        ("500GB", 500 * 1000**3),
        ("1TB", 1000**4),
        (" 2 GiB ", 2 * 1024**3),
        (4096, 4096),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GiB", "8 parsecs", "-1", "8Gb", "1..2G", True, None, 3.5])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300Mbit", 37_500_000.0),
        ("300Mbps", 37_500_000.0),
        ("300Mb/s", 37_500_000.0),
        ("2Gbit", 250_000_000.0),
        ("50MB/s", 50_000_000.0),
        ("50MiB/s", 50 * 1024**2),
        ("125000", 125_000.0),
        ("1Mbit", 125_000.0),
    ],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["unlimited", "0", 0])
def test_parse_rate_unlimited(text):
    assert math.isinf(parse_rate(text))


@pytest.mark.parametrize("bad", ["fast", "300 furlongs", "-3Mbit", "Mbit"])
def test_parse_rate_rejects(bad):
    with pytest.raises(ValueError):
        parse_rate(bad)


@pytest.mark.parametrize("low", ["1bit", "1000", 100, "999Kbit", "100KB/s"])
def test_a_rate_below_the_floor_is_refused_with_the_reason(low):
    with pytest.raises(ValueError, match=r"below the floor of 1 Mbit/s \(125 kB/s\): at such a rate one 4 MiB chunk"):
        parse_rate(low)


BIG = int("9" * 400)


@pytest.mark.parametrize(
    ("fn", "value", "why"),
    [(parse_rate, BIG, "too large"), (parse_rate, str(BIG), "too large"), (parse_rate, f"{BIG}Mbit", "too large"),
     (parse_rate, 1e300, "too large"), (parse_duration, BIG, "too long"), (parse_duration, str(BIG), "too long"),
     (parse_duration, f"{BIG}h", "too long"), (parse_duration, "1e999", "too long"), (parse_duration, "367d", "too long"),
     (parse_size, BIG, "too large"), (parse_size, f"{BIG}GiB", "too large"), (parse_size, -BIG, "negative")],
)
def test_huge_numbers_are_value_errors_with_a_short_message(fn, value, why):
    with pytest.raises(ValueError, match=why) as info:
        fn(value)
    assert len(str(info.value)) < 200  # the 400 digits are not echoed whole


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("500ms", 0.5), ("12", 12), ("01:30", 5400),
     ("00:00:45", 45), ("1.5h", 5400)],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["soon", "5 minutes", "-5", "1h 30x", "nan"])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=2**50))
def test_size_integers_roundtrip(n):
    assert parse_size(f"{n}B") == n


@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.from_regex(r"[0-9]{300,420}[A-Za-z/]{0,5}")))
def test_parsers_only_raise_value_error(text):
    for fn in (parse_size, parse_rate, parse_duration):
        try:
            fn(text)
        except ValueError:
            pass


def test_formatting():
    assert format_size(1536 * 1024**2) == "1.50 GiB"
    assert format_size(10) == "10 B"
    assert format_duration(3725) == "1h02m05s"
    assert format_duration(65) == "1m05s"
    assert format_duration(4.24) == "4.2s"
