"""`picket gps …`: a technician's view of a receiver, and replay of NMEA logs.

`replay` is synchronous and pure (file → parser → JSON lines), so its output is the
parser's, byte for byte, on every run. `watch` runs the real source driver (serial, TCP,
gpsd or file) and redraws one status block per fix on a terminal, or prints a line per
fix otherwise; it stops after --seconds or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from agent.gnss.nmea import NmeaParser, NmeaStats
from agent.gnss.report import fix_json, iso_time
from agent.gnss.sources import GnssSource, SourceError, SourceStatus, parse_source_url
from contract.fix import Fix
from picket.errors import CliInputError


class GpsInputError(CliInputError):
    """Bad input for a gps command (exit code 2)."""


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
    w.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
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
    try:
        fh = args.file.open("rb")
    except OSError as exc:
        raise GpsInputError(f"cannot read {args.file}: {exc.strerror}") from exc
    with fh:
        for line in fh:
            if line.lstrip().startswith(b"#"):
                continue
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
            await loop()
    if not args.json:
        out.write(_block(None, src).split("\n")[0] + "\n")
    return 0


def watch(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        return asyncio.run(_watch(args, out or sys.stdout))
    except KeyboardInterrupt:
        return 130
