"""GNSS parsing cost: fixes per CPU-second from raw bytes, against pynmea2's bare parse.

Run: .venv/bin/python bench/gnss.py [--cycles N]

The stream is a realistic multi-constellation receiver at one cycle per fix: GNGGA,
GNGSA ×2 (GPS, BeiDou), GPGSV ×3, GBGSV ×2, GNRMC, GNVTG, GNGST (11 sentences per fix).
"pynmea2 bare" is pynmea2.parse() on the same sentences with nothing else done; the ratio
says what Picket's framing, field conversion and cycle assembly cost on top of it.
For the agent's CPU share while reading a live 1 Hz / 10 Hz receiver, see bench/gnss_live.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pynmea2

from agent.gnss.nmea import NmeaParser
from simulators.nmea import checksum, gga, rmc

T0 = 1_772_323_200_000


def sentence(body: str) -> str:
    return f"${body}*{checksum(body)}\r\n"


def one_cycle(t: int) -> list[str]:
    lat, lon = 29.265 + (t % 7) * 1e-6, 106.255
    return [
        gga(t, lat, lon, satellites=14, hdop=0.8),
        sentence("GNGSA,A,3,02,05,12,15,18,24,25,29,,,,,1.4,0.8,1.1,1"),
        sentence("GNGSA,A,3,201,203,206,209,212,216,,,,,,,1.4,0.8,1.1,4"),
        sentence("GPGSV,3,1,10,02,45,120,40,05,30,200,38,12,60,010,44,15,20,300,35"),
        sentence("GPGSV,3,2,10,18,50,080,42,24,10,250,30,25,70,150,46,29,35,330,39"),
        sentence("GPGSV,3,3,10,31,05,040,20,32,08,100,22"),
        sentence("GBGSV,2,1,06,201,40,140,38,203,55,220,41,206,25,080,33,209,65,310,44"),
        sentence("GBGSV,2,2,06,212,15,030,28,216,35,260,36"),
        rmc(t, lat, lon, speed_mps=1.2, course_deg=87.0),
        sentence("GNVTG,87.0,T,,M,2.3,N,4.3,K,A"),
        sentence("GNGST,000000.00,1.2,1.5,1.1,45.0,1.3,1.1,2.4"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20_000)
    n = ap.parse_args().cycles
    lines = [s for i in range(n) for s in one_cycle(T0 + i * 1000)]
    data = "".join(lines).encode("ascii")

    t0 = time.process_time()
    for s in lines:
        pynmea2.parse(s.strip(), check=False)
    bare = time.process_time() - t0

    parser = NmeaParser()
    t0 = time.process_time()
    fixes = parser.feed(data)
    fixes += parser.flush()
    ours = time.process_time() - t0
    assert len(fixes) == n, (len(fixes), n)

    per_fix = len(lines) / n
    print(f"stream: {n} fixes, {len(lines)} sentences ({per_fix:.0f} per fix), {len(data)} bytes")
    for name, cpu in (("pynmea2 bare parse", bare), ("Picket NmeaParser ", ours)):
        print(f"{name}: {len(lines) / cpu:9.0f} sentences/CPU-s = {n / cpu:8.0f} fixes/CPU-s")
    print(f"ratio Picket / pynmea2 bare: {bare / ours:.2f}")
    print(f"at 10 Hz one receiver costs {10 * ours / n * 100:.3f} % of a core for parsing")


if __name__ == "__main__":
    main()
