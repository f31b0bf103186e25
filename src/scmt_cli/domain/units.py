"""Parsing and formatting of sizes, rates and durations as users write them.

Sizes (:func:`parse_size`) return bytes:

* IEC units are powers of 1024: ``KiB MiB GiB TiB PiB`` and the one-letter
  forms ``K M G T P`` (as ``qemu-img`` reads them);
* SI units are powers of 1000: ``kB KB MB GB TB PB``;
* ``B`` or no unit means bytes.  Fractions are allowed (``1.5TiB``) and the
  result is rounded down to a whole byte.

Rates (:func:`parse_rate`) return bytes per second:

* bit rates are decimal: ``Kbit Mbit Gbit`` (also ``kbps Mbps Gbps``,
  ``Mb/s``): ``300Mbit`` is 300 000 000 bits/s = 37 500 000 bytes/s;
* byte rates: ``KB/s MB/s GB/s`` (decimal) and ``KiB/s MiB/s GiB/s``;
* ``unlimited`` (or ``0``) means no limit and returns ``math.inf``.

Durations (:func:`parse_duration`) return seconds: ``90s``, ``30m``,
``1h30m``, ``2d``, ``500ms``, ``1.5h``, a bare number of seconds, or
``HH:MM[:SS]``.

Bounds (a value outside is a :class:`ValueError`, never an overflow):

* sizes: at most :data:`MAX_SIZE` (1 EiB; vSphere disks end at 62 TB);
* durations: finite, at most :data:`MAX_DURATION` (366 days);
* rates: ``unlimited``, or between :data:`MIN_RATE` and :data:`MAX_RATE`.
  The floor is 1 Mbit/s (125 kB/s): below it one 4 MiB chunk of a copy
  takes more than 30 s and a 10 GiB disk more than a day, so a lower
  limit is nearly always a unit mistake (``1bit``, ``100`` bytes/s) that
  would stall a migration without a word rather than a real link.

Every parser raises :class:`ValueError` with a message that names the text
(shortened when long) and what was expected; callers turn it into a located
plan or usage error.
"""

from __future__ import annotations

import math
import re

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tib": 1024**4,
    "p": 1024**5,
    "pib": 1024**5,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
}

_BIT_RATE_UNITS: dict[str, float] = {
    "bit": 1,
    "bps": 1,
    "b/s": 1,
    "kbit": 1e3,
    "kbps": 1e3,
    "kb/s": 1e3,
    "mbit": 1e6,
    "mbps": 1e6,
    "mb/s": 1e6,
    "gbit": 1e9,
    "gbps": 1e9,
    "gb/s": 1e9,
    "tbit": 1e12,
    "tbps": 1e12,
}

_BYTE_RATE_UNITS: dict[str, float] = {
    "b/s": 1,
    "kb/s": 1e3,
    "mb/s": 1e6,
    "gb/s": 1e9,
    "kib/s": 1024,
    "mib/s": 1024**2,
    "gib/s": 1024**3,
}

_NUMBER = r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_SIZE_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[a-zA-Z]*)\s*$")
_RATE_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[a-zA-Z]+(?:/s)?|)\s*$")
_DUR_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DUR_FULL = re.compile(r"^\s*(?:[0-9]+(?:\.[0-9]*)?\s*(?:ms|s|m|h|d|w)\s*)+$", re.IGNORECASE)
_CLOCK_RE = re.compile(r"^\s*(?P<h>[0-9]{1,3}):(?P<m>[0-5][0-9])(?::(?P<s>[0-5][0-9]))?\s*$")
_DUR_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


#: The largest size accepted (1 EiB).
MAX_SIZE = 1 << 60
#: The longest duration accepted (366 days).
MAX_DURATION = 366 * 86400.0
#: The lowest rate limit accepted: 1 Mbit/s (see the module doc for why).
MIN_RATE = 125_000.0
#: The highest finite rate accepted (8 Tbit/s); above it, write ``unlimited``.
MAX_RATE = 1e12


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 400-digit number is not echoed whole)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}...({len(text)} chars)"


def parse_size(text: str | int) -> int:
    """``"8GiB"`` -> 8589934592.  Integers pass through (they are bytes)."""
    try:
        value = _parse_size(text)
    except OverflowError:
        value = MAX_SIZE + 1
    if value > MAX_SIZE:
        raise ValueError(f"size {shown(text)} is too large (at most 1 EiB)")
    return value


def parse_rate(text: str | int | float) -> float:
    """``"300Mbit"`` -> 37500000.0 bytes/s; ``"unlimited"`` (or 0) -> ``math.inf``."""
    try:
        value = _parse_rate(text)
    except OverflowError:
        value = math.nan
    if math.isinf(value):
        return value
    if math.isnan(value) or value > MAX_RATE:
        raise ValueError(f"rate {shown(text)} is too large (at most 8 Tbit/s); write unlimited for no limit")
    if value < MIN_RATE:
        raise ValueError(f"rate {shown(text)} is {value:g} bytes/s, below the floor of 1 Mbit/s (125 kB/s): at such "
                         "a rate one 4 MiB chunk takes over 30 s (a unit mistake?); write unlimited for no limit")
    return value


def parse_duration(text: str | int | float) -> float:
    """``"1h30m"`` -> 5400.0 seconds."""
    try:
        value = _parse_duration(text)
    except OverflowError:
        value = math.inf
    if not value <= MAX_DURATION:  # also NaN
        raise ValueError(f"duration {shown(text)} is too long (at most 366 days)")
    return value


def _parse_size(text: str | int) -> int:
    if isinstance(text, bool):
        raise ValueError(f"expected a size like 8GiB, got {shown(text)}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {shown(text)}")
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected a size like 8GiB, got {shown(text)}")
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"expected a size like 500GiB, 8G or 1.5TB, got {shown(text)}")
    unit = m.group("unit")
    if len(unit) == 2 and unit[1] == "b" and unit[0].lower() in "kmgtp":
        raise ValueError(f"{shown(text)} looks like bits; sizes are bytes: write {m.group('num')}{unit[0].upper()}B")
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(
            f"unknown size unit {shown(unit)} in {shown(text)}: use B, KiB, MiB, GiB, TiB (1024) or KB, MB, GB, "
            "TB (1000)")
    return int(float(m.group("num")) * factor)


def _parse_rate(text: str | int | float) -> float:
    if isinstance(text, bool):
        raise ValueError(f"expected a rate like 300Mbit, got {shown(text)}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"a rate cannot be negative: {shown(text)}")
        return math.inf if text == 0 else float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a rate like 300Mbit, got {shown(text)}")
    if text.strip().lower() in ("unlimited", "none", "0"):
        return math.inf
    m = _RATE_RE.match(text)
    if not m:
        raise ValueError(f"expected a rate like 300Mbit, 2Gbit or 50MB/s, got {shown(text)}")
    num = float(m.group("num"))
    if not math.isfinite(num):
        raise OverflowError(text)  # a number too long for a float: reported as too large
    unit = m.group("unit")
    low = unit.lower()
    if low == "":
        value = num  # bytes per second
    elif "/s" in low and unit[-3:-2] == "B" or low.endswith("ib/s"):
        factor = _BYTE_RATE_UNITS.get(low)
        if factor is None:
            raise ValueError(f"unknown rate unit {shown(unit)} in {shown(text)}")
        value = num * factor
    else:
        bits = _BIT_RATE_UNITS.get(low)
        if bits is None:
            raise ValueError(
                f"unknown rate unit {shown(unit)} in {shown(text)}: use Kbit, Mbit, Gbit (bits/s) or KB/s, MB/s, "
                "MiB/s (bytes/s)")
        value = num * bits / 8.0
    if value == 0:
        return math.inf
    return value


def _parse_duration(text: str | int | float) -> float:
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like 30m, got {shown(text)}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {shown(text)}")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like 30m, got {shown(text)}")
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        pass
    else:
        if value < 0 or math.isnan(value):
            raise ValueError(f"a duration cannot be negative: {shown(text)}")
        return value
    clock = _CLOCK_RE.match(stripped)
    if clock:
        return int(clock.group("h")) * 3600.0 + int(clock.group("m")) * 60.0 + int(clock.group("s") or 0)
    if not _DUR_FULL.match(stripped):
        raise ValueError(f"expected a duration like 90s, 30m, 1h30m or 2d, got {shown(text)}")
    return sum(float(n) * _DUR_SECONDS[u.lower()] for n, u in _DUR_PART.findall(stripped))


def format_size(n: float) -> str:
    """Bytes as a short IEC string: ``1.50 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """Bytes/s as ``MiB/s`` (what disk people read) with the bit rate: ``35.8 MiB/s (300 Mbit/s)``."""
    if math.isinf(bytes_per_second):
        return "unlimited"
    mib = bytes_per_second / 1024**2
    mbit = bytes_per_second * 8 / 1e6
    return f"{mib:.1f} MiB/s ({mbit:.0f} Mbit/s)"


def format_duration(seconds: float) -> str:
    """``3725`` -> ``1h02m05s``; under a minute keeps one decimal: ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    total = int(round(seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s"
