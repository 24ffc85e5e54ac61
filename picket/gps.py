"""`picket gps …`: a technician's view of a receiver, and replay of NMEA logs.

`replay` is synchronous and pure (file → parser → JSON lines), so its output is the
parser's, byte for byte, on every run. It streams the log through `log_lines`, which holds
one chunk and one line at a time: a log of any size replays in the same memory, and a file
that is not a log at all (/dev/zero, a disk image) is refused at its first line that runs
past MAX_LOG_LINE instead of being read without end. `checkin detect` reads its track the
same way. `watch` runs the real source driver (serial, TCP, gpsd or file) and redraws one
status block per fix on a terminal, or prints a line per fix otherwise; it stops after
--seconds or on Ctrl-C. A source it cannot use (a bad URL, a log that is not there) is
refused before it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from agent.gnss.nmea import NmeaParser, NmeaStats
from agent.gnss.report import fix_json, iso_time
from agent.gnss.sources import GnssSource, SourceError, SourceStatus, parse_source_url
from agent.gnss.urls import check_source
from contract.fix import Fix
from picket.errors import CliInputError

# The longest line a log may hold. An NMEA sentence is at most 82 bytes and the parser cuts
# lines at 128 (docs/gnss.md); logs add comments and the odd merged line, never kilobytes.
MAX_LOG_LINE = 4096
READ_CHUNK = 65_536


class GpsInputError(CliInputError):
    """Bad input for a gps command (exit code 2)."""


def log_lines(path: Path) -> Iterator[bytes]:
    """The lines of an NMEA log with their line ends, streamed; '#' comments are dropped.
    GpsInputError when the file cannot be read, or a line runs past MAX_LOG_LINE bytes."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise GpsInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    number, carry = 0, b""
    with fh:
        while True:
            try:
                chunk = fh.read(READ_CHUNK)
            except OSError as exc:
                raise GpsInputError(f"cannot read {path}: {exc.strerror or exc}") from None
            if not chunk:
                break
            *lines, carry = (carry + chunk).split(b"\n")
            for line in lines:
                number += 1
                _fits(path, number, line)
                if not line.lstrip().startswith(b"#"):
                    yield line + b"\n"
            _fits(path, number + 1, carry)
    if carry and not carry.lstrip().startswith(b"#"):
        yield carry


def _fits(path: Path, number: int, line: bytes) -> None:
    if len(line) > MAX_LOG_LINE:
        raise GpsInputError(
            f"{path}: line {number} runs past {MAX_LOG_LINE} bytes without a line end: "
            "not an NMEA log (is the path right?)"
        )


def seconds_arg(text: str) -> float:
    """A duration in seconds above 0 (finite)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds above 0")
    return value


def date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-01-01") from None


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gps = sub.add_parser("gps", help="GNSS receivers: watch live, replay logs").add_subparsers(
        dest="gps_command", required=True, metavar="COMMAND"
    )
    rp = gps.add_parser("replay", help="parse an NMEA log; one line per fix")
    rp.add_argument("file", type=Path, help="NMEA log ('#' lines are comments)")
    rp.add_argument("--json", action="store_true", help="one JSON object per fix")
    rp.add_argument("--not-before", type=date_arg, help="dates before this: week rollover")
    w = gps.add_parser("watch", help="live view of a receiver")
    w.add_argument(
        "source", help="serial:///dev/ttyUSB0?baud=9600, tcp://h:p, gpsd://h:p, file://p"
    )
    w.add_argument(
        "--seconds", type=seconds_arg, help="stop after this long (default: until Ctrl-C)"
    )
    w.add_argument("--json", action="store_true", help="one JSON object per fix")
    w.add_argument("--not-before", type=date_arg, help="dates before this: week rollover")


def _stats_line(s: NmeaStats) -> str:
    return (
        f"sentences {s.sentences} · fixes {s.fixes} · bad checksum {s.bad_checksum} · "
        f"malformed {s.malformed} · unsupported {s.unsupported} · no checksum {s.no_checksum}"
    )


def replay(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = NmeaParser(not_before=args.not_before)
    for line in log_lines(args.file):
        for fix in parser.feed(line):
            _emit(fix, args.json, out)
    for fix in parser.flush():
        _emit(fix, args.json, out)
    print(f"{args.file}: {_stats_line(parser.stats)}", file=sys.stderr)
    return 0


def _emit(fix: Fix, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(fix_json(fix)) + "\n")
        return
    acc = "?" if fix.accuracy_m is None else f"{fix.accuracy_m:.1f}"
    out.write(
        f"{iso_time(fix.time_ms) or '-':24}  {fix.lat:12.7f} {fix.lon:13.7f}  "
        f"mode {int(fix.mode)}  ±{acc} m  sats {fix.satellites:2d}  "
        f"{fix.time_source.name.lower()}\n"
    )


def _block(fix: Fix | None, src: GnssSource) -> str:
    st = src.status
    lines = [f"source   {st.state.name.lower()} — {st.detail} (reconnects {st.reconnects})"]
    if fix is None:
        lines.append("fix      none yet")
    else:
        acc = "unknown" if fix.accuracy_m is None else f"±{fix.accuracy_m:.1f} m"
        used = ", ".join(f"{c} {n}" for c, n in fix.sats_used) or f"{fix.satellites} (total)"
        lines += [
            f"fix      {fix.lat:.7f} {fix.lon:.7f}  alt {fix.alt_m}  mode {int(fix.mode)}"
            f"  quality {fix.quality.name.lower()}",
            f"accuracy {acc} ({'GST' if fix.accuracy_from_gst else 'HDOP'})  hdop {fix.hdop}"
            f"  pdop {fix.pdop}",
            f"time     {iso_time(fix.time_ms) or 'unknown'} ({fix.time_source.name.lower()})",
            f"used     {used}",
        ]
    in_view = ", ".join(f"{c} {n}" for c, n in sorted(src.sky.in_view.items())) or "-"
    lines.append(f"in view  {in_view}")
    s = src.stats
    lines.append(
        f"counts   sentences {getattr(s, 'sentences', '-')} · fixes {s.fixes} · "
        f"rejected {s.rejected} · unsupported {getattr(s, 'unsupported', '-')}"
    )
    return "\n".join(lines)


async def _watch(args: argparse.Namespace, out: TextIO) -> int:
    try:
        spec = parse_source_url(args.source)
        check_source(spec)
    except SourceError as exc:
        raise GpsInputError(str(exc)) from exc
    tty = out.isatty() and not args.json

    def on_status(status: SourceStatus) -> None:
        if not tty and not args.json:
            out.write(f"source {status.state.name.lower()}: {status.detail}\n")
            out.flush()

    src = GnssSource(spec, not_before=args.not_before, on_status=on_status)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds

    async def loop() -> None:
        async for fix in src.fixes():
            if args.json:
                out.write(json.dumps(fix_json(fix)) + "\n")
            elif tty:
                out.write("\x1b[H\x1b[J" + _block(fix, src) + "\n")
            else:
                _emit(fix, False, out)
            out.flush()

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(
            None if deadline is None else max(0.0, deadline - time.monotonic())
        ):
            try:
                await loop()
            except SourceError as exc:  # a log that went away or failed while read
                raise GpsInputError(str(exc)) from exc
    if not args.json:
        out.write(_block(None, src).split("\n")[0] + "\n")
    return 0


def watch(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        return asyncio.run(_watch(args, out or sys.stdout))
    except KeyboardInterrupt:
        return 130
