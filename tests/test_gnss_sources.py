"""GNSS sources against real peers: no mocks.

The URL table; the pure gpsd decoder on hand-written reports and on gpsd's own output in
the corpus; file replay (fast, and paced in wall time); a TCP server that drops the
connection mid-sentence; pseudo-terminals at real baud rates, including a port that
vanishes and comes back behind a by-id style symlink; and a real gpsd fed by gpsfake,
killed and restarted under the source. Every wait is bounded by `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import termios
import time
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peers import DEADLINE_S, no_fds_left

from agent.gnss.gpsd import MAX_LINE, GpsdDecoder
from agent.gnss.nmea import UERE_M, NmeaParser
from agent.gnss.sources import (
    GnssSource,
    Pace,
    Pacer,
    Scheme,
    SourceError,
    SourceSpec,
    SourceState,
    SourceStatus,
    parse_source_url,
)
from agent.gnss.urls import check_source, host_problem
from contract.fix import Constellation, Fix, FixMode, Quality, TimeSource
from simulators.nmea import gga, rmc

T = TypeVar("T")
CORPUS = Path(__file__).resolve().parent / "corpus" / "gpsd-nmea"
BU353 = CORPUS / "bu353s4.log"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LAT, LON = 47.3769, 8.5417


def cycle(i: int, t0: int = T0, step_ms: int = 1000) -> bytes:
    """One GGA+RMC receiver cycle, the i-th of a slow walk north-east."""
    t, lat, lon = t0 + i * step_ms, LAT + i * 1e-5, LON + i * 1e-5
    return (gga(t, lat, lon) + rmc(t, lat, lon, speed_mps=1.2, course_deg=45.0)).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _no_leftover_fds() -> Iterator[None]:
    """Fail a test that leaves file descriptors open (ptys, sockets, log files)."""
    with no_fds_left():
        yield


@contextlib.asynccontextmanager
async def running(source: GnssSource) -> AsyncIterator[asyncio.Queue[Fix]]:
    """Consume `source.fixes()` in a task; any exception from it fails the test."""
    queue: asyncio.Queue[Fix] = asyncio.Queue()

    async def pump() -> None:
        async with contextlib.aclosing(source.fixes()) as fixes:
            async for fix in fixes:
                queue.put_nowait(fix)

    task = asyncio.create_task(pump(), name="gnss-pump")
    try:
        yield queue
    finally:
        if task.done():
            task.result()  # raise what escaped the source
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)  # let transports finish closing their sockets


async def take_until(queue: asyncio.Queue[Fix], time_ms: int, timeout_s: float) -> list[Fix]:
    """Fixes up to the one of `time_ms`. Writers send one cycle more than they expect
    back: when a cycle's fix comes out (at its last sentence, or when the next cycle
    starts) is the NMEA parser's business, not the transport's."""
    out: list[Fix] = []
    async with asyncio.timeout(timeout_s):
        while not out or out[-1].time_ms != time_ms:
            out.append(await queue.get())
    return out


async def until(cond: Callable[[], bool], timeout_s: float) -> None:
    """Poll what the source exposes as plain values (status, stats counters)."""
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - counters have no event to wait on
            await asyncio.sleep(0.01)


Handler = Callable[[asyncio.StreamWriter, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    """A loopback server on a free port calling handler(writer, nth connection).

    On exit it stops listening and cancels and awaits every handler still running, so no
    task or socket outlives the test (Python 3.11's wait_closed() does not do that).
    """
    handlers: set[asyncio.Task[None]] = set()

    async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(writer, len(handlers))
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        async with asyncio.timeout(DEADLINE_S):
            await asyncio.gather(*handlers, return_exceptions=True)
            await server.wait_closed()
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- URLs

GOOD = [
    ("serial:///dev/ttyUSB0", SourceSpec(Scheme.SERIAL, path="/dev/ttyUSB0", baud=9600)),
    (
        "serial:///dev/serial/by-id/usb-u-blox_GNSS-if00?baud=115200",
        SourceSpec(Scheme.SERIAL, path="/dev/serial/by-id/usb-u-blox_GNSS-if00", baud=115200),
    ),
    ("serial:///dev/ttyS0?baud=4800", SourceSpec(Scheme.SERIAL, path="/dev/ttyS0", baud=4800)),
    ("tcp://192.168.4.1:10110", SourceSpec(Scheme.TCP, host="192.168.4.1", port=10110)),
    ("tcp://[::1]:2000", SourceSpec(Scheme.TCP, host="::1", port=2000)),
    ("gpsd://localhost", SourceSpec(Scheme.GPSD, host="localhost", port=2947)),
    ("GPSD://gps.local:3000/", SourceSpec(Scheme.GPSD, host="gps.local", port=3000)),
    ("file:///var/log/gnss.nmea", SourceSpec(Scheme.FILE, path="/var/log/gnss.nmea")),
    ("file://relative/path.log", SourceSpec(Scheme.FILE, path="relative/path.log")),
    (
        "file://logs/walk.nmea?pace=realtime",
        SourceSpec(Scheme.FILE, path="logs/walk.nmea", pace=Pace.REALTIME),
    ),
    ("file:///a%20b.log?pace=fast", SourceSpec(Scheme.FILE, path="/a b.log")),
    ("logs/walk.nmea", SourceSpec(Scheme.FILE, path="logs/walk.nmea")),
    ("/abs/walk.nmea", SourceSpec(Scheme.FILE, path="/abs/walk.nmea")),
]

BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("udp://host:10110", "unknown scheme 'udp'"),
    ("tcp://host", "missing port"),
    ("tcp://host:", "missing port"),
    ("tcp://:2000", "missing host"),
    ("tcp://host:99999", "port is not a number"),
    ("tcp://host:abc", "port is not a number"),
    ("tcp://host:10110/nmea", "unexpected path '/nmea'"),
    ("tcp://user:pw@host:1", "passwords are not supported"),
    ("gpsd://host?device=/dev/ttyUSB0", "unknown parameter 'device'"),
    ("serial:///dev/ttyUSB0?baud=9601", "baud '9601' is not a standard rate"),
    ("serial:///dev/ttyUSB0?baud=2400", "baud '2400' is not a standard rate"),
    ("serial:///dev/ttyUSB0?baud=fast", "baud 'fast' is not a standard rate"),
    ("serial:///dev/ttyUSB0?speed=9600", "unknown parameter 'speed'"),
    ("serial:///dev/ttyUSB0?baud=9600&baud=4800", "given twice"),
    ("serial://ttyUSB0", "absolute path"),
    ("file://walk.log?pace=slow", "pace 'slow'"),
    ("file://", "no file path"),
    ("file:///x.log#frag", "fragment"),
    ("gpsd:localhost", "missing '//'"),
    # hostile and broken text (issue 15): refused here, never a traceback later
    ("gpsd://[::1", "not a valid URL"),
    ("tcp://[::1:5000", "not a valid URL"),
    ("file://%00", "the path holds a control character"),
    ("file:///log%0a.nmea", "the path holds a control character"),
    ("serial:///dev/tty%00USB0", "the path holds a control character"),
    ("tcp://host\x00:1", "holds a control character"),
    ("gpsd://exa%20mple", "is not a host name or an IP address"),
    ("tcp://-bad-.example:1", "is not a host name or an IP address"),
    ("tcp://a..b:1", "is not a host name or an IP address"),
    ("tcp://" + "a" * 64 + ":1", "is not a host name or an IP address"),
    ("file:///" + "x" * 5000, "at most 4096"),
]


@pytest.mark.parametrize(("url", "spec"), GOOD, ids=[u for u, _ in GOOD])
def test_good_urls_parse_and_round_trip(url: str, spec: SourceSpec) -> None:
    assert parse_source_url(url) == spec
    assert parse_source_url(str(spec)) == spec


@pytest.mark.parametrize(("url", "problem"), BAD, ids=[u or "empty" for u, _ in BAD])
def test_bad_urls_name_the_problem(url: str, problem: str) -> None:
    with pytest.raises(SourceError, match=problem.replace("?", r"\?")):
        parse_source_url(url)


@given(st.text(max_size=60) | st.text(max_size=60).map(lambda t: "tcp://" + t))
def test_any_text_is_a_source_or_a_source_error(text: str) -> None:
    try:
        spec = parse_source_url(text)
    except SourceError as exc:
        assert str(exc)
        return
    assert spec.path.isprintable() and spec.host.isprintable()


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("127.0.0.1", None),
        ("::1", None),
        ("broker.example.org", None),
        ("broker.example.org.", None),
        ("mqtt_1", None),
        ("", "is empty"),
        ("\x00", "holds a space or a control character"),
        ("bro ker", "holds a space or a control character"),
        ("[::1]", "is an IPv6 address in brackets"),
        ("bücher.example", "is not a host name"),
        ("a" * 254, "is not a host name"),
    ],
)
def test_host_names_are_checked(host: str, problem: str | None) -> None:
    assert host_problem(host) == problem or (problem and problem in (host_problem(host) or ""))


def test_check_source_refuses_a_log_that_cannot_be_replayed(tmp_path: Path) -> None:
    check_source(parse_source_url("serial:///dev/ttyNOPE"))  # may be plugged in later
    check_source(parse_source_url("tcp://127.0.0.1:1"))
    log = tmp_path / "walk.nmea"
    log.write_text("")
    check_source(parse_source_url(str(log)))
    with pytest.raises(SourceError, match=r"nope\.nmea: No such file or directory"):
        check_source(parse_source_url(str(tmp_path / "nope.nmea")))
    with pytest.raises(SourceError, match="is a folder, not an NMEA log"):
        check_source(parse_source_url(f"file://{tmp_path}"))


# --------------------------------------------------------------------------- gpsd decoder

SKY = {
    "class": "SKY",
    "hdop": 0.9,
    "pdop": 1.6,
    "satellites": [
        {"PRN": 3, "gnssid": 0, "svid": 3, "used": True},
        {"PRN": 7, "gnssid": 0, "svid": 7, "used": True},
        {"PRN": 9, "gnssid": 0, "svid": 9, "used": True},
        {"PRN": 12, "gnssid": 0, "svid": 12, "used": False},
        {"PRN": 301, "gnssid": 2, "svid": 1, "used": True},
        {"PRN": 305, "gnssid": 2, "svid": 5, "used": True},
        {"PRN": 65, "gnssid": 6, "svid": 1, "used": True},
        {"PRN": 201, "gnssid": 3, "svid": 1, "used": False},
        {"PRN": 133, "gnssid": 1, "svid": 133, "used": False},
        {"PRN": 99, "used": True},  # no gnssid (old gpsd)
    ],
}
TPV = {
    "class": "TPV",
    "device": "/dev/ttyACM0",
    "mode": 3,
    "status": 2,
    "time": "2019-04-07T00:02:31.420Z",
    "lat": 51.477928,
    "lon": -0.001545,
    "alt": 99.0,
    "altMSL": 46.2,
    "epx": 3.0,
    "epy": 4.0,
    "eph": 20.0,
    "speed": 1.5,
    "track": 270.25,
}


def line(report: dict[str, object]) -> bytes:
    return json.dumps(report).encode() + b"\r\n"


def tpv(**changes: object) -> bytes:
    report = {k: v for k, v in {**TPV, **changes}.items() if v is not None}
    return line(report)


def test_gpsd_tpv_after_sky_makes_a_complete_fix() -> None:
    d = GpsdDecoder()
    preamble = b'{"class":"VERSION","release":"3.22","proto_major":3,"proto_minor":14}\r\n'
    preamble += b'{"class":"DEVICES","devices":[]}\r\n{"class":"WATCH","enable":true}\r\n'
    data = preamble + line(SKY) + tpv()
    fixes = d.feed(data)
    assert fixes == [
        Fix(
            time_ms=int(dt.datetime(2019, 4, 7, 0, 2, 31, 420_000, dt.UTC).timestamp() * 1000),
            lat=51.477928,
            lon=-0.001545,
            accuracy_m=2.5,  # hypot(3, 4) / 2: 95 % per axis → 1 sigma
            hdop=0.9,
            pdop=1.6,
            alt_m=46.2,  # altMSL wins over alt
            mode=FixMode.FIX_3D,
            quality=Quality.DGPS,
            satellites=7,
            sats_used=(
                (Constellation.GALILEO, 2),
                (Constellation.GLONASS, 1),
                (Constellation.GPS, 3),
                (Constellation.UNKNOWN, 1),
            ),
            speed_mps=1.5,
            course_deg=270.25,
            time_source=TimeSource.GNSS,
        )
    ]
    assert d.sky.in_view == {
        Constellation.GPS: 4,
        Constellation.GALILEO: 2,
        Constellation.GLONASS: 1,
        Constellation.BEIDOU: 1,
        Constellation.SBAS: 1,
        Constellation.UNKNOWN: 1,
    }
    assert d.stats.by_class == {"VERSION": 1, "DEVICES": 1, "WATCH": 1, "SKY": 1, "TPV": 1}
    assert d.stats.rejected == 0
    # the same bytes one at a time give the same fixes
    bytewise = GpsdDecoder()
    assert [f for b in data for f in bytewise.feed(bytes([b]))] == fixes


@pytest.mark.parametrize(
    ("changes", "sky", "accuracy"),
    [
        ({}, True, 2.5),
        ({"epx": None}, True, 10.0),  # eph / 2
        ({"epx": None, "eph": None}, True, 0.9 * UERE_M),  # HDOP × UERE from SKY
        ({"epx": None, "eph": None}, False, None),  # nothing to estimate from
    ],
    ids=["epx-epy", "eph", "hdop", "none"],
)
def test_gpsd_accuracy_fallbacks(
    changes: dict[str, object], sky: bool, accuracy: float | None
) -> None:
    d = GpsdDecoder()
    (fix,) = d.feed((line(SKY) if sky else b"") + tpv(**changes))
    assert fix.accuracy_m == (None if accuracy is None else pytest.approx(accuracy))
    if not sky:
        assert (fix.hdop, fix.pdop, fix.sats_used, fix.satellites) == (None, None, (), 0)


@pytest.mark.parametrize(
    ("status", "quality"),
    [
        (None, Quality.GPS),
        (0, Quality.GPS),
        (1, Quality.GPS),
        (2, Quality.DGPS),
        (3, Quality.RTK),
        (4, Quality.FLOAT_RTK),
        (5, Quality.ESTIMATED),
        (6, Quality.GPS),
        (7, Quality.INVALID),
        (8, Quality.SIMULATION),
    ],
)
def test_gpsd_status_maps_to_quality(status: int | None, quality: Quality) -> None:
    (fix,) = GpsdDecoder().feed(tpv(status=status))
    assert fix.quality is quality


@pytest.mark.parametrize(
    ("changes", "sky", "accuracy"),
    [
        ({"epx": -3.0, "epy": -4.0}, {}, 10.0),  # negative: no epx/epy, so eph / 2
        ({"epx": 1e308, "epy": 1e308, "eph": 1e308}, {}, 0.9 * UERE_M),  # hypot: inf
        ({"epx": None, "eph": -20.0}, {"hdop": -1}, None),  # nothing sensible left
        ({"epx": None, "eph": 10**400}, {"hdop": 1e308}, None),  # too large for a float
    ],
    ids=["negative-epx", "huge-errors", "negative-eph-hdop", "huge-int"],
)
def test_gpsd_impossible_errors_and_dops_are_no_figure(
    changes: dict[str, object], sky: dict[str, object], accuracy: float | None
) -> None:
    (fix,) = GpsdDecoder().feed(line({**SKY, **sky}) + tpv(**changes))
    assert fix.accuracy_m == (None if accuracy is None else pytest.approx(accuracy))
    assert fix.hdop is None or 0 <= fix.hdop <= 1000
    assert fix.pdop is None or 0 <= fix.pdop <= 1000


def test_gpsd_tpv_without_time_and_2d() -> None:
    (fix,) = GpsdDecoder().feed(tpv(time=None, mode=2, alt=None, altMSL=None))
    assert (fix.time_ms, fix.time_source) == (None, TimeSource.NONE)
    assert (fix.mode, fix.alt_m) == (FixMode.FIX_2D, None)
    (fix,) = GpsdDecoder().feed(tpv(altMSL=None))
    assert fix.alt_m == 99.0  # alt when altMSL is absent


def test_gpsd_no_fix_and_garbage_are_counted_never_raised() -> None:
    d = GpsdDecoder()
    fixes = d.feed(
        tpv(mode=1)  # no fix
        + tpv(mode=3, lat=None)  # mode says fix, but no position yet (gpsd does this)
        + b"not json at all\r\n"
        + b"[1, 2, 3]\r\n"
        + b'{"no": "class"}\r\n'
        + b'{"class":"TPV","mode":3,"lat":95.0,"lon":0.0}\r\n'  # impossible latitude
        + b'{"class":"TPV","mode":3,"lat":true,"lon":0.0}\r\n'  # not a number: no position
        + b"\xff\xfe\r\n"
        + b'{"class":"TPV","mo'  # cut off ...
        + tpv(time="2019-04-07T00:02:32Z")  # ... and glued to a whole report
        + b'{"class":"DEVICES","devices":[{"class":"DEVICE","path":"/dev/pts/1"}]}\r\n'
        + b'{"class":"DEVICES","devices":[{"class":"DEV'  # cut inside a nested report ...
        + b'{"class":"DEVICES","devices":[{"class":"DEVICE","path":"/dev/pts/2"}]}\r\n'
    )
    assert [f.time_ms for f in fixes] == [1_554_595_352_000]
    assert d.stats.no_fix == 3
    assert d.stats.malformed == 5
    assert d.stats.resynced == 2
    assert d.stats.by_class["DEVICES"] == 2  # nested reports are not mistaken for a start
    # an over-long line is dropped to its end, and what follows still decodes
    assert d.feed(b"x" * (MAX_LINE + 10)) == []
    assert d.feed(b"yyy\r\n" + tpv()) != []
    assert d.stats.overlong == 1
    assert d.stats.rejected == 6
    # a last report without its line end is decoded at end of input
    assert d.feed(tpv()[:-2]) == []
    assert len(d.flush()) == 1


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
TPV_KEYS = ("mode", "lat", "lon", "time", "status", "epx", "epy", "eph", "alt", "altMSL", "speed")
SKY_KEYS = ("hdop", "pdop", "satellites")


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["TPV", "SKY"]),
    st.dictionaries(st.sampled_from(TPV_KEYS + SKY_KEYS), JSON),
    st.lists(st.binary(max_size=60), max_size=4),
)
def test_gpsd_decoder_never_raises(kind: str, fields: dict[str, object], junk: list[bytes]) -> None:
    """Any report with any field values, and any bytes around it: values or counts only."""
    d = GpsdDecoder()
    for piece in [*junk, line({"class": kind, **fields}), *junk]:
        for fix in d.feed(piece):
            assert abs(fix.lat) <= 90 and abs(fix.lon) <= 180
    d.flush()
    assert d.stats.fixes + d.stats.no_fix <= d.stats.by_class["TPV"] <= 1


def test_gpsd_decoder_agrees_with_gpsds_own_reports_in_the_corpus() -> None:
    """The JSON lines of a .chk file are what gpsd produced: decode them all."""
    chk = BU353.with_suffix(".log.chk").read_bytes()
    reports = [json.loads(x) for x in chk.splitlines() if x.startswith(b"{")]
    expected = [(r["lat"], r["lon"]) for r in reports if r.get("mode", 0) >= 2 and "lat" in r]
    d = GpsdDecoder()
    fixes = d.feed(chk)  # the NMEA lines between are not JSON: counted, skipped
    assert [(f.lat, f.lon) for f in fixes] == expected
    assert len(fixes) > 20
    assert all(f.time_ms is not None for f in fixes if f.speed_mps is not None)
    assert d.sky.in_view == {Constellation.GPS: 12}
    assert d.stats.malformed == sum(1 for x in chk.splitlines() if x.startswith(b"$"))


# --------------------------------------------------------------------------- file


def nmea_lines(path: Path) -> list[bytes]:
    return [x for x in path.read_bytes().splitlines() if x.strip() and not x.startswith(b"#")]


async def test_file_fast_replay_matches_the_parser_and_finishes() -> None:
    parser = NmeaParser()
    expected = [f for x in nmea_lines(BU353) for f in parser.feed_line(x)] + parser.flush()
    seen: list[SourceStatus] = []
    source = GnssSource(parse_source_url(f"file://{BU353}"), on_status=seen.append)
    async with asyncio.timeout(DEADLINE_S), contextlib.aclosing(source.fixes()) as fixes:
        got = [fix async for fix in fixes]
    assert got == expected
    assert len(got) > 20
    assert source.stats.lines == len(nmea_lines(BU353))  # '#' header lines are skipped
    assert source.stats.rejected == 0
    assert [s.state for s in seen] == [
        SourceState.CONNECTING,
        SourceState.RECEIVING,
        SourceState.FINISHED,
    ]
    assert source.status.state is SourceState.FINISHED
    assert f"{len(got)} fixes" in source.status.detail


async def test_file_realtime_replay_keeps_the_gnss_spacing(tmp_path: Path) -> None:
    log = tmp_path / "walk.nmea"
    log.write_bytes(
        b"# four cycles 0.2 s apart\n" + b"".join(cycle(i, step_ms=200) for i in range(4))
    )
    source = GnssSource(parse_source_url(f"file://{log}?pace=realtime"))
    stamps: list[float] = []
    got: list[Fix] = []
    async with asyncio.timeout(DEADLINE_S), contextlib.aclosing(source.fixes()) as fixes:
        async for fix in fixes:
            stamps.append(time.monotonic())
            got.append(fix)
    assert [f.time_ms for f in got] == [T0 + i * 200 for i in range(4)]
    # never faster than the receiver was (a loaded machine only makes it slower; how long
    # each wait is, time passed in, is test_pacer_keeps_gnss_spacing_caps_jumps_and_never_bursts)
    assert stamps[-1] - stamps[0] >= 0.55
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(stamps))
    assert source.status.state is SourceState.FINISHED


async def test_file_realtime_replay_without_dates_gives_one_fix_a_second(tmp_path: Path) -> None:
    log = tmp_path / "gga-only.nmea"  # GGA has no date: times are unknown
    log.write_text(gga(T0, LAT, LON) + gga(T0 + 100, LAT, LON), encoding="ascii")
    source = GnssSource(SourceSpec(Scheme.FILE, path=str(log), pace=Pace.REALTIME))
    start = time.monotonic()
    async with asyncio.timeout(DEADLINE_S), contextlib.aclosing(source.fixes()) as fixes:
        got = [fix async for fix in fixes]
    assert [f.time_source for f in got] == [TimeSource.NONE] * 2
    assert time.monotonic() - start >= 0.9  # a second apart, never sooner


def test_pacer_keeps_gnss_spacing_caps_jumps_and_never_bursts() -> None:
    pacer = Pacer()

    def at(time_ms: int | None) -> Fix:
        return Fix(time_ms=time_ms, lat=LAT, lon=LON)

    assert pacer.wait_s(at(T0), now=100.0) == 0
    assert pacer.wait_s(at(T0 + 200), now=100.05) == pytest.approx(0.15)
    assert pacer.wait_s(at(T0 + 3_600_000), now=100.2) == pytest.approx(10.0)  # capped
    assert pacer.wait_s(at(T0), now=110.2) == pytest.approx(1.0)  # time went backwards
    assert pacer.wait_s(at(None), now=111.2) == pytest.approx(1.0)  # time unknown
    assert pacer.wait_s(at(T0 + 1000), now=117.2) == 0  # the consumer was 5 s late ...
    assert pacer.wait_s(at(T0 + 2000), now=117.2) == pytest.approx(1.0)  # ... no burst after


async def test_missing_file_is_a_source_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.nmea"
    source = GnssSource(parse_source_url(str(missing)))
    with pytest.raises(SourceError, match=r"nope\.nmea: No such file or directory"):
        async with asyncio.timeout(DEADLINE_S), contextlib.aclosing(source.fixes()) as fixes:
            _ = [fix async for fix in fixes]
    assert source.status.state is SourceState.FINISHED


# --------------------------------------------------------------------------- TCP


async def test_tcp_source_reconnects_after_the_server_drops_it() -> None:
    """The server cuts the first connection mid-sentence, then serves a second one."""

    async def serve(writer: asyncio.StreamWriter, nth: int) -> None:
        for i in range(4) if nth == 1 else range(10, 17):
            writer.write(cycle(i))
            await writer.drain()
            await asyncio.sleep(0.02)
        if nth == 1:
            writer.write(cycle(4)[:30])  # half a GGA, then the line goes dead
            await writer.drain()
        else:
            await asyncio.sleep(30)  # keep the connection open until the test ends

    seen: list[SourceStatus] = []
    async with tcp_server(serve) as port:
        source = GnssSource(
            parse_source_url(f"tcp://127.0.0.1:{port}"), on_status=seen.append, backoff_max_s=0.1
        )
        async with running(source) as queue:
            got = await take_until(queue, T0 + 15_000, timeout_s=DEADLINE_S)
    assert [f.time_ms for f in got] == [T0 + i * 1000 for i in (*range(4), *range(10, 16))]
    assert source.status.reconnects >= 1
    down = [s for s in seen if s.state is SourceState.DISCONNECTED]
    assert down and down[0].detail == f"127.0.0.1:{port}: closed by peer"
    assert down[0].reconnects == 0 and seen[-1].reconnects >= 1
    assert source.stats.rejected == 0  # the cut line was dropped with its connection


async def test_tcp_source_reports_stale_and_logs_garbage_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    resume = asyncio.Event()

    async def serve(writer: asyncio.StreamWriter, _nth: int) -> None:
        for junk in (b"\x00\x01garbage\r\n", b"$GPGGA,bad*00\r\n", b"more junk\r\n"):
            writer.write(junk)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(cycle(0) + cycle(1) + cycle(2))
        await writer.drain()
        async with asyncio.timeout(DEADLINE_S):
            await resume.wait()
        writer.write(cycle(3) + cycle(4))
        await writer.drain()
        await asyncio.sleep(30)

    seen: list[SourceStatus] = []
    caplog.set_level(logging.DEBUG, logger="agent.gnss.sources")
    async with tcp_server(serve) as port:
        source = GnssSource(
            # a second of silence: long enough that a loaded machine's pauses between the
            # server's first writes are not one, so STALE is reported for the real one only
            parse_source_url(f"tcp://127.0.0.1:{port}"),
            on_status=seen.append,
            stale_after_s=1.0,
        )
        async with running(source) as queue:
            assert len(await take_until(queue, T0 + 1000, timeout_s=DEADLINE_S)) == 2
            await until(lambda: source.status.state is SourceState.STALE, timeout_s=DEADLINE_S)
            assert "no data for 1 s" in source.status.detail
            resume.set()
            assert len(await take_until(queue, T0 + 3000, timeout_s=DEADLINE_S)) == 2
            assert source.status.state is SourceState.RECEIVING
    refusals = [r for r in caplog.records if "refused unreadable input" in r.getMessage()]
    assert [r.levelno for r in refusals][:1] == [logging.WARNING]
    assert all(r.levelno == logging.DEBUG for r in refusals[1:]) and len(refusals) >= 2
    assert source.stats.rejected == 3
    assert [s.state for s in seen].count(SourceState.STALE) == 1


async def test_unreachable_gpsd_is_disconnected_with_the_reason() -> None:
    port = free_port()  # nothing listens there
    source = GnssSource(parse_source_url(f"gpsd://127.0.0.1:{port}"), backoff_max_s=0.05)
    async with running(source):
        await until(lambda: source.status.state is SourceState.DISCONNECTED, timeout_s=DEADLINE_S)
        assert source.status.detail == f"127.0.0.1:{port}: Connection refused"


# --------------------------------------------------------------------------- serial (ptys)


class Pty:
    """A pseudo-terminal standing in for a receiver: we write the master, the source
    opens the slave by its path, as it would /dev/ttyUSB0."""

    def __init__(self, baud: int) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        tty.setraw(self.slave)  # as a real port's line discipline: no echo, no CR mapping
        attrs = termios.tcgetattr(self.slave)
        attrs[4] = attrs[5] = getattr(termios, f"B{baud}")
        termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        os.set_blocking(self.master, False)

    def speed(self) -> tuple[int, int]:
        attrs = termios.tcgetattr(self.slave)
        return attrs[4], attrs[5]

    async def write_paced(self, data: bytes, baud: int) -> float:
        """Write at the line rate (10 bits a byte: 8N1); returns the seconds it took."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while sent < len(data):
            try:
                sent += os.write(self.master, data[sent : sent + 16])
            except BlockingIOError:  # the slave's input queue is full: nobody reads yet
                await asyncio.sleep(0.01)
                continue
            await asyncio.sleep(max(0.0, start + sent * 10 / baud - loop.time()))
        return loop.time() - start

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1


@pytest.fixture
def ptys() -> Iterator[Callable[[int], Pty]]:
    made: list[Pty] = []

    def make(baud: int) -> Pty:
        made.append(Pty(baud))
        return made[-1]

    try:
        yield make
    finally:
        for p in made:
            p.close()


@contextlib.asynccontextmanager
async def background(coro: Awaitable[T]) -> AsyncIterator[asyncio.Task[T]]:
    """Run `coro` beside the test body; cancelled at the end, its exception re-raised."""

    async def run() -> T:
        return await coro

    task = asyncio.create_task(run(), name="test-writer")
    try:
        yield task
    finally:
        if task.done():
            task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("baud", [9600, 115200])
async def test_serial_source_reads_a_pty_at_the_baud_rate(
    baud: int, ptys: Callable[[int], Pty]
) -> None:
    port = ptys(baud)
    data = b"".join(cycle(i) for i in range(7))
    source = GnssSource(parse_source_url(f"serial://{port.path}?baud={baud}"))
    async with running(source) as queue, background(port.write_paced(data, baud)) as writer:
        got = await take_until(queue, T0 + 5000, timeout_s=DEADLINE_S)
        took = await writer
    assert [f.time_ms for f in got] == [T0 + i * 1000 for i in range(6)]
    assert all(abs(f.lat - (LAT + i * 1e-5)) < 1e-6 for i, f in enumerate(got))
    assert took >= 0.9 * len(data) * 10 / baud  # the bytes really came at the line rate
    speed = getattr(termios, f"B{baud}")
    assert port.speed() == (speed, speed)
    assert source.status == SourceStatus(SourceState.RECEIVING, port.path, 0)


async def test_serial_port_that_vanishes_and_comes_back(
    tmp_path: Path, ptys: Callable[[int], Pty]
) -> None:
    """Unplug: the by-id link disappears and the tty hangs up; replug: a new tty behind it."""
    by_id = tmp_path / "serial" / "by-id"
    by_id.mkdir(parents=True)
    link = by_id / "usb-u-blox_AG_-_www.u-blox.com_u-blox_GNSS_receiver-if00"
    first = ptys(115200)
    link.symlink_to(first.path)
    seen: list[SourceStatus] = []
    source = GnssSource(
        parse_source_url(f"serial://{link}?baud=115200"), on_status=seen.append, backoff_max_s=0.1
    )
    async with running(source) as queue:
        data = b"".join(cycle(i) for i in range(5))
        async with background(first.write_paced(data, 115200)) as writer:
            before = await take_until(queue, T0 + 3000, timeout_s=DEADLINE_S)
            await writer
        # all ten sentences read before the unplug (a hang-up discards unread input)
        await until(lambda: source.stats.lines == 10, timeout_s=DEADLINE_S)
        link.unlink()
        first.close()
        await until(lambda: source.status.state is SourceState.DISCONNECTED, timeout_s=DEADLINE_S)
        await until(  # retries against the missing link
            lambda: source.status.detail == f"{link}: No such file or directory",
            timeout_s=DEADLINE_S,
        )
        second = ptys(4800)  # set to a wrong speed: the source must set its own
        link.symlink_to(second.path)
        data = b"".join(cycle(i) for i in range(10, 16))
        async with background(second.write_paced(data, 115200)):
            after = await take_until(queue, T0 + 14_000, timeout_s=DEADLINE_S)
        b115200 = termios.B115200
        assert second.speed() == (b115200, b115200)
    # cycle 4 is reported at its RMC, or at the latest when the next port's first cycle starts
    assert [f.time_ms for f in before + after] == [
        T0 + i * 1000 for i in (*range(5), *range(10, 15))
    ]
    down = [s.detail for s in seen if s.state is SourceState.DISCONNECTED]
    assert down[0] == f"{link}: hung up"  # Linux: a pty slave reads EOF once its master closed
    assert f"{link}: No such file or directory" in down  # then the missing link
    assert source.status.reconnects == 1


# --------------------------------------------------------------------------- gpsd


GPSD_PATH = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", os.environ.get("PATH", "")])
GPSD_MISSING = (
    shutil.which("gpsfake", path=GPSD_PATH) is None or shutil.which("gpsd", path=GPSD_PATH) is None
)


class GpsFake:
    """gpsfake (and the gpsd it runs) replaying a corpus log on a fixed loopback port."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        with (self.workdir / f"gpsfake-{len(self.procs)}.out").open("wb") as out:
            self.procs.append(
                subprocess.Popen(
                    # -1: the log once (times only go forward); -c: 0.05 s a sentence
                    ["gpsfake", "-1", "-q", "-P", str(self.port), "-c", "0.05", str(BU353)],
                    env={**os.environ, "PATH": GPSD_PATH, "TMPDIR": str(self.workdir)},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # gpsd joins its group: one killpg ends both
                )
            )

    def kill(self) -> None:
        """SIGKILL the whole group: gpsfake ignores SIGTERM while it feeds gpsd."""
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture
def gpsfake(tmp_path: Path) -> Iterator[GpsFake]:
    if GPSD_MISSING:
        pytest.skip("gpsd and gpsfake are not installed: apt-get install gpsd gpsd-clients")
    fake = GpsFake(tmp_path, free_port())
    try:
        yield fake
    finally:
        fake.kill()


def gpsd_positions() -> list[tuple[float, float]]:
    """What gpsd itself decoded from the log (the corpus .chk file)."""
    reports = [
        json.loads(x)
        for x in BU353.with_suffix(".log.chk").read_bytes().splitlines()
        if x.startswith(b"{")
    ]
    return [(r["lat"], r["lon"]) for r in reports if r.get("class") == "TPV" and "lat" in r]


async def take_timed(queue: asyncio.Queue[Fix], n: int, timeout_s: float) -> list[Fix]:
    """Fixes until `n` of them carry a time. Right after it activates a device, gpsd
    reports a position or two before it has seen the date (RMC): those have no time."""
    out: list[Fix] = []
    async with asyncio.timeout(timeout_s):
        while sum(f.time_ms is not None for f in out) < n:
            out.append(await queue.get())
    return out


def assert_decoded_by_gpsd(fixes: list[Fix]) -> None:
    known = gpsd_positions()
    for fix in fixes:
        assert any(abs(fix.lat - a) < 1e-6 and abs(fix.lon - b) < 1e-6 for a, b in known), fix
        assert fix.time_source is (TimeSource.NONE if fix.time_ms is None else TimeSource.GNSS)
        assert fix.mode in (FixMode.FIX_2D, FixMode.FIX_3D) and fix.quality is Quality.GPS
    times = [f.time_ms for f in fixes if f.time_ms is not None]
    assert times == sorted(times)


@pytest.mark.integration
async def test_real_gpsd_fed_by_gpsfake_and_restarted(gpsfake: GpsFake) -> None:
    seen: list[SourceStatus] = []
    source = GnssSource(
        parse_source_url(f"gpsd://127.0.0.1:{gpsfake.port}"),
        on_status=seen.append,
        backoff_max_s=0.2,
    )
    gpsfake.start()
    async with running(source) as queue:
        first = await take_timed(queue, 5, timeout_s=DEADLINE_S)
        assert_decoded_by_gpsd(first)
        assert source.status.state is SourceState.RECEIVING
        killed_at = len(seen)
        gpsfake.kill()
        await until(lambda: source.status.state is SourceState.DISCONNECTED, timeout_s=DEADLINE_S)
        gpsfake.start()  # gpsd comes back on the same port
        again = await take_timed(queue, 5, timeout_s=DEADLINE_S)
        assert_decoded_by_gpsd(again)
    assert source.status.reconnects >= 1
    down = [s.detail for s in seen[killed_at:] if s.state is SourceState.DISCONNECTED]
    assert down[0] == f"127.0.0.1:{gpsfake.port}: closed by gpsd"
    assert source.stats.rejected == 0
    assert source.sky.in_view.get(Constellation.GPS, 0) > 0
    assert again[-1].sats_used and again[-1].hdop is not None
