"""`picket gps replay` and `picket gps watch` as a technician runs them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.gnss.nmea import NmeaParser
from picket.cli import main
from simulators.nmea import gga, rmc

CORPUS = Path(__file__).resolve().parent / "corpus" / "gpsd-nmea"
LOGS = sorted(CORPUS.glob("*.log"))
KEYS = {"time", "lat", "lon", "alt", "mode", "hdop", "hacc_m", "sats", "speed_mps",
        "course_deg", "time_source"}  # fmt: skip
T0 = 1_772_323_200_000


def reference_fixes(path: Path) -> int:
    parser = NmeaParser()
    n = 0
    for line in path.read_bytes().splitlines(keepends=True):
        if not line.lstrip().startswith(b"#"):
            n += len(parser.feed(line))
    return n + len(parser.flush())


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_replay_json_works_on_every_corpus_log(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gps", "replay", str(log), "--json"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == reference_fixes(log)
    for row in rows:
        assert row.keys() >= KEYS
        assert -90 <= row["lat"] <= 90 and -180 <= row["lon"] <= 180
        assert row["time"] is None or row["time"].endswith("Z")
        assert row["time_source"] in {"none", "gnss", "gnss_rollover", "persisted", "ntp"}
    assert "sentences" in err


def test_corpus_is_present() -> None:
    assert len(LOGS) > 50, f"the committed corpus is missing from {CORPUS}"


def test_replay_rollover_and_comments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = CORPUS / "april6_2019.log"
    assert main(["gps", "replay", str(log), "--json", "--not-before", "2019-01-01"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    dated = [r for r in rows if r["time"]]
    assert dated and dated[0]["time"] == "2019-04-07T00:02:31.420Z"
    assert dated[0]["time_source"] == "gnss_rollover"
    # a '#' line in a file is a comment, not an error
    f = tmp_path / "c.log"
    f.write_text("# receiver: test\n" + gga(T0, 29.265, 106.255) + rmc(T0, 29.265, 106.255,
                 speed_mps=0, course_deg=0))  # fmt: skip
    assert main(["gps", "replay", str(f)]) == 0
    out, err = capsys.readouterr()
    assert "2026-03-01T00:00:00.000Z" in out
    assert "malformed 0" in err


def test_replay_bad_input_exits_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "picket", "gps", "replay", "/no/such.log"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "cannot read /no/such.log" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "picket", "gps", "replay", "x.log", "--not-before", "yesterday"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "'yesterday' is not a date" in r.stderr


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("ftp://x", "unknown scheme"),
        ("tcp://127.0.0.1", "missing port"),
        ("serial:///dev/ttyUSB0?baud=1234", "not a standard rate"),
    ],
)
def test_watch_refuses_bad_urls(source: str, needle: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "picket", "gps", "watch", source, "--seconds", "1"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr


async def test_watch_shows_a_live_tcp_receiver() -> None:
    """A receiver on TCP: watch prints a line per fix and the source's state."""

    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            for i in range(40):
                t = T0 + i * 1000
                writer.write((gga(t, 29.265, 106.255) + rmc(t, 29.265, 106.255, speed_mps=0,
                              course_deg=0)).encode())  # fmt: skip
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "picket", "gps", "watch", f"tcp://127.0.0.1:{port}",
            "--seconds", "3",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        server.close()
        await server.wait_closed()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "source receiving" in text
    assert "2026-03-01T00:00:0" in text
    assert "29.2650000" in text
