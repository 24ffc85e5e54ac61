"""The pure NMEA parser: bytes in (however the transport splits them), `Fix` values out.

A cycle is the run of sentences sharing a time of day (GSA/GSV/VTG join the cycle in
progress); its Fix is emitted when the next cycle starts, at flush(), or, once the parser
has learnt the sentence type a receiver ends its cycles with, as soon as that one arrives.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checkin.geo import distance_m
from agent.gnss.nmea import MAX_LINE, UERE_M, NmeaParser
from contract.fix import Constellation, Fix, FixMode, Quality, TimeSource
from simulators.nmea import checksum, gga, rmc

CORPUS = Path(__file__).resolve().parent / "corpus" / "gpsd-nmea"

# 2025-12-31T23:59:57Z: the cycles below cross midnight and a new year.
T0 = 1_767_225_597_000
LAT, LON = 29.265, 106.255
DAY_MS = 86_400_000

# hand-written sentences: a position with an exact decimal value
POS = "4807.038,N,01131.000,E"
POS_LAT, POS_LON = 48 + 7.038 / 60, 11 + 31.0 / 60


# --------------------------------------------------------------------------- writers


def sentence(body: str) -> bytes:
    return f"${body}*{checksum(body)}\r\n".encode("ascii")


def hms(time_ms: int) -> str:
    """The time of day of an epoch time as hhmmss.ss."""
    cs = (time_ms // 10) % (DAY_MS // 10)
    return f"{cs // 360_000:02d}{cs // 6000 % 60:02d}{cs // 100 % 60:02d}.{cs % 100:02d}"


def gga_s(
    t: str,
    pos: str = POS,
    *,
    q: str = "1",
    sats: str = "08",
    hdop: str = "0.9",
    alt: str = "545.4",
    talker: str = "GP",
) -> bytes:
    return sentence(f"{talker}GGA,{t},{pos},{q},{sats},{hdop},{alt},M,46.9,M,,")


def rmc_s(
    t: str,
    pos: str = POS,
    *,
    status: str = "A",
    knots: str = "10.0",
    course: str = "54.7",
    date: str = "311225",
    mode: str = "A",
    talker: str = "GP",
) -> bytes:
    return sentence(f"{talker}RMC,{t},{status},{pos},{knots},{course},{date},,,{mode}")


def gsa_s(
    prns: list[int],
    *,
    mode: int = 3,
    pdop: str = "1.8",
    hdop: str = "0.9",
    vdop: str = "1.5",
    system: int | None = None,
    talker: str = "GN",
) -> bytes:
    slots = [f"{p:02d}" for p in prns] + [""] * (12 - len(prns))
    tail = [] if system is None else [str(system)]
    return sentence(",".join([f"{talker}GSA", "A", str(mode), *slots, pdop, hdop, vdop, *tail]))


def gll_s(t: str, pos: str = POS, *, status: str = "A", mode: str = "A") -> bytes:
    return sentence(f"GPGLL,{pos},{t},{status},{mode}")


def gns_s(t: str, pos: str = POS, *, modes: str = "AA", hdop: str = "0.9") -> bytes:
    return sentence(f"GNGNS,{t},{pos},{modes},10,{hdop},545.4,46.9,,")


def gst_s(t: str, lat_sigma: str, lon_sigma: str) -> bytes:
    return sentence(f"GPGST,{t},1.0,2.0,1.5,30.0,{lat_sigma},{lon_sigma},3.0")


def vtg_s(course: str, knots: str, kmh: str) -> bytes:
    return sentence(f"GPVTG,{course},T,,M,{knots},N,{kmh},K,A")


def zda_s(t: str, day: str, month: str, year: str) -> bytes:
    return sentence(f"GPZDA,{t},{day},{month},{year},00,00")


def parse(*chunks: bytes, not_before: dt.date | None = None) -> tuple[list[Fix], NmeaParser]:
    """Feed each chunk, then flush: every fix the input holds."""
    parser = NmeaParser(not_before=not_before)
    out: list[Fix] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.flush()
    return out, parser


def utc_date(fix: Fix) -> dt.date:
    assert fix.time_ms is not None
    return dt.datetime.fromtimestamp(fix.time_ms / 1000, dt.UTC).date()


# simulator-written cycles: GGA, GSA, RMC (the GSA in the middle joins the cycle)


def cycle(
    time_ms: int,
    lat: float = LAT,
    lon: float = LON,
    *,
    speed: float = 1.3,
    hdop: float = 0.9,
    rmc_first: bool = False,
) -> bytes:
    g = gga(time_ms, lat, lon, hdop=hdop, satellites=11).encode("ascii")
    a = gsa_s([3, 7, 9, 16, 71, 72, 201], hdop=f"{hdop:.2f}")
    r = rmc(time_ms, lat, lon, speed_mps=speed, course_deg=45.0).encode("ascii")
    return r + a + g if rmc_first else g + a + r


def no_fix_cycle(time_ms: int) -> bytes:
    t = hms(time_ms)
    return gga_s(t, ",,,", q="0", sats="00", hdop="99.99", alt="") + rmc_s(
        t, ",,,", status="V", knots="", course="", mode="N"
    )


def stream(n: int = 6) -> tuple[bytes, list[tuple[int, float, float, float, float]]]:
    """n 1 Hz cycles along a short walk; the bytes and (time, lat, lon, speed, hdop)."""
    truth = []
    data = b""
    for i in range(n):
        t = T0 + i * 1000
        lat, lon = LAT + i * 1.1e-5, LON - i * 0.7e-5
        speed, hdop = 1.0 + 0.1 * i, 0.8 + 0.15 * i
        truth.append((t, lat, lon, speed, hdop))
        data += cycle(t, lat, lon, speed=speed, hdop=hdop)
    return data, truth


def feed_chunks(data: bytes, cuts: list[int]) -> tuple[list[Fix], NmeaParser]:
    edges = [0, *sorted(cuts), len(data)]
    return parse(*(data[a:b] for a, b in itertools.pairwise(edges)))


def bytewise(data: bytes) -> tuple[list[Fix], NmeaParser]:
    return parse(*(bytes([b]) for b in data))


# --------------------------------------------------------------------------- chunking


def test_whole_buffer_and_byte_at_a_time_give_identical_fixes() -> None:
    data, truth = stream(8)
    whole, p1 = parse(data)
    assert [f.time_ms for f in whole] == [t for t, *_ in truth]
    one_by_one, p2 = bytewise(data)
    assert one_by_one == whole
    for p in (p1, p2):
        assert p.stats.fixes == len(truth)
        assert p.stats.sentences == 3 * len(truth)
        assert p.stats.rejected == p.stats.unsupported == 0


RICH = (
    stream(5)[0]
    + no_fix_cycle(T0 + 10_000)
    + b"\x00junk"  # glued before the next '$'
    + cycle(T0 + 11_000)
    + b"$GNGGA,bad*00\r\n"
    + b"\x01" * 90  # long glued garbage: with the GGA it exceeds MAX_LINE
    + cycle(T0 + 12_000)
    + b"!AIVDM,1,1,,A,13aEOK?P00PD2wVMdLDRhgvL289?,0*26\r\n"
    + sentence("PGRME,15.0,M,45.0,M,25.0,M")
    + cycle(T0 + 13_000, rmc_first=True)
    + b"\r\n\r\n"
    + cycle(T0 + 14_000)
)
RICH_SECONDS = [0, 1, 2, 3, 4, 11, 12, 13, 14]


def test_rich_stream_whole() -> None:
    fixes, parser = parse(RICH)
    assert [(f.time_ms - T0) // 1000 for f in fixes if f.time_ms is not None] == RICH_SECONDS
    assert len(fixes) == len(RICH_SECONDS)
    assert parser.stats.no_fix_cycles == 1
    assert parser.stats.bad_checksum == 1
    assert parser.stats.unsupported == 2
    assert parser.stats.fixes == len(RICH_SECONDS)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_chunking_gives_identical_fixes(data: st.DataObject) -> None:
    whole, p1 = parse(RICH)
    cuts = data.draw(st.lists(st.integers(0, len(RICH)), max_size=40), label="cuts")
    chunked, p2 = feed_chunks(RICH, cuts)
    assert chunked == whole
    for name in ("fixes", "sentences", "bad_checksum", "no_fix_cycles", "unsupported"):
        assert getattr(p2.stats, name) == getattr(p1.stats, name), name


def test_overlong_sentence_is_treated_alike_however_it_is_split() -> None:
    t = hms(T0) + "0" * 80  # a time with absurd precision: still a valid time of day
    data = gga_s(t) + rmc_s(t)
    assert len(data.split(b"\r\n")[0]) > MAX_LINE
    whole, _ = parse(data)
    one_by_one, _ = bytewise(data)
    assert one_by_one == whole


# --------------------------------------------------------------------------- cycles


def test_cycle_is_emitted_when_the_next_starts_then_as_soon_as_the_ender_arrives() -> None:
    parser = NmeaParser()
    parts = [
        [
            gga(t, LAT, LON).encode(),
            gsa_s([1, 2, 3]),
            rmc(t, LAT, LON, speed_mps=1, course_deg=0).encode(),
        ]
        for t in (T0, T0 + 1000, T0 + 2000, T0 + 3000)
    ]
    emitted = [[[f.time_ms for f in parser.feed(s)] for s in p] for p in parts]
    # t1: nothing until t2's first timed sentence (the ender is not known yet)
    assert emitted[0] == [[], [], []]
    # RMC ended t1: a candidate; it must end a second cycle before it is trusted
    assert emitted[1] == [[T0], [], []]
    assert emitted[2] == [[T0 + 1000], [], [T0 + 2000]]
    # from then on the RMC (the learnt ender) closes its own cycle at once
    assert emitted[3] == [[], [], [T0 + 3000]]
    assert parser.flush() == []
    assert parser.stats.fixes == 4


def test_a_single_cycle_waits_for_flush() -> None:
    parser = NmeaParser()
    assert parser.feed(cycle(T0)) == []
    fixes = parser.flush()
    assert [f.time_ms for f in fixes] == [T0]
    assert parser.flush() == []


def test_a_straggler_of_an_emitted_cycle_is_ignored() -> None:
    parser = NmeaParser()
    fixes = parser.feed(cycle(T0) + cycle(T0 + 1000) + cycle(T0 + 2000))
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000, T0 + 2000]  # the third by its RMC
    late = gga_s(hms(T0 + 2000), "1000.000,N,02000.000,E")
    assert parser.feed(late) == []
    assert parser.stats.late == 1
    assert parser.flush() == []
    assert parser.stats.fixes == 3


def test_gga_and_rmc_in_either_order_make_one_fix_each() -> None:
    fixes, _ = parse(cycle(T0, rmc_first=True) + cycle(T0 + 1000, rmc_first=True))
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000]
    assert [f.alt_m for f in fixes] == [250.0, 250.0]


def test_a_cycle_closed_by_the_ender_ignores_its_late_sentences() -> None:
    # the ender learnt from the first two cycles is RMC; a cycle sent RMC first is complete
    # at its RMC, and its GGA that follows is a straggler of an emitted cycle, which also
    # tells the parser its ender was wrong: the next cycle waits for the one after it
    fixes, parser = parse(
        cycle(T0) + cycle(T0 + 1000) + cycle(T0 + 2000, rmc_first=True) + cycle(T0 + 3000)
    )
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000, T0 + 2000, T0 + 3000]
    assert [f.alt_m for f in fixes] == [250.0, 250.0, None, 250.0]
    assert parser.stats.by_type["GGA"] == 4
    assert parser.stats.late == 1


def test_sentences_of_different_times_do_not_combine() -> None:
    t1, t2 = hms(T0), hms(T0 + 1000)
    fixes, parser = parse(
        gga_s(t1, "1000.000,N,02000.000,E"), rmc_s(t2, "3000.000,S,04000.000,W", date="311225")
    )
    assert len(fixes) == 2
    first, second = fixes
    assert (first.lat, first.lon) == (10.0, 20.0)
    assert first.time_ms is None  # no date was seen by then
    assert first.speed_mps is None
    assert (second.lat, second.lon) == (-30.0, -40.0)
    assert second.time_ms == T0 + 1000
    assert second.alt_m is None
    assert parser.stats.sentences == 2


def test_untimed_sentences_join_the_cycle_in_progress() -> None:
    t = hms(T0)
    fixes, _ = parse(
        gga_s(t, hdop=""),
        gsa_s([1, 2, 3, 4, 5], mode=2, pdop="2.5", hdop="1.4"),
        vtg_s("90.0", "2.0", "7.2"),
    )
    assert len(fixes) == 1
    fix = fixes[0]
    assert fix.mode is FixMode.FIX_2D
    assert fix.pdop == 2.5
    assert fix.hdop == 1.4
    assert fix.accuracy_m == pytest.approx(1.4 * UERE_M)
    assert fix.speed_mps == pytest.approx(2.0)
    assert fix.course_deg == 90.0
    assert fix.sats_used == ((Constellation.GPS, 5),)


def test_one_lost_rmc_does_not_make_every_later_rmc_a_straggler() -> None:
    data = b""
    for i in range(6):
        t = T0 + i * 1000
        r = rmc(t, LAT, LON, speed_mps=2.0, course_deg=10.0).encode()
        if i == 0:
            body = r[1 : r.index(b"*")].decode()
            r = f"${body}*{int(checksum(body), 16) ^ 0x55:02X}\r\n".encode()
        data += gga(t, LAT, LON).encode() + gsa_s([1, 2, 3, 4]) + r
    fixes, parser = parse(data)
    assert parser.stats.bad_checksum == 1
    assert len(fixes) == 6
    for i, fix in enumerate(fixes[1:], start=1):
        assert fix.time_ms == T0 + i * 1000
        assert fix.speed_mps == pytest.approx(2.0, abs=0.01)
        assert fix.usable


def test_several_gsa_at_the_end_of_each_cycle_stay_in_their_cycle() -> None:
    data = b""
    for i in range(4):
        t = T0 + i * 1000
        data += gga(t, LAT, LON).encode() + rmc(t, LAT, LON, speed_mps=1, course_deg=0).encode()
        data += gsa_s([1, 2, 3, 4], system=1) + gsa_s([201, 202], system=4)
    fixes, _ = parse(data)
    assert [f.time_ms for f in fixes] == [T0 + i * 1000 for i in range(4)]
    for fix in fixes:
        assert fix.sats_used == ((Constellation.BEIDOU, 2), (Constellation.GPS, 4))


def test_a_timeless_gga_does_not_lend_its_position_to_the_next_cycle() -> None:
    t = hms(T0)
    fixes, _ = parse(gga_s("", "1000.000,N,02000.000,E"), gga_s(t), rmc_s(t))
    timed = [f for f in fixes if f.time_ms == T0]
    assert len(timed) == 1
    assert (timed[0].lat, timed[0].lon) == pytest.approx((POS_LAT, POS_LON))


# --------------------------------------------------------------------------- position


A_GGA, A_RMC, A_GLL = (
    "1000.000,N,02000.000,E",
    "1100.000,N,02100.000,E",
    "1200.000,N,02200.000,E",
)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: gll_s(t, A_GLL) + rmc_s(t, A_RMC) + gga_s(t, A_GGA), (10.0, 20.0)),
        (lambda t: gga_s(t, A_GGA) + rmc_s(t, A_RMC) + gll_s(t, A_GLL), (10.0, 20.0)),
        (lambda t: gns_s(t, A_GGA) + rmc_s(t, A_RMC), (10.0, 20.0)),
        (lambda t: rmc_s(t, A_RMC) + gns_s(t, A_GGA), (10.0, 20.0)),
        (lambda t: gll_s(t, A_GLL) + rmc_s(t, A_RMC), (11.0, 21.0)),
        (lambda t: rmc_s(t, A_RMC) + gll_s(t, A_GLL), (11.0, 21.0)),
        (lambda t: gll_s(t, A_GLL), (12.0, 22.0)),
        (lambda t: gga_s(t, A_GGA, q="0", sats="02") + rmc_s(t, A_RMC), (11.0, 21.0)),
        (lambda t: rmc_s(t, A_RMC, status="V") + gll_s(t, A_GLL), (12.0, 22.0)),
    ],
    ids=[
        "gga>rmc>gll",
        "gga-first",
        "gns>rmc",
        "rmc-then-gns",
        "rmc>gll",
        "rmc-first",
        "gll-alone",
        "gga-nofix-rmc",
        "rmc-void-gll",
    ],
)
def test_position_precedence_within_a_cycle(
    make: Callable[[str], bytes], expected: tuple[float, float]
) -> None:
    fixes, _ = parse(make(hms(T0)))
    assert len(fixes) == 1
    assert (fixes[0].lat, fixes[0].lon) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("q", "quality"),
    [
        ("1", Quality.GPS),
        ("2", Quality.DGPS),
        ("4", Quality.RTK),
        ("5", Quality.FLOAT_RTK),
        ("6", Quality.ESTIMATED),
        ("8", Quality.SIMULATION),
    ],
)
def test_gga_quality(q: str, quality: Quality) -> None:
    fixes, _ = parse(gga_s(hms(T0), q=q), rmc_s(hms(T0)))
    assert [f.quality for f in fixes] == [quality]
    assert fixes[0].usable is (quality not in (Quality.ESTIMATED, Quality.SIMULATION))


@pytest.mark.parametrize(
    ("q", "sats", "mode"),
    [("0", "03", FixMode.FIX_2D), ("0", "08", FixMode.FIX_3D), ("", "05", FixMode.FIX_3D)],
    ids=["q0-3sats", "q0-8sats", "empty-5sats"],
)
def test_gga_without_quality_but_with_satellites_gives_an_invalid_fix(
    q: str, sats: str, mode: FixMode
) -> None:
    fixes, _ = parse(gga_s(hms(T0), q=q, sats=sats), zda_s(hms(T0), "31", "12", "2025"))
    assert len(fixes) == 1
    fix = fixes[0]
    assert fix.quality is Quality.INVALID
    assert fix.mode is mode
    assert (fix.lat, fix.lon) == pytest.approx((POS_LAT, POS_LON))
    assert fix.time_ms == T0
    assert fix.satellites == int(sats)
    assert not fix.usable


@pytest.mark.parametrize("sats", ["02", "00", ""])
def test_gga_without_quality_and_few_satellites_gives_no_position(sats: str) -> None:
    fixes, parser = parse(gga_s(hms(T0), q="0", sats=sats))
    assert fixes == []
    assert parser.stats.no_fix_cycles == 1
    assert parser.stats.fixes == 0


@pytest.mark.parametrize(
    "data",
    [
        rmc_s(hms(T0), status="V"),
        rmc_s(hms(T0), mode="N"),
        gns_s(hms(T0), modes="NN"),
        gns_s(hms(T0), modes="NNNN"),
        gll_s(hms(T0), status="V"),
        gll_s(hms(T0), mode="N"),
        gga_s(hms(T0), q="9"),
        no_fix_cycle(T0),
    ],
    ids=["rmc-V", "rmc-N", "gns-NN", "gns-NNNN", "gll-V", "gll-N", "gga-q9", "empty-fields"],
)
def test_receiver_no_fix_gives_no_position(data: bytes) -> None:
    fixes, parser = parse(data)
    assert fixes == []
    assert parser.stats.no_fix_cycles == 1
    # and the next good cycle still parses
    assert len(parse(data + cycle(T0 + 1000))[0]) == 1


@pytest.mark.parametrize(
    "data",
    [
        gga_s(hms(T0), ",,,", sats="08") + rmc_s(hms(T0), ",,,"),
        gga_s(hms(T0), ",N,,E") + rmc_s(hms(T0), ",N,,E"),
        gga_s(hms(T0), "4807.038,N,,E"),
        gga_s(hms(T0), ",,01131.000,E", q="0", sats="09"),
        gll_s(hms(T0), ",,,"),
        gns_s(hms(T0), ",,,"),
    ],
)
def test_empty_coordinates_are_never_a_zero_position(data: bytes) -> None:
    fixes, _ = parse(data)
    assert fixes == []


def test_gns_mixed_modes_give_a_position() -> None:
    fixes, _ = parse(gns_s(hms(T0), modes="NDNA"), rmc_s(hms(T0), A_RMC))
    assert len(fixes) == 1
    assert (fixes[0].lat, fixes[0].lon) == pytest.approx((POS_LAT, POS_LON))
    assert fixes[0].quality is Quality.DGPS
    assert fixes[0].time_ms == T0


def test_hemispheres_and_sub_second_time() -> None:
    t = T0 + 250  # hundredths of a second survive
    fixes, _ = parse(cycle(t, -33.8688, -151.2093))
    assert [f.time_ms for f in fixes] == [t]
    assert distance_m(fixes[0].lat, fixes[0].lon, -33.8688, -151.2093) < 0.02


# --------------------------------------------------------------------------- values


def test_fix_values_time_position_speed_accuracy() -> None:
    data, truth = stream(6)
    fixes, _ = parse(data)
    assert len(fixes) == len(truth)
    for fix, (t, lat, lon, speed, hdop) in zip(fixes, truth, strict=True):
        assert fix.time_ms == t
        assert fix.time_source is TimeSource.GNSS
        assert distance_m(fix.lat, fix.lon, lat, lon) < 0.02
        assert fix.speed_mps == pytest.approx(speed, abs=0.005)
        assert fix.course_deg == 45.0
        assert fix.hdop == pytest.approx(hdop, abs=0.005)
        assert fix.accuracy_m == pytest.approx(fix.hdop * UERE_M)
        assert not fix.accuracy_from_gst
        assert fix.alt_m == 250.0
        assert fix.mode is FixMode.FIX_3D
        assert fix.quality is Quality.GPS
        assert fix.pdop == 1.8
        assert fix.usable
        # the GSA's PRNs, by range (GN talker, no system id), not GGA's 11
        assert fix.sats_used == (
            (Constellation.BEIDOU, 1),
            (Constellation.GLONASS, 2),
            (Constellation.GPS, 4),
        )
        assert fix.satellites == 7
    # the stream crosses midnight: each fix's date is that of its own RMC
    assert utc_date(fixes[0]) == dt.date(2025, 12, 31)
    assert utc_date(fixes[-1]) == dt.date(2026, 1, 1)


def test_accuracy_from_gst() -> None:
    t = hms(T0)
    fixes, _ = parse(gga_s(t, hdop="2.0"), gst_s(t, "3.0", "4.0"), rmc_s(t))
    assert len(fixes) == 1
    assert fixes[0].accuracy_m == pytest.approx(5.0)
    assert fixes[0].accuracy_from_gst
    assert fixes[0].hdop == 2.0


def test_gst_with_an_empty_sigma_falls_back_to_hdop() -> None:
    t = hms(T0)
    fixes, _ = parse(gga_s(t, hdop="2.0"), gst_s(t, "", "4.0"), rmc_s(t))
    assert fixes[0].accuracy_m == pytest.approx(2.0 * UERE_M)
    assert not fixes[0].accuracy_from_gst


def test_no_hdop_and_no_gst_means_no_accuracy() -> None:
    fixes, _ = parse(rmc_s(hms(T0)))
    assert len(fixes) == 1
    fix = fixes[0]
    assert fix.accuracy_m is None
    assert fix.hdop is None
    assert fix.mode is FixMode.FIX_2D  # no GSA, no altitude
    assert not fix.usable


@pytest.mark.parametrize(
    ("extra", "mode"),
    [
        (b"", FixMode.FIX_3D),  # altitude present
        (gsa_s([1, 2, 3], mode=2), FixMode.FIX_2D),
        (gsa_s([1, 2, 3, 4], mode=3), FixMode.FIX_3D),
    ],
    ids=["altitude", "gsa-2d", "gsa-3d"],
)
def test_fix_mode(extra: bytes, mode: FixMode) -> None:
    fixes, _ = parse(gga_s(hms(T0)) + extra)
    assert [f.mode for f in fixes] == [mode]


def test_gga_without_altitude_and_without_gsa_is_2d() -> None:
    fixes, _ = parse(gga_s(hms(T0), alt=""))
    assert [f.mode for f in fixes] == [FixMode.FIX_2D]


def test_speed_and_course_from_rmc_win_over_vtg() -> None:
    t = hms(T0)
    fixes, _ = parse(gga_s(t), vtg_s("10.0", "1.0", "1.8"), rmc_s(t, knots="10.0", course="54.7"))
    assert fixes[0].speed_mps == pytest.approx(10.0 * 1852 / 3600)
    assert fixes[0].course_deg == 54.7


def test_speed_and_course_from_vtg_without_rmc() -> None:
    fixes, _ = parse(gga_s(hms(T0)), vtg_s("271.5", "5.0", "36.0"))
    assert fixes[0].speed_mps == pytest.approx(10.0)
    assert fixes[0].course_deg == 271.5


def test_vtg_knots_when_kmh_is_empty() -> None:
    fixes, _ = parse(gga_s(hms(T0)), vtg_s("", "2.0", ""))
    assert fixes[0].speed_mps == pytest.approx(2.0 * 1852 / 3600)
    assert fixes[0].course_deg is None


# --------------------------------------------------------------------------- dates


def test_date_is_carried_forward_and_over_midnight() -> None:
    day = 1_767_139_200_000  # 2025-12-31T00:00:00Z
    t0 = day + DAY_MS - 2000  # 23:59:58
    data = gga_s(hms(t0)) + rmc_s(hms(t0), date="311225")
    for i in (1, 2, 3):
        data += gga_s(hms(t0 + i * 1000))  # GGA only: no date of their own
    fixes, _ = parse(data)
    assert [f.time_ms for f in fixes] == [t0, t0 + 1000, t0 + 2000, t0 + 3000]
    assert [f.time_source for f in fixes] == [TimeSource.GNSS] * 4
    assert [utc_date(f) for f in fixes] == [dt.date(2025, 12, 31)] * 2 + [dt.date(2026, 1, 1)] * 2


def test_date_is_learnt_from_a_no_fix_cycle() -> None:
    fixes, _ = parse(no_fix_cycle(T0) + gga_s(hms(T0 + 1000)))
    assert [f.time_ms for f in fixes] == [T0 + 1000]


def test_date_from_zda() -> None:
    t = hms(T0)
    fixes, _ = parse(gga_s(t), zda_s(t, "31", "12", "2025"), gga_s(hms(T0 + 1000)))
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000]


def test_no_date_ever_means_no_time() -> None:
    fixes, parser = parse(gga_s(hms(T0)), gga_s(hms(T0 + 1000)), rmc_s(hms(T0 + 2000), date=""))
    assert len(fixes) == 3
    for fix in fixes:
        assert fix.time_ms is None
        assert fix.time_source is TimeSource.NONE
        assert not fix.usable
    assert parser.stats.fixes == 3


def test_an_unreadable_date_is_no_date() -> None:
    fixes, _ = parse(rmc_s(hms(T0), date="2208-1"))
    assert [f.time_ms for f in fixes] == [None]


ROLLOVER = dt.timedelta(weeks=1024)
NOT_BEFORE = dt.date(2025, 1, 1)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_week_rollover_is_corrected(k: int) -> None:
    true_day = dt.date(2025, 6, 15)
    said = true_day - k * ROLLOVER
    t = hms(T0)
    fixes, parser = parse(
        gga_s(t),
        zda_s(t, f"{said.day:02d}", f"{said.month:02d}", f"{said.year:04d}"),
        not_before=NOT_BEFORE,
    )
    assert len(fixes) == 1
    fix = fixes[0]
    assert utc_date(fix) == true_day
    assert fix.time_ms is not None
    assert fix.time_ms % DAY_MS == T0 % DAY_MS
    assert fix.time_source is (TimeSource.GNSS if k == 0 else TimeSource.GNSS_ROLLOVER)
    assert parser.stats.rollover_corrected == (1 if k else 0)
    assert parser.stats.time_distrusted == 0


def test_rollover_moves_to_the_first_date_not_before() -> None:
    said = NOT_BEFORE - ROLLOVER - dt.timedelta(days=1)  # k=2 needed: 1 is a day short
    fixes, _ = parse(
        gga_s(hms(T0)),
        zda_s(hms(T0), f"{said.day:02d}", f"{said.month:02d}", f"{said.year}"),
        not_before=NOT_BEFORE,
    )
    assert utc_date(fixes[0]) == said + 2 * ROLLOVER
    assert utc_date(fixes[0]) >= NOT_BEFORE


def test_more_than_three_rollovers_distrust_the_time() -> None:
    said = dt.date(2025, 6, 15) - 4 * ROLLOVER  # 1947
    t = hms(T0)
    fixes, parser = parse(
        gga_s(t),
        zda_s(t, f"{said.day:02d}", f"{said.month:02d}", f"{said.year}"),
        not_before=NOT_BEFORE,
    )
    assert len(fixes) == 1
    assert fixes[0].time_ms is None
    assert fixes[0].time_source is TimeSource.NONE
    assert parser.stats.time_distrusted == 1
    assert parser.stats.rollover_corrected == 0


def test_without_not_before_an_old_date_is_taken_as_is() -> None:
    t = hms(T0)
    fixes, parser = parse(gga_s(t), rmc_s(t, date="220899"))
    assert utc_date(fixes[0]) == dt.date(1999, 8, 22)
    assert fixes[0].time_source is TimeSource.GNSS
    assert parser.stats.rollover_corrected == 0


# --------------------------------------------------------------------------- satellites


@pytest.mark.parametrize(
    ("gsa", "expected"),
    [
        # NMEA 4.10 system id (field 17) beats PRN ranges and the talker
        (gsa_s([1, 2, 3], system=3), ((Constellation.GALILEO, 3),)),
        (gsa_s([1, 2, 3], system=4, talker="GP"), ((Constellation.BEIDOU, 3),)),
        (gsa_s([1, 2], system=2), ((Constellation.GLONASS, 2),)),
        (gsa_s([1, 2], system=5), ((Constellation.QZSS, 2),)),
        (gsa_s([1, 2], system=6), ((Constellation.NAVIC, 2),)),
        (gsa_s([65, 66], system=1), ((Constellation.GPS, 2),)),
        # no system id: the talker
        (gsa_s([1, 2], talker="GL"), ((Constellation.GLONASS, 2),)),
        (gsa_s([1, 2], talker="GA"), ((Constellation.GALILEO, 2),)),
        (gsa_s([1, 2], talker="GB"), ((Constellation.BEIDOU, 2),)),
        (gsa_s([1, 2], talker="BD"), ((Constellation.BEIDOU, 2),)),
        (gsa_s([1, 2], talker="GQ"), ((Constellation.QZSS, 2),)),
        (gsa_s([70, 71], talker="GP"), ((Constellation.GPS, 2),)),
        # GN without system id: PRN ranges
        (
            gsa_s([5, 40, 70, 195, 201, 301, 401]),
            (
                (Constellation.BEIDOU, 2),
                (Constellation.GALILEO, 1),
                (Constellation.GLONASS, 1),
                (Constellation.GPS, 1),
                (Constellation.QZSS, 1),
                (Constellation.SBAS, 1),
            ),
        ),
        # an unknown system id falls back to the PRN ranges
        (gsa_s([5, 70], system=9), ((Constellation.GLONASS, 1), (Constellation.GPS, 1))),
        # a PRN listed twice counts once
        (gsa_s([5, 5, 6]), ((Constellation.GPS, 2),)),
    ],
)
def test_sats_used_per_constellation(
    gsa: bytes, expected: tuple[tuple[Constellation, int], ...]
) -> None:
    fixes, _ = parse(gga_s(hms(T0), sats="12"), gsa)
    assert len(fixes) == 1
    assert fixes[0].sats_used == expected
    assert fixes[0].satellites == sum(n for _, n in expected)


def test_gsa_per_constellation_add_up() -> None:
    t = hms(T0)
    fixes, _ = parse(
        gga_s(t, sats="12"),
        gsa_s([1, 2, 3, 4], system=1),
        gsa_s([65, 66], system=2),
        gsa_s([1, 2, 3], system=3),
        rmc_s(t),
    )
    assert fixes[0].sats_used == (
        (Constellation.GALILEO, 3),
        (Constellation.GLONASS, 2),
        (Constellation.GPS, 4),
    )
    assert fixes[0].satellites == 9


def test_satellites_from_gga_without_gsa() -> None:
    fixes, _ = parse(gga_s(hms(T0), sats="11"))
    assert fixes[0].satellites == 11
    assert fixes[0].sats_used == ()


@pytest.mark.parametrize("talker", ["GP", "GL", "GA", "GB", "BD", "GQ", "GN"])
def test_every_talker_parses(talker: str) -> None:
    t = hms(T0)
    data = (
        gga_s(t, talker=talker)
        + gsa_s([1, 2, 3, 4], talker=talker)
        + rmc_s(t, talker=talker)
        + gga_s(hms(T0 + 1000), talker=talker)
        + rmc_s(hms(T0 + 1000), talker=talker)
    )
    fixes, parser = parse(data)
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000]
    assert (fixes[0].lat, fixes[0].lon) == pytest.approx((POS_LAT, POS_LON))
    assert fixes[0].satellites == 4
    assert parser.stats.rejected == parser.stats.unsupported == 0


def test_sky_in_view_from_the_last_gsv_of_a_group() -> None:
    sats = ",".join(["10,45,120,40"] * 4)
    parser = NmeaParser()
    parser.feed(sentence(f"GPGSV,3,1,11,{sats}") + sentence(f"GPGSV,3,2,11,{sats}"))
    assert parser.sky.in_view == {}  # the group is not complete yet
    parser.feed(sentence("GPGSV,3,3,11,10,45,120,40,11,45,120,40,12,45,120,40"))
    parser.feed(sentence("GLGSV,1,1,05,65,10,100,30,66,10,100,30"))
    parser.feed(sentence("GBGSV,1,1,07,201,10,100,30"))
    parser.feed(sentence("GNGSV,1,1,02,301,10,100,30,302,10,100,30"))  # by PRN range
    assert parser.sky.in_view == {
        Constellation.GPS: 11,
        Constellation.GLONASS: 5,
        Constellation.BEIDOU: 7,
        Constellation.GALILEO: 2,
    }
    parser.feed(sentence("GPGSV,1,1,04,10,45,120,40"))
    assert parser.sky.in_view[Constellation.GPS] == 4
    assert parser.flush() == []


# --------------------------------------------------------------------------- checksums, stats


def test_sentences_without_checksum_are_accepted_and_counted() -> None:
    t = hms(T0)
    data = gga_s(t) + rmc_s(t)
    bare = b"".join(line.rsplit(b"*", 1)[0] + b"\r\n" for line in data.splitlines())
    assert b"*" not in bare
    fixes, parser = parse(bare)
    assert fixes == parse(data)[0]
    assert len(fixes) == 1
    assert parser.stats.no_checksum == 2
    assert parser.stats.rejected == 0


def test_bad_checksum_is_counted_and_skipped() -> None:
    bad_gga = bytearray(gga(T0 + 1000, 10.0, 20.0).encode())
    bad_gga[20] = ord("9") if bad_gga[20] != ord("9") else ord("8")  # a latitude digit
    r1 = rmc(T0 + 1000, LAT, LON, speed_mps=1.0, course_deg=0.0).encode()
    fixes, parser = parse(cycle(T0) + bytes(bad_gga) + r1 + cycle(T0 + 2000) + cycle(T0 + 3000))
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000, T0 + 2000, T0 + 3000]
    # the damaged cycle's fix is its RMC's alone
    assert fixes[1].alt_m is None
    assert distance_m(fixes[1].lat, fixes[1].lon, LAT, LON) < 0.02
    assert parser.stats.bad_checksum == 1
    assert parser.stats.rejected == 1


def test_a_lone_rmc_with_bad_checksum_costs_only_its_fields() -> None:
    good = gga_s(hms(T0))
    line = rmc_s(hms(T0))
    body = line[1 : line.index(b"*")].decode()
    bad = f"${body}*{int(checksum(body), 16) ^ 0x0F:02X}\r\n".encode()
    fixes, parser = parse(good + bad)
    assert len(fixes) == 1
    assert fixes[0].speed_mps is None  # the RMC was refused
    assert parser.stats.bad_checksum == 1


@pytest.mark.parametrize(
    "line",
    [
        b"!AIVDM,1,1,,A,13aEOK?P00PD2wVMdLDRhgvL289?,0*26\r\n",
        b"!AIVDO,1,1,,,B3aEOK@0039uEV7dHRS`;wQUoP06,0*3C\r\n",
        sentence("PGRME,15.0,M,45.0,M,25.0,M"),
        sentence("PSRFEPE,053232.438,A,1.2,5.77,12.97,1.2,180.0"),
        sentence("PMTK001,604,3"),
        sentence("GPTXT,01,01,02,ANTSTATUS=OK"),
        sentence("GPXYZ,1,2,3"),
        sentence("GPRMB,A,0.66,L,003,004,4917.24,N,12309.57,W,001.3,052.5,000.5,V"),
    ],
    ids=["aivdm", "aivdo", "pgrme", "psrfepe", "pmtk", "txt", "unknown-type", "rmb"],
)
def test_foreign_and_unsupported_sentences_are_not_errors(line: bytes) -> None:
    fixes, parser = parse(line, cycle(T0), cycle(T0 + 1000))
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000]
    assert parser.stats.unsupported == 1
    assert parser.stats.rejected == 0


@pytest.mark.parametrize("body", ["PUBX", "PASH", "PTNL", "PSXN", "PVTX"])
def test_short_proprietary_sentences_do_not_raise(body: str) -> None:
    fixes, parser = parse(sentence(body), cycle(T0))
    assert len(fixes) == 1
    assert parser.stats.unsupported + parser.stats.malformed == 1


@pytest.mark.parametrize("q", ["-1", "--1"])
def test_negative_gga_quality_does_not_raise(q: str) -> None:
    fixes, parser = parse(gga_s(hms(T0), q=q), cycle(T0 + 1000))
    assert [f.time_ms for f in fixes] == [T0 + 1000]
    assert parser.stats.no_fix_cycles + parser.stats.malformed >= 1


@pytest.mark.parametrize(
    "line",
    [
        sentence("GPGGA"),
        sentence("GPGGA,123519"),
        sentence("GPGSV,1"),
        sentence("GPZDA,1"),
        sentence("GPGST,1"),
        sentence("GPRMC,123519,A"),
    ],
)
def test_truncated_sentences_are_malformed(line: bytes) -> None:
    fixes, parser = parse(line, cycle(T0 + 1000))
    assert [f.time_ms for f in fixes] == [T0 + 1000]
    assert parser.stats.malformed == 1


# --------------------------------------------------------------------------- garbage


@pytest.mark.parametrize(
    "garbage",
    [
        bytes(random.Random(7).randrange(256) for _ in range(300)).replace(b"$", b"#") + b"\n",
        b"A" * (MAX_LINE + 50),  # an over-long line with no newline at all
        "$GNGGA,héllo wörld,ünïcode*12\r\n".encode(),
        b"\xff\xfe\xfd\r\n",
        b"no dollar here\r\n",
    ],
    ids=["binary", "overlong", "non-ascii", "high-bytes", "text"],
)
def test_garbage_is_counted_as_malformed_and_later_fixes_parse(garbage: bytes) -> None:
    parser = NmeaParser()
    assert parser.feed(garbage) == []
    assert parser.stats.malformed >= 1
    assert parser.stats.fixes == 0
    fixes = parser.feed(cycle(T0) + cycle(T0 + 1000)) + parser.flush()
    assert [f.time_ms for f in fixes] == [T0, T0 + 1000]


def test_overlong_garbage_fed_bytewise_is_dropped_and_counted() -> None:
    parser = NmeaParser()
    for b in b"B" * (3 * MAX_LINE):
        assert parser.feed(bytes([b])) == []
    assert parser.stats.malformed >= 1
    fixes = parser.feed(b"\r\n" + cycle(T0)) + parser.flush()
    assert [f.time_ms for f in fixes] == [T0]


def test_non_ascii_sentence_is_malformed() -> None:
    fixes, parser = parse("$GNGGA,é*00\r\n".encode())
    assert fixes == []
    assert parser.stats.malformed == 1
    assert parser.stats.sentences == 0


def test_garbage_glued_before_dollar_is_dropped() -> None:
    g = gga(T0, LAT, LON).encode()
    r = rmc(T0, LAT, LON, speed_mps=0.0, course_deg=0.0).encode()
    fixes, parser = parse(b"\x00\x13noise!" + g + b"#x" + r)
    assert [f.time_ms for f in fixes] == [T0]
    assert parser.stats.rejected == 0
    assert parser.stats.sentences == 2


def test_long_glued_garbage_then_sentence_split_by_transport() -> None:
    """A sentence that begins after long garbage on its line survives any split."""
    data = b"\x01" * 60 + cycle(T0)  # garbage + GGA is longer than MAX_LINE
    assert [f.time_ms for f in parse(data)[0]] == [T0]
    assert [f.time_ms for f in bytewise(data)[0]] == [T0]


# --------------------------------------------------------------------------- fuzz

# The tokens include the inputs that once crashed the parser (negative and doubled-minus
# integers); short proprietary sentences have their own test above.

NMEA_ALPHABET = "$*,.-0123456789ABCDEFGLMNPRSVWZ\r\n"
nmea_ish = st.text(alphabet=NMEA_ALPHABET, max_size=300).map(lambda s: s.encode("ascii"))

TOKENS = [
    "",
    "0",
    "1",
    "3",
    "08",
    "99",
    "A",
    "V",
    "N",
    "S",
    "E",
    "W",
    "M",
    "AN",
    "NN",
    "4807.038",
    "01131.000",
    "9000.000",
    "18000.000",
    "4860.0",
    "235959.99",
    "000000",
    "311225",
    "220899",
    "2208-1",
    "2025",
    "-1",
    "--5",
    "-33.9",
    "0.9",
    "1e309",
    "nan",
]
field = st.one_of(st.sampled_from(TOKENS), st.text(alphabet="0123456789.ANSEWVM", max_size=12))
KINDS = [
    "GPGGA",
    "GNGGA",
    "GNRMC",
    "GPRMC",
    "GNGNS",
    "GPGLL",
    "GPGSA",
    "GNGSA",
    "GPGSV",
    "GNGSV",
    "GPGST",
    "GPZDA",
    "GPVTG",
    "GPTXT",
    "GPXYZ",
    "PGRME",
    "PSRFEPE",
    "PMTK001",
    "P",
]


@st.composite
def checksummed(draw: st.DrawFn) -> bytes:
    """Sentences with a correct checksum but arbitrary fields: the parser's deeper paths."""
    kind = draw(st.sampled_from(KINDS))
    fields = draw(st.lists(field, max_size=20))
    return sentence(",".join([kind, *fields]))


arbitrary = st.one_of(
    st.binary(max_size=400),
    nmea_ish,
    st.lists(checksummed(), max_size=8).map(b"".join),
)


def assert_sane(fixes: list[Fix]) -> None:
    for fix in fixes:
        assert isinstance(fix, Fix)
        assert math.isfinite(fix.lat) and math.isfinite(fix.lon)
        assert -90 <= fix.lat <= 90 and -180 <= fix.lon <= 180
        for value in (fix.accuracy_m, fix.hdop, fix.pdop, fix.alt_m, fix.speed_mps):
            assert value is None or math.isfinite(value)
        assert (fix.time_ms is None) == (fix.time_source is TimeSource.NONE)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(arbitrary, max_size=4))
def test_feed_never_raises_and_every_line_is_accounted_for(chunks: list[bytes]) -> None:
    parser = NmeaParser()
    fixes: list[Fix] = []
    for chunk in chunks:
        fixes += parser.feed(chunk)
    fixes += parser.flush()
    assert_sane(fixes)
    s = parser.stats
    assert s.fixes == len(fixes)
    # every line is a parsed sentence, rejected (bad checksum, malformed) or unsupported
    assert s.lines <= s.sentences + s.rejected + s.unsupported
    # input with a line yields a fix, or something counts it
    if any(line.strip() for line in b"".join(chunks).split(b"\n")[:-1]):
        assert fixes or s.rejected or s.unsupported or s.no_fix_cycles or s.sentences


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arbitrary, st.booleans())
def test_arbitrary_bytes_then_valid_cycles_still_yield_them(junk: bytes, separate: bool) -> None:
    # RMC, GSA, GGA cycles: whatever ender the junk teaches (RMC, GSA, GGA or another),
    # each cycle still gets its RMC's date and a position (see also
    # test_one_lost_rmc_does_not_make_every_later_rmc_a_straggler)
    times = [T0 + 100_000 + i * 1000 for i in range(3)]
    good = b"".join(cycle(t, rmc_first=True) for t in times)
    if separate:
        fixes, _ = parse(junk, b"\n", good)
    else:
        fixes, _ = parse(junk + b"\n" + good)
    assert_sane(fixes)
    ours = [f for f in fixes if f.time_ms in times]
    assert [f.time_ms for f in ours] == times
    for fix in ours:
        assert distance_m(fix.lat, fix.lon, LAT, LON) < 0.02


# --------------------------------------------------------------------------- corpus


def _gpsd_reports(log: Path) -> list[dict[str, Any]]:
    chk = log.with_name(log.name + ".chk")
    out = []
    for line in chk.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _gpsd_positions(log: Path) -> list[tuple[float, float]]:
    return [
        (float(r["lat"]), float(r["lon"]))
        for r in _gpsd_reports(log)
        if r.get("class") == "TPV" and "lat" in r and "lon" in r
    ]


def _parse_log(log: Path, not_before: dt.date | None = None) -> tuple[list[Fix], NmeaParser]:
    parser = NmeaParser(not_before=not_before)
    fixes: list[Fix] = []
    for line in log.read_bytes().splitlines(keepends=True):
        if not line.startswith(b"#"):
            fixes += parser.feed(line)
    fixes += parser.flush()
    return fixes, parser


LOGS = sorted(CORPUS.glob("*.log"))
# a missing corpus must fail, not skip: the parameter then names a file that is not there
LOG_PARAMS = LOGS or [pytest.param(CORPUS / "missing.log", id="corpus-missing")]
WITHOUT_POSITION = frozenset(log.name for log in LOGS if not _gpsd_positions(log))


def test_corpus_is_present() -> None:
    assert CORPUS.is_dir(), f"the gpsd NMEA corpus is committed at {CORPUS}"
    assert len(LOGS) >= 50
    for log in LOGS:
        assert log.with_name(log.name + ".chk").is_file(), log.name
    # the no-position set is computed, not vacuous either way
    assert {"ais-nmea-type6-fid55.log", "ais_unpack_sixbit.log"} <= WITHOUT_POSITION
    assert len(WITHOUT_POSITION) < len(LOGS) // 3


@pytest.mark.parametrize("log", LOG_PARAMS, ids=lambda p: p.name)
def test_corpus_log_parses_without_exception(log: Path) -> None:
    fixes, parser = _parse_log(log)
    s = parser.stats
    assert s.fixes == len(fixes)
    assert s.lines > 0
    assert_sane(fixes)
    for fix in fixes:
        assert (fix.lat, fix.lon) != (0.0, 0.0)


@pytest.mark.parametrize("log", LOG_PARAMS, ids=lambda p: p.name)
def test_corpus_every_gpsd_position_is_among_our_fixes(log: Path) -> None:
    gpsd = _gpsd_positions(log)
    fixes, _ = _parse_log(log)
    ours = [(f.lat, f.lon) for f in fixes]
    missing = [
        (lat, lon)
        for lat, lon in gpsd
        if not any(abs(lat - a) <= 1e-6 and abs(lon - b) <= 1e-6 for a, b in ours)
    ]
    assert missing == [], f"{log.name}: gpsd positions we did not report"


@pytest.mark.parametrize(
    "log",
    [log for log in LOGS if log.name in WITHOUT_POSITION] or LOG_PARAMS[:1],
    ids=lambda p: p.name,
)
def test_corpus_logs_without_a_gpsd_position_give_no_fix(log: Path) -> None:
    assert not _gpsd_positions(log)
    fixes, _ = _parse_log(log)
    assert fixes == []


def test_corpus_ais_logs_are_unsupported_not_errors() -> None:
    for name in ("ais-nmea-type6-fid55.log", "ais_unpack_sixbit.log"):
        _, parser = _parse_log(CORPUS / name)
        assert parser.stats.unsupported > 0
        assert parser.stats.rejected == 0
        assert parser.stats.sentences == 0


def test_corpus_april6_2019_rollover_corrected_with_not_before() -> None:
    log = CORPUS / "april6_2019.log"
    fixes, parser = _parse_log(log, not_before=dt.date(2019, 1, 1))
    dated = [f for f in fixes if f.time_ms is not None]
    assert dated, "the receiver's 220899 date should give a dated fix"
    for fix in dated:
        assert utc_date(fix) == dt.date(2019, 4, 7)
        assert fix.time_source is TimeSource.GNSS_ROLLOVER
    assert parser.stats.rollover_corrected == len(dated)
    # the first RMC's date is "2208-1": that fix has a position but no time
    assert [f.time_source for f in fixes if f.time_ms is None] == [TimeSource.NONE]

    plain, parser = _parse_log(log)
    plain_dated = [f for f in plain if f.time_ms is not None]
    assert len(plain_dated) == len(dated)
    for fix in plain_dated:
        assert utc_date(fix) == dt.date(1999, 8, 22)
        assert fix.time_source is TimeSource.GNSS
    assert parser.stats.rollover_corrected == 0
    assert [(f.lat, f.lon) for f in plain] == [(f.lat, f.lon) for f in fixes]


def test_corpus_beidou_gb_counts_beidou_satellites() -> None:
    # its cycles carry "$GNGSA,A,3,22,18,14,12,31,24,..." and "$GNGSA,A,3,201,...": GN talker,
    # no system id, so PRN 201 is BeiDou by range; $GBGSV report 11 BeiDou in view
    fixes, parser = _parse_log(CORPUS / "beidou-gb.log")
    assert len(fixes) == 2
    for fix in fixes:
        assert dict(fix.sats_used) == {Constellation.GPS: 6, Constellation.BEIDOU: 1}
        assert fix.satellites == 7
        assert fix.quality is Quality.GPS
        assert fix.mode is FixMode.FIX_3D
        assert fix.pdop == 2.5
        assert fix.hdop == 1.2
        assert utc_date(fix) == dt.date(2015, 3, 2)
    assert parser.stats.no_fix_cycles == 3  # its first cycles have no fix
    assert parser.sky.in_view[Constellation.BEIDOU] == 11
    assert parser.sky.in_view[Constellation.GPS] == 18


# --------------------------------------------------------------------------- hostile figures


def test_zda_with_an_overflowing_month_costs_only_the_date() -> None:
    # Fuzz reproducer: datetime raised OverflowError out of NmeaParser.feed.
    p = NmeaParser()
    assert p.feed(b"$GPZDA,,3,11111111111,1994\r\n") == []
    assert p.feed(sentence("GPZDA,123519.00,3,11111111111,1994,00,00")) == []
    (fix,) = p.feed(gga_s("123520.00")) + p.flush()
    assert fix.time_ms is None


def test_a_negative_hdop_is_no_hdop() -> None:
    # Fuzz reproducer: -1 in GSA's HDOP gave a Fix with accuracy -3 m.
    p = NmeaParser()
    fixes = p.feed(gga_s("123519.00", hdop="-1") + sentence("GPGSA,A,3,04,05,,,,,,,,,,,2.5,-1,2.1"))
    (fix,) = fixes + p.flush()
    assert (fix.hdop, fix.accuracy_m, fix.pdop) == (None, None, 2.5)


def test_an_astronomical_dop_or_gst_error_is_no_figure() -> None:
    p = NmeaParser()
    data = gga_s("123519.00", hdop="1e308") + sentence(
        "GPGST,123519.00,1.0,2.0,1.5,45.0,1e308,-1,2.5"
    )
    (fix,) = p.feed(data) + p.flush()
    assert (fix.hdop, fix.accuracy_m, fix.accuracy_from_gst) == (None, None, False)


def test_a_date_of_9999_12_31_carried_over_midnight_is_dropped() -> None:
    # The next day does not exist in datetime: the date is distrusted, not an OverflowError.
    p = NmeaParser()
    fixes = p.feed(sentence("GPZDA,235959.00,31,12,9999,00,00") + gga_s("235959.00"))
    fixes += p.feed(gga_s("000001.00")) + p.flush()
    assert [fx.time_ms is None for fx in fixes] == [False, True]
