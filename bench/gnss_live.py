"""The agent's CPU share while it reads a live receiver at 1 Hz and at 10 Hz.

Run: .venv/bin/python bench/gnss_live.py [--seconds 30] [--rates 1,10]

A real `picket agent run` process (private Mosquitto, a provisioned device, a 631-point
plan over ~10 km so the engine's spatial index works as in the district) reads
serial:///dev/pts/N?baud=115200, a pseudo-terminal whose master this process writes: per
receiver cycle the 11-sentence multi-constellation set of bench/gnss.py, with a walker
circling a plan point at 1.2 m/s. The agent's CPU time (utime+stime, /proc/PID/stat) is
sampled 3 s into each run (start-up skipped) and at its end; RSS is VmRSS at the end.
Assumption: a Pi Zero 2 W (Cortex-A53 @ 1 GHz) is ~8x slower per core than this machine,
so its share of a Pi core is estimated as 8x the share measured here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import termios
import time
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.checkin.geo import offset
from bench.gnss import one_cycle
from provisioning.brokerconf import write_broker_config
from provisioning.device import provision_device
from provisioning.fleet import Fleet
from simulators.broker import Mosquitto
from simulators.nmea import gga, rmc

CENTRE = (29.265, 106.255)
POINTS = 631
PI_FACTOR = 8.0  # assumed: Pi Zero 2 W core ~8x slower than this machine's
SKIP_S = 3.0
WALK_R_M, WALK_MPS = 12.0, 1.2
CLK = os.sysconf("SC_CLK_TCK")


def write_plan(path: Path) -> None:
    rng = random.Random(7)
    feats = [(CENTRE, {"id": "p000", "radius_m": 30.0, "dwell_s": 5.0})]
    while len(feats) < POINTS:  # the rest spread over a 10 km square, clear of the walker
        north, east = rng.uniform(-5000, 5000), rng.uniform(-5000, 5000)
        if math.hypot(north, east) > 200:
            feats.append((offset(*CENTRE, north, east), {"id": f"p{len(feats):03d}"}))
    doc = {
        "type": "FeatureCollection",
        "version": 1,
        "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
             "properties": props}
            for (lat, lon), props in feats
        ],
    }  # fmt: skip
    path.write_text(json.dumps(doc), encoding="utf-8")


def cycle(t_ms: int, elapsed_s: float) -> bytes:
    """bench/gnss.py's cycle with GGA and RMC moved to the walker's position."""
    angle = WALK_MPS * elapsed_s / WALK_R_M
    lat, lon = offset(*CENTRE, WALK_R_M * math.cos(angle), WALK_R_M * math.sin(angle))
    course = (math.degrees(angle) + 90.0) % 360.0
    fix = {
        "GGA": gga(t_ms, lat, lon, satellites=14, hdop=0.8),
        "RMC": rmc(t_ms, lat, lon, speed_mps=WALK_MPS, course_deg=course),
    }
    return "".join(fix.get(s[3:6], s) for s in one_cycle(t_ms)).encode("ascii")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime (fields 14, 15)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def outbox_state(db: Path) -> tuple[int | None, int]:
    if not db.exists():
        return None, 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT v FROM meta WHERE k = 'time_ms'").fetchone()
        return (row[0] if row else None), con.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        con.close()


def wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while "points, GNSS" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"agent did not start (exit {proc.poll()}), see:\n{log.read_text()}")
        time.sleep(0.05)


def run_rate(rate: float, seconds: float, config: Path, master: int, slave: int) -> None:
    log = config.parent / f"agent-{rate:g}hz.log"
    t_before, before = outbox_state(config.parent / "outbox.db")
    termios.tcflush(slave, termios.TCIOFLUSH)
    cmd = [sys.executable, "-m", "picket", "-v", "agent", "run", "--config", str(config)]
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        wait_ready(proc, log)
        start, sent, nbytes, cpu0 = time.monotonic(), 0, 0, None
        while (now := time.monotonic() - start) < seconds:
            if cpu0 is None and now >= SKIP_S:
                cpu0, t0, fed0, bytes0 = cpu_s(proc.pid), now, sent, nbytes
            if proc.poll() is not None or not select.select([], [master], [], 2.0)[1]:
                raise RuntimeError(f"agent stopped reading (exit {proc.poll()}), see {log}")
            last_ms = int(time.time() * 1000)
            data = cycle(last_ms, now)
            os.write(master, data)
            sent, nbytes = sent + 1, nbytes + len(data)
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
        cpu, window, rss = cpu_s(proc.pid) - cpu0, now - t0, rss_mib(proc.pid)
    finally:
        code = stop(proc)
    text = log.read_text(errors="replace")
    warns = [ln for ln in text.splitlines() if " WARNING " in ln or " ERROR " in ln]
    t_after, records = outbox_state(config.parent / "outbox.db")
    fps, share, line = (sent - fed0) / window, 100 * cpu / window, (nbytes - bytes0) / window
    print(f"--- {rate:g} Hz: {sent} cycles fed in {now:.1f} s, measured over {window:.1f} s")
    print(f"  fixes/s fed  : {fps:.2f} ({line:.0f} B/s, {line / 115.2:.0f} % of 115200 baud)")
    print(f"  agent CPU    : {share:.2f} % of one core ({cpu * 1000:.0f} ms, ±{1000 / CLK:g} ms)")
    print(f"  CPU per fix  : {1000 * cpu / max(1, sent - fed0):.3f} ms")
    print(f"  agent RSS    : {rss:.1f} MiB")
    print(
        f"  budget       : Pi Zero 2 W is ~{PI_FACTOR:g}x slower per core than this machine: "
        f"estimated {PI_FACTOR * share:.1f} % of a Pi Zero 2 W core"
    )
    lag = "none" if t_after is None else f"{(t_after - last_ms) / 1000:+.2f} s from last fix fed"
    tb = "Traceback" in text
    ok = code == 0 and not tb and "GNSS source receiving" in text
    ok = ok and t_after is not None and t_after > (t_before or 0) and records > before
    print(f"  agent exit   : {code}, Traceback in log: {tb}, warnings: {len(warns)}")
    print(f"  consumed     : check-ins stored {records - before}, persisted time {lag}")
    for ln in warns[:3]:
        print(f"    {ln}")
    if not ok:
        raise RuntimeError(f"the agent did not consume the fixes at {rate:g} Hz, see:\n{text}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0, help="per rate (30)")
    ap.add_argument("--rates", default="1,10", help="receiver rates in Hz (1,10)")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    if args.seconds <= SKIP_S + 1 or any(r <= 0 for r in rates):
        ap.error(f"--seconds must be above {SKIP_S + 1:g} and rates above 0")
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[4] = attrs[5] = termios.B115200
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        with tempfile.TemporaryDirectory(prefix="picket-gnss-live-") as tmp:
            work = Path(tmp)
            now = int(time.time() * 1000)
            fleet = Fleet.init(work / "fleet", now)  # the real path: TLS, certificates, ACL
            broker = Mosquitto(work / "broker", tls_dir=work / "broker-tls")
            write_broker_config(fleet, work / "broker-tls", broker.port, now)
            with broker:
                files = provision_device(
                    fleet, "h0001", work / "h0001", broker_host=broker.host,
                    broker_port=broker.port, now_ms=now,
                )  # fmt: skip
                write_plan(files.directory / "plan.geojson")
                text = files.config.read_text(encoding="utf-8").replace(
                    'outbox = "outbox.db"\n', 'outbox = "outbox.db"\nplan = "plan.geojson"\n'
                )
                source = f"serial://{os.ttyname(slave)}?baud=115200"
                files.config.write_text(f'{text}\n[gnss]\nsource = "{source}"\n', "utf-8")
                print(f"agent: {POINTS}-point plan, GNSS {source}, {os.cpu_count()} CPUs here")
                for rate in rates:
                    run_rate(rate, args.seconds, files.config, master, slave)
    finally:
        os.close(master)
        os.close(slave)


if __name__ == "__main__":
    main()
