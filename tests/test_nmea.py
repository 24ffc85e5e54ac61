"""The pure NMEA parser: bytes in (however the transport splits them), `Fix` values out."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from functools import reduce
from operator import xor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.fix import Fix, TimeSource
from agent.geo import distance_m
from agent.nmea import MAX_LINE, UERE_M, NmeaParser
from simulators.nmea import checksum, gga, rmc

CORPUS = Path(__file__).resolve().parent / "corpus" / "gpsd-nmea"

# 2025-12-31T23:59:57Z: the cycles below cross midnight and a new year, so the date must
# come from each cycle's own RMC.
T0 = 1_767_225_597_000
LAT, LON = 29.265, 106.255


def cycle(
    time_ms: int,
    lat: float = LAT,
    lon: float = LON,
    *,
    speed: float = 1.3,
    hdop: float = 0.9,
    quality: int = 1,
    valid: bool = True,
    rmc_first: bool = False,
) -> bytes:
    g = gga(time_ms, lat, lon, hdop=hdop, quality=quality, satellites=11)
    r = rmc(time_ms, lat, lon, speed_mps=speed, course_deg=45.0, valid=valid)
    return (r + g if rmc_first else g + r).encode("ascii")


def stream(n: int = 6) -> tuple[bytes, list[tuple[int, float, float, float, float]]]:
    """n 1 Hz cycles along a short walk; returns the bytes and (time, lat, lon, speed, hdop)."""
    truth = []
    data = b""
    for i in range(n):
        t = T0 + i * 1000
        lat, lon = LAT + i * 1.1e-5, LON - i * 0.7e-5
        speed, hdop = 1.0 + 0.1 * i, 0.8 + 0.15 * i
        truth.append((t, lat, lon, speed, hdop))
        data += cycle(t, lat, lon, speed=speed, hdop=hdop, rmc_first=i % 2 == 1)
    return data, truth


def feed_chunks(data: bytes, cuts: list[int]) -> tuple[list[Fix], NmeaParser]:
    parser = NmeaParser()
    out: list[Fix] = []
    edges = [0, *sorted(cuts), len(data)]
    for a, b in itertools.pairwise(edges):
        out += parser.feed(data[a:b])
    return out, parser


def sentence(body: str) -> bytes:
    return f"${body}*{checksum(body)}\r\n".encode("ascii")


# --------------------------------------------------------------------------- chunking


def test_whole_buffer_and_byte_at_a_time_give_identical_fixes() -> None:
    data, truth = stream(8)
    whole = NmeaParser().feed(data)
    assert len(whole) == len(truth)
    parser = NmeaParser()
    bytewise: list[Fix] = []
    for b in data:
        bytewise += parser.feed(bytes([b]))
    assert bytewise == whole
    assert parser.stats.fixes == len(truth)
    assert parser.stats.sentences == 2 * len(truth)
    assert parser.stats.malformed == parser.stats.bad_checksum == 0


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_chunking_gives_identical_fixes(data: st.DataObject) -> None:
    raw, _ = stream(5)
    # a no-fix cycle, a bad checksum line, short and long glued garbage make it richer
    raw += (
        cycle(T0 + 10_000, quality=0)
        + b"\x00junk"
        + cycle(T0 + 11_000)
        + b"$GNGGA,bad*00\r\n"
        + b"\x01" * 90  # long glued garbage: with the GGA it exceeds MAX_LINE
        + cycle(T0 + 12_000)
        + cycle(T0 + 13_000, rmc_first=True)
    )
    whole = NmeaParser().feed(raw)
    assert [f.time_ms - T0 for f in whole] == [0, 1000, 2000, 3000, 4000, 11_000, 12_000, 13_000]
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=40), label="cuts")
    chunked, _ = feed_chunks(raw, cuts)
    assert chunked == whole


# --------------------------------------------------------------------------- values


def test_fix_values_time_position_speed_accuracy() -> None:
    data, truth = stream(6)
    parser = NmeaParser()
    fixes = parser.feed(data)
    assert len(fixes) == len(truth)
    for fix, (t, lat, lon, speed, hdop) in zip(fixes, truth, strict=True):
        assert fix.time_ms == t
        assert distance_m(fix.lat, fix.lon, lat, lon) < 0.02
        assert fix.speed_mps == pytest.approx(speed, abs=0.005)
        assert fix.hdop == pytest.approx(hdop, abs=0.005)
        assert fix.accuracy_m == pytest.approx(fix.hdop * UERE_M)
        assert fix.satellites == 11
        assert fix.time_source is TimeSource.GNSS
    # the stream crosses midnight: the date of each fix is that of its own RMC
    days = [dt.datetime.fromtimestamp(f.time_ms / 1000, dt.UTC).date() for f in fixes]
    assert days[0] == dt.date(2025, 12, 31)
    assert days[-1] == dt.date(2026, 1, 1)


def test_hemispheres_and_sub_second_time() -> None:
    t = T0 + 250  # hundredths of a second survive
    fixes = NmeaParser().feed(cycle(t, -33.8688, -151.2093))
    assert len(fixes) == 1
    assert fixes[0].time_ms == t
    assert distance_m(fixes[0].lat, fixes[0].lon, -33.8688, -151.2093) < 0.02


# --------------------------------------------------------------------------- no fix


@pytest.mark.parametrize(
    ("quality", "valid"), [(0, True), (1, False), (0, False)], ids=["gga-q0", "rmc-V", "both"]
)
def test_no_fix_cycle_gives_no_position(quality: int, valid: bool) -> None:
    parser = NmeaParser()
    assert parser.feed(cycle(T0, quality=quality, valid=valid)) == []
    assert parser.stats.no_fix_cycles == 1
    assert parser.stats.fixes == 0
    # and the next good cycle still parses
    assert len(parser.feed(cycle(T0 + 1000))) == 1


def test_receiver_no_fix_with_empty_fields_is_not_a_zero_position() -> None:
    parser = NmeaParser()
    data = sentence("GPGGA,235959.00,,,,,0,00,99.99,,,,,,") + sentence(
        "GPRMC,235959.00,V,,,,,,,311225,,,N"
    )
    assert parser.feed(data) == []
    assert parser.stats.no_fix_cycles == 1


# --------------------------------------------------------------------------- bad input


def test_bad_checksum_is_counted_and_skipped() -> None:
    good = cycle(T0)
    bad_gga = bytearray(gga(T0 + 1000, LAT, LON).encode())
    bad_gga[20] = ord("9") if bad_gga[20] != ord("9") else ord("8")  # a digit of the latitude
    parser = NmeaParser()
    fixes = parser.feed(
        good + bytes(bad_gga) + rmc(T0 + 1000, LAT, LON, speed_mps=1, course_deg=0).encode()
    )
    assert [f.time_ms for f in fixes] == [T0]  # the damaged cycle yields nothing
    assert parser.stats.bad_checksum == 1
    assert [f.time_ms for f in parser.feed(cycle(T0 + 2000) + cycle(T0 + 3000))] == [
        T0 + 2000,
        T0 + 3000,
    ]


@pytest.mark.parametrize(
    "garbage",
    [
        bytes(random.Random(7).randrange(256) for _ in range(300)).replace(b"$", b"#") + b"\n",
        b"A" * (MAX_LINE + 50),  # an over-long line with no newline at all
        "$GNGGA,héllo wörld,ünïcode*12\r\n".encode(),
        b"\xff\xfe\xfd\r\n",
    ],
    ids=["binary", "overlong", "non-ascii", "high-bytes"],
)
def test_garbage_is_counted_as_malformed_and_later_fixes_parse(garbage: bytes) -> None:
    parser = NmeaParser()
    assert parser.feed(garbage) == []
    assert parser.stats.malformed >= 1
    assert parser.stats.fixes == 0
    fixes = parser.feed(cycle(T0) + cycle(T0 + 1000))
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000]


def test_non_ascii_sentence_is_malformed() -> None:
    parser = NmeaParser()
    assert parser.feed("$GNGGA,é*00\r\n".encode()) == []
    assert parser.stats.malformed == 1
    assert parser.stats.sentences == 0


def test_garbage_glued_before_dollar_is_dropped() -> None:
    parser = NmeaParser()
    g = gga(T0, LAT, LON).encode()
    r = rmc(T0, LAT, LON, speed_mps=0.0, course_deg=0.0).encode()
    fixes = parser.feed(b"\x00\x13noise!" + g + b"#x" + r)
    assert len(fixes) == 1
    assert fixes[0].time_ms == T0
    assert parser.stats.bad_checksum == parser.stats.malformed == 0


def test_long_glued_garbage_then_sentence_split_by_transport() -> None:
    """A sentence that begins after long garbage on its line survives any split."""
    data = b"\x01" * 60 + cycle(T0)  # garbage + GGA is longer than MAX_LINE
    assert len(NmeaParser().feed(data)) == 1  # fed whole: the sentence after '$' parses
    parser = NmeaParser()
    out: list[Fix] = []
    for b in data:
        out += parser.feed(bytes([b]))
    assert len(out) == 1


# --------------------------------------------------------------------------- cycles


def test_gga_and_rmc_in_either_order_make_a_fix() -> None:
    parser = NmeaParser()
    fixes = parser.feed(cycle(T0) + cycle(T0 + 1000, rmc_first=True))
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000]


def test_sentences_of_different_cycles_do_not_combine() -> None:
    parser = NmeaParser()
    g1 = gga(T0, LAT, LON).encode()
    r2 = rmc(T0 + 1000, LAT, LON, speed_mps=1.0, course_deg=0.0).encode()
    g3 = gga(T0 + 2000, LAT, LON).encode()
    r4 = rmc(T0 + 3000, LAT, LON, speed_mps=1.0, course_deg=0.0).encode()
    assert parser.feed(g1 + r2 + g3 + r4) == []
    assert parser.stats.sentences == 4
    assert parser.stats.fixes == 0
    # a complete cycle after them still works
    assert [f.time_ms for f in parser.feed(cycle(T0 + 4000))] == [T0 + 4000]


def test_other_sentences_between_gga_and_rmc_do_not_break_the_cycle() -> None:
    g = gga(T0, LAT, LON).encode()
    r = rmc(T0, LAT, LON, speed_mps=0.0, course_deg=0.0).encode()
    gsa = sentence("GNGSA,A,3,10,28,09,13,,,,,,,,,1.8,0.9,1.5")
    parser = NmeaParser()
    assert len(parser.feed(g + gsa + r)) == 1
    assert parser.stats.sentences == 3


# --------------------------------------------------------------------------- fuzz


NMEA_ALPHABET = "$*,.-0123456789ABCDEFGLMNPRSVWZ\r\n"
nmea_ish = st.text(alphabet=NMEA_ALPHABET, max_size=300).map(lambda s: s.encode("ascii"))


@st.composite
def checksummed(draw: st.DrawFn) -> bytes:
    """Sentences with a correct checksum but arbitrary fields: the parser's deeper paths."""
    kind = draw(st.sampled_from(["GPGGA", "GNRMC", "GPGSA", "GPZDA", "P", "GPVTG"]))
    fields = draw(st.lists(st.text(alphabet="0123456789.-ANSEWVM", max_size=12), max_size=16))
    return sentence(",".join([kind, *fields]))


arbitrary = st.one_of(
    st.binary(max_size=400),
    nmea_ish,
    st.lists(checksummed(), max_size=6).map(b"".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(arbitrary, max_size=4))
def test_feed_never_raises_on_arbitrary_bytes(chunks: list[bytes]) -> None:
    parser = NmeaParser()
    for chunk in chunks:
        for fix in parser.feed(chunk):
            assert isinstance(fix, Fix)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arbitrary, st.booleans())
def test_arbitrary_bytes_then_a_valid_cycle_still_yields_it(junk: bytes, separate: bool) -> None:
    parser = NmeaParser()
    good = cycle(T0 + 100_000, rmc_first=separate)
    if separate:
        parser.feed(junk)
        fixes = parser.feed(good)
    else:
        fixes = parser.feed(junk + good)
    fixes = [f for f in fixes if f.time_ms == T0 + 100_000]
    assert len(fixes) == 1
    assert distance_m(fixes[0].lat, fixes[0].lon, LAT, LON) < 0.02


# --------------------------------------------------------------------------- corpus


def _nmea_sentences(data: bytes) -> list[list[str]]:
    """Checksum-valid sentences of a capture as field lists (an independent tiny reader)."""
    out = []
    for raw in data.splitlines():
        line = raw.strip()
        start = line.rfind(b"$")
        if start < 0 or b"*" not in line[start:]:
            continue
        body, _, cs = line[start + 1 :].rpartition(b"*")
        try:
            ok = int(cs[:2], 16) == reduce(xor, body, 0)
            text = body.decode("ascii")
        except (ValueError, UnicodeDecodeError):
            continue
        if ok:
            out.append(text.split(","))
    return out


def _tod(field: str) -> float | None:
    """A time-of-day field as seconds ("130711" and "130711.00" are the same instant)."""
    try:
        return round(float(field), 3)
    except ValueError:
        return None


def _capture_shape(data: bytes) -> tuple[bool, bool, bool]:
    """(has GGA, has RMC, has a GGA with fix and an RMC 'A' of the same time of day)."""
    sentences = _nmea_sentences(data)
    ggas = {
        _tod(f[1]) for f in sentences if f[0][-3:] == "GGA" and len(f) > 6 and f[6] not in ("", "0")
    }
    rmcs = {_tod(f[1]) for f in sentences if f[0][-3:] == "RMC" and len(f) > 2 and f[2] == "A"}
    has_gga = any(f[0][-3:] == "GGA" for f in sentences)
    has_rmc = any(f[0][-3:] == "RMC" for f in sentences)
    return has_gga, has_rmc, bool((ggas & rmcs) - {None})


def _gpsd_positions(log: Path) -> list[tuple[float, float]]:
    chk = log.with_name(log.name + ".chk")
    if not chk.exists():
        return []
    out = []
    for line in chk.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (
            report.get("class") == "TPV"
            and report.get("mode") in (2, 3)
            and isinstance(report.get("lat"), float | int)
            and isinstance(report.get("lon"), float | int)
        ):
            out.append((float(report["lat"]), float(report["lon"])))
    return out


LOGS = sorted(CORPUS.glob("*.log")) if CORPUS.is_dir() else []
MISSING = pytest.param(
    None, marks=pytest.mark.skip(reason=f"gpsd NMEA corpus not found at {CORPUS}")
)


def _shapes() -> dict[str, tuple[bool, bool, bool]]:
    return {log.name: _capture_shape(log.read_bytes()) for log in LOGS}


SHAPES = _shapes()
# captures our GGA+RMC parser cannot turn into fixes: no checksum-valid GGA or RMC at all,
# or never a GGA with fix and an RMC 'A' for the same time of day
SKIPPED_FOR_GGA_RMC = frozenset(name for name, shape in SHAPES.items() if not shape[2])


@pytest.mark.parametrize("log", LOGS or [MISSING], ids=lambda p: p.name if p else "missing")
def test_corpus_capture_parses_without_exception(log: Path) -> None:
    parser = NmeaParser()
    fixes = parser.feed(log.read_bytes())
    fixes += parser.feed(b"\r\n")  # flush a last line without newline
    s = parser.stats
    assert s.fixes == len(fixes)
    assert s.sentences + s.bad_checksum + s.malformed > 0  # it did read something
    for fix in fixes:
        assert -90 <= fix.lat <= 90 and -180 <= fix.lon <= 180
        assert fix.accuracy_m > 0
        assert (fix.lat, fix.lon) != (0.0, 0.0)
    if log.name in SKIPPED_FOR_GGA_RMC:
        assert fixes == [], "a capture without a matching GGA/RMC pair cannot yield a fix"


@pytest.mark.parametrize("log", LOGS or [MISSING], ids=lambda p: p.name if p else "missing")
def test_corpus_positions_agree_with_gpsd(log: Path) -> None:
    gpsd = _gpsd_positions(log)
    if log.name in SKIPPED_FOR_GGA_RMC or not gpsd:
        pytest.skip(f"{log.name}: no GGA/RMC fix pair, or gpsd reports no position")
    fixes = NmeaParser().feed(log.read_bytes())
    assert fixes, f"{log.name}: gpsd found positions, we found no fix"
    for fix in fixes[:5]:
        assert any(
            abs(fix.lat - lat) <= 1e-5 and abs(fix.lon - lon) <= 1e-5 for lat, lon in gpsd
        ), f"{log.name}: fix {fix.lat},{fix.lon} matches no gpsd position"


def test_corpus_comparison_is_not_vacuous() -> None:
    if not LOGS:
        pytest.skip(f"gpsd NMEA corpus not found at {CORPUS}")
    compared = [log for log in LOGS if log.name not in SKIPPED_FOR_GGA_RMC and _gpsd_positions(log)]
    assert len(compared) >= len(LOGS) // 2
    # the skip set is computed, and only holds captures lacking a usable pair
    assert all(not SHAPES[name][2] for name in SKIPPED_FOR_GGA_RMC)
    assert any(not (SHAPES[n][0] and SHAPES[n][1]) for n in SKIPPED_FOR_GGA_RMC)
