"""Table tests of the NMEA field conversions: text in, a typed value or None out."""

from __future__ import annotations

import datetime as dt
import math
import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gnss import fields as f
from contract.fix import Constellation

MUNICH_LAT = 48 + 7.038 / 60
MUNICH_LON = 11 + 31.0 / 60


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.5", 1.5),
        ("0", 0.0),
        ("-33.9", -33.9),
        (" 2.5 ", 2.5),
        ("", None),
        ("abc", None),
        ("1.2.3", None),
        ("nan", None),
        ("inf", None),
        ("-inf", None),
    ],
)
def test_num(text: str, expected: float | None) -> None:
    assert f.num(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("08", 8),
        ("12", 12),
        ("0", 0),
        ("-3", -3),
        (" 5", 5),
        ("", None),
        ("1.5", None),
        ("+5", None),
        ("x", None),
        ("-", None),
    ],
)
def test_integer(text: str, expected: int | None) -> None:
    assert f.integer(text) == expected


def test_integer_with_several_minus_signs_is_none() -> None:
    assert f.integer("--5") is None


# --------------------------------------------------------------------------- coordinates


@pytest.mark.parametrize(
    ("value", "hemi", "digits", "expected"),
    [
        ("4807.038", "N", 2, MUNICH_LAT),
        ("4807.038", "S", 2, -MUNICH_LAT),
        ("01131.000", "E", 3, MUNICH_LON),
        ("01131.000", "W", 3, -MUNICH_LON),
        ("4807", "N", 2, 48 + 7 / 60),  # no decimals
        ("0000.000", "N", 2, 0.0),
        ("0030.000", "S", 2, -0.5),
        ("4859.9999", "N", 2, 48 + 59.9999 / 60),
        ("9000.000", "N", 2, 90.0),
        ("9000.000", "S", 2, -90.0),
        ("18000.000", "W", 3, -180.0),
        ("3345.000", "S", 2, -33.75),
    ],
)
def test_coordinate_values_and_hemispheres(
    value: str, hemi: str, digits: int, expected: float
) -> None:
    got = f.coordinate(value, hemi, digits)
    assert got is not None
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("value", "hemi", "digits"),
    [
        ("4860.000", "N", 2),  # minutes >= 60
        ("4875.5", "N", 2),
        ("01160.000", "E", 3),
        ("", "N", 2),  # empty value: never 0.0
        ("4807.038", "", 2),  # empty hemisphere
        ("", "", 2),
        ("4807.038", "X", 2),
        ("4807.038", "n", 2),
        ("48a7.038", "N", 2),
        ("12", "N", 2),  # no room for minutes
        ("-4807.038", "N", 2),
        ("4807.0.3", "N", 2),
        ("4807.-38", "N", 2),
        ("4807.038e5", "N", 2),
        ("9100.000", "N", 2),  # beyond the pole
        ("9000.001", "N", 2),
        ("18100.000", "E", 3),
        ("18000.001", "E", 3),
        ("garbage", "E", 3),
    ],
)
def test_coordinate_refuses(value: str, hemi: str, digits: int) -> None:
    assert f.coordinate(value, hemi, digits) is None


# --------------------------------------------------------------------------- time of day


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("000000", 0),
        ("123519", (12 * 3600 + 35 * 60 + 19) * 1000),
        ("123519.5", (12 * 3600 + 35 * 60 + 19) * 1000 + 500),
        ("123519.25", (12 * 3600 + 35 * 60 + 19) * 1000 + 250),
        ("123519.438", (12 * 3600 + 35 * 60 + 19) * 1000 + 438),
        ("000231.099", (2 * 60 + 31) * 1000 + 99),
        ("235959.999", 86_400_000 - 1),
        ("235960", 86_400_000),  # a leap second is accepted
        ("24000", None),
        ("240000", None),  # hour 24
        ("250000.00", None),
        ("236000", None),  # minute 60
        ("123561", None),  # second 61
        ("123599", None),
        ("12351", None),  # too short
        ("", None),
        ("12a519", None),
        ("123519.x", None),
        ("123519,00", None),
        ("-12351", None),
    ],
)
def test_time_of_day_ms(text: str, expected: int | None) -> None:
    assert f.time_of_day_ms(text) == expected


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("311225", dt.date(2025, 12, 31)),
        ("010126", dt.date(2026, 1, 1)),
        ("220899", dt.date(1999, 8, 22)),  # the april6_2019 receiver's rollover date
        ("060419", dt.date(2019, 4, 6)),
        ("010180", dt.date(1980, 1, 1)),  # pivot: 80 and later are 19xx
        ("311279", dt.date(2079, 12, 31)),  # 79 and earlier are 20xx
        ("010100", dt.date(2000, 1, 1)),
        ("290224", dt.date(2024, 2, 29)),
        ("290223", None),  # not a leap year
        ("2208-1", None),  # from the corpus
        ("", None),
        ("22089", None),
        ("2208999", None),
        ("320125", None),
        ("011325", None),
        ("000125", None),
        ("010025", None),
        ("ddmmyy", None),
    ],
)
def test_date_ddmmyy(text: str, expected: dt.date | None) -> None:
    assert f.date_ddmmyy(text) == expected


@pytest.mark.parametrize(
    ("day", "month", "year", "expected"),
    [
        ("31", "12", "2025", dt.date(2025, 12, 31)),
        ("01", "01", "2026", dt.date(2026, 1, 1)),
        ("1", "2", "2025", dt.date(2025, 2, 1)),
        ("22", "08", "1999", dt.date(1999, 8, 22)),
        ("29", "02", "2024", dt.date(2024, 2, 29)),
        ("29", "02", "2023", None),
        ("31", "12", "25", None),  # the year must have four digits
        ("31", "12", "02025", None),
        ("", "12", "2025", None),
        ("31", "", "2025", None),
        ("31", "12", "", None),
        ("-1", "12", "2025", None),
        ("32", "01", "2025", None),
        ("01", "13", "2025", None),
        ("00", "01", "2025", None),
        # fuzz reproducer ($GPZDA,,3,11111111111,1994): datetime raised OverflowError
        ("3", "11111111111", "1994", None),
        ("99999999999999999999", "1", "1994", None),
        ("001", "01", "2025", None),
    ],
)
def test_date_zda(day: str, month: str, year: str, expected: dt.date | None) -> None:
    assert f.date_zda(day, month, year) == expected


@pytest.mark.parametrize(
    ("date", "tod", "expected"),
    [
        (dt.date(1970, 1, 1), 0, 0),
        (dt.date(1970, 1, 2), 1, 86_400_001),
        (dt.date(2025, 12, 31), 86_399_000, 1_767_225_599_000),
        (dt.date(1969, 12, 31), 0, -86_400_000),
    ],
)
def test_epoch_ms(date: dt.date, tod: int, expected: int) -> None:
    assert f.epoch_ms(date, tod) == expected


# --------------------------------------------------------------------------- constellations


@pytest.mark.parametrize(
    ("prn", "expected"),
    [
        (1, Constellation.GPS),
        (32, Constellation.GPS),
        (33, Constellation.SBAS),
        (64, Constellation.SBAS),
        (65, Constellation.GLONASS),
        (96, Constellation.GLONASS),
        (97, Constellation.UNKNOWN),
        (119, Constellation.UNKNOWN),
        (120, Constellation.SBAS),
        (158, Constellation.SBAS),
        (159, Constellation.UNKNOWN),
        (192, Constellation.UNKNOWN),
        (193, Constellation.QZSS),
        (200, Constellation.QZSS),
        (201, Constellation.BEIDOU),
        (263, Constellation.BEIDOU),
        (264, Constellation.UNKNOWN),
        (300, Constellation.UNKNOWN),
        (301, Constellation.GALILEO),
        (336, Constellation.GALILEO),
        (337, Constellation.UNKNOWN),
        (400, Constellation.UNKNOWN),
        (401, Constellation.BEIDOU),
        (437, Constellation.BEIDOU),
        (438, Constellation.UNKNOWN),
        (0, Constellation.UNKNOWN),
        (-1, Constellation.UNKNOWN),
    ],
)
def test_constellation_of_prn(prn: int, expected: Constellation) -> None:
    assert f.constellation_of_prn(prn) is expected


def test_talkers_and_system_ids() -> None:
    assert f.TALKERS["GP"] is Constellation.GPS
    assert f.TALKERS["GL"] is Constellation.GLONASS
    assert f.TALKERS["GA"] is Constellation.GALILEO
    assert f.TALKERS["GB"] is f.TALKERS["BD"] is Constellation.BEIDOU
    assert f.TALKERS["GQ"] is Constellation.QZSS
    assert "GN" not in f.TALKERS  # multi-constellation: decided by system id or PRN
    assert [f.SYSTEM_IDS[i] for i in range(1, 7)] == [
        Constellation.GPS,
        Constellation.GLONASS,
        Constellation.GALILEO,
        Constellation.BEIDOU,
        Constellation.QZSS,
        Constellation.NAVIC,
    ]


def test_knot() -> None:
    assert math.isclose(f.KNOT_MPS * 3600, 1852.0)


# --------------------------------------------------------------------------- never raise


ascii_text = st.text(alphabet=string.printable, max_size=14)
field_text = st.text(alphabet="0123456789.-+ eENSWnan", max_size=14)
fuzz_text = st.one_of(ascii_text, field_text)


@settings(max_examples=200, deadline=None)
@given(fuzz_text, fuzz_text, st.sampled_from([2, 3]))
def test_coordinate_never_raises_and_stays_on_earth(value: str, hemi: str, digits: int) -> None:
    got = f.coordinate(value, hemi, digits)
    if got is not None:
        assert math.isfinite(got)
        assert abs(got) <= (90 if digits == 2 else 180)


@settings(max_examples=200, deadline=None)
@given(fuzz_text, fuzz_text, fuzz_text)
def test_time_and_date_fields_never_raise(a: str, b: str, c: str) -> None:
    tod = f.time_of_day_ms(a)
    assert tod is None or 0 <= tod <= 86_400_000
    assert f.date_ddmmyy(a) is None or isinstance(f.date_ddmmyy(a), dt.date)
    assert f.date_zda(a, b, c) is None or isinstance(f.date_zda(a, b, c), dt.date)
    got = f.num(a)
    assert got is None or math.isfinite(got)


@pytest.mark.parametrize(
    "call",
    [
        lambda: f.time_of_day_ms("²²²²²²"),
        lambda: f.date_ddmmyy("²²²²²²"),
        lambda: f.integer("²"),
    ],
    ids=["time_of_day_ms", "date_ddmmyy", "integer"],
)
def test_non_ascii_digits_give_none(call: Callable[[], object]) -> None:
    assert call() is None


# --------------------------------------------------------------------------- figures out of sense


def test_integer_too_long_for_a_field_is_none() -> None:
    assert f.integer("1" * 20) == int("1" * 20)
    assert f.integer("1" * 21) is None
    assert f.integer("9" * 5000) is None  # int() refuses past 4,300 digits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.9", 0.9),
        ("0", 0.0),
        ("99.99", 99.99),
        ("-1", None),  # fuzz reproducer: a negative HDOP made a negative accuracy
        ("-0.5", None),
        ("nan", None),
        ("inf", None),
        ("1e308", None),  # × UERE would be infinite
        ("", None),
    ],
)
def test_dop_is_a_sensible_figure_or_none(text: str, expected: float | None) -> None:
    assert f.dop(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5", 1.5), ("0", 0.0), ("-2.0", None), ("1e308", None), ("nan", None)],
)
def test_error_m_is_a_sensible_figure_or_none(text: str, expected: float | None) -> None:
    assert f.error_m(text) == expected
