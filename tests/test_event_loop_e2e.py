"""The whole event loop, end to end: a member reports, the center dispatches, the loop closes.

Everything is the real part. The fleet is set up as a technician sets it up (tests/peers.py
`tls_fleet`: Mosquitto with client certificates and the per-device ACL), the center runs
`center/service.py` in-process with its certificate, and two handsets run the real agent
(`AgentRun`, agent/daemon.py) in-process, each with its provisioned identity and an NMEA log
replayed through the file source, so each has a fix whose accuracy the log states (GST:
3 m and 4 m of error per axis, 5 m in all).

- The reporter reports through the running agent, as the member's screen will: a photo from
  the simulated camera and a note in Chinese. The center's events table gets the event (the
  category, the place and accuracy of the fix, GNSS time), the note's text once its
  attachment is whole, and the photo whole, its bytes hashing to the digest the signed
  record lists; then the handset's attachment store is empty.
- Fault: the broker is stopped while the photo is on its way (the center holds some of it)
  and started again. The upload continues from what the center holds: the receiver never
  gets a chunk of what it held already (its `repeated` count), and nothing is lost.
- The way back: `picket center events accept|dispatch|close … --fleet` (the real command, in
  a subprocess) sign and publish EVENT_STATUS commands; the reporter's own events show the
  event dispatched to the handler, the handler's show it was sent to them; the handler's
  result report (its own photo, `answers` the event) resolves it at the center; after
  `close`, the reporter sees it closed.
- Open311: a GeoReport v2 client that is not Picket's (`georeport`) reads the request back,
  and its `media_url` serves the very bytes the record's digest names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests
from georeport import GeoReport  # type: ignore[import-untyped]
from PIL import Image

from agent.config import load_config
from agent.daemon import AgentRun, NotRunning
from agent.errors import StorageError
from agent.events.attachstore import QuotaFull
from agent.events.mine import MyEvent
from agent.events.photos import PhotoError
from center.events.api import Api, serve
from center.events.catalogue import DEFAULT, load
from center.events.store import EventDb
from contract.eventcommands import EventStatusCode
from contract.events import AttachmentKind, PlaceSource
from contract.fix import TimeSource
from simulators.camera import SimCamera
from simulators.nmea import checksum, gga, rmc
from tests.peers import DEADLINE_S, TlsFleet, now_ms, picket_json, running_center, wait_for

pytestmark = pytest.mark.integration

KEY = "k-open311-e2e-0001"
NOTE = "6号小区6网格：装修垃圾未清运，堆在3栋楼道口"
RESULT = "已清运完毕"
RUBBISH = 1  # the default catalogue's "decoration rubbish not cleared"
HERE = {
    "h0001": (29.2651234, 106.2551234),
    "h0002": (29.2712345, 106.2498765),
    "h0003": (29.2600000, 106.2600000),
}
ACCURACY_M = 5.0  # GST: 3 m of error in latitude, 4 m in longitude
# After the broker comes back the center may first wait out its 10 s publish timeout (a
# PUBACK the stopped broker never sent), and a question the handset asked before the center
# subscribed again is asked again only after the uploader's 15 s: the deadline covers both.
RESUMED_S = DEADLINE_S + 30


def _gst(t_ms: int) -> str:
    hhmmss = f"{t_ms // 3_600_000 % 24:02d}{t_ms // 60_000 % 60:02d}{t_ms // 1000 % 60:02d}"
    body = f"GNGST,{hhmmss}.{t_ms // 10 % 100:02d},1.0,,,,3.0,4.0,5.0"
    return f"${body}*{checksum(body)}\r\n"


def handset(fleet: TlsFleet, device: str, tmp: Path, events: str = "") -> AgentRun:
    """`device` provisioned over TLS, its receiver an NMEA log of where it stands (now), its
    uploads in 4 KiB chunks (so that a photo takes dozens of them)."""
    files = fleet.provision(device)
    lat, lon = HERE[device]
    t = now_ms()
    log = tmp / f"{device}.nmea"
    log.write_text(
        "".join(
            gga(t + i * 1000, lat, lon)
            + _gst(t + i * 1000)
            + rmc(t + i * 1000, lat, lon, speed_mps=0, course_deg=0)
            for i in range(3)
        )
    )
    more = f'\n[gnss]\nsource = "file://{log}"\n[events]\nchunk_kib = 4\n{events}'
    files.config.write_text(files.config.read_text() + more)
    return AgentRun(load_config(files.config))


@contextlib.asynccontextmanager
async def running(*runs: AgentRun) -> AsyncIterator[None]:
    """The agents running, each connected and holding a fix; stopped after."""
    tasks = [asyncio.create_task(r.run(), name=r.config.device) for r in runs]
    try:

        def ready() -> bool:
            for task in tasks:
                if task.done():
                    task.result()  # an agent that ended raises here
            return all(
                r.running is not None
                and r.running.uplink.connected.is_set()
                and r.running.agent.last_fix is not None
                for r in runs
            )

        await wait_for(ready, DEADLINE_S, "both agents connected, each with a fix")
        yield
    finally:
        for r in runs:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)


def center_rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def held_at_center(db: Path, digest: bytes) -> tuple[int, int, bool] | None:
    rows = center_rows(
        db, "SELECT held, size, complete FROM event_attachments WHERE sha256 = ?", digest
    )
    return None if not rows else (rows[0][0], rows[0][1], bool(rows[0][2]))


def status_at_center(db: Path, number: int) -> EventStatusCode:
    (row,) = center_rows(db, "SELECT status FROM events WHERE number = ?", number)
    return EventStatusCode(row[0])


def mine(run: AgentRun, number: int) -> MyEvent | None:
    return next((e for e in run.my_events() if e.number == number), None)


async def test_a_report_goes_round_the_whole_loop_over_the_real_broker_and_center(
    tmp_path: Path, tls_fleet: TlsFleet
) -> None:
    reporter = handset(tls_fleet, "h0001", tmp_path)
    handler = handset(tls_fleet, "h0002", tmp_path)
    db = tmp_path / "center.db"
    broker = tls_fleet.broker
    camera = SimCamera(seed=3).jpeg()
    async with (
        running_center(tmp_path, tls_fleet.registry, broker, tls=tls_fleet.center_context()) as
        center,
        running(reporter, handler),
    ):  # fmt: skip
        # -- the member reports; the broker goes down while the photo is on its way --------
        report = await reporter.report_event(category=RUBBISH, note=NOTE, photos=[camera])
        (photo,) = [a for a in report.attachments if a.kind is AttachmentKind.PHOTO]
        (note,) = [a for a in report.attachments if a.kind is AttachmentKind.NOTE]
        assert reporter.running is not None
        store = reporter.running.store

        def under_way() -> bool:
            held = store.get(photo.sha256)
            return held is not None and held.held > 0

        await wait_for(under_way, DEADLINE_S, "the center holding the photo's first chunks")
        broker.stop()
        at_stop = held_at_center(db, photo.sha256)
        assert at_stop is not None and 0 < at_stop[0] < at_stop[1] and not at_stop[2], at_stop
        await wait_for(
            lambda: (
                not center.ready.is_set()
                and reporter.running is not None
                and not reporter.running.uplink.connected.is_set()
            ),
            DEADLINE_S,
            "the center and the reporter to see the broker gone",
        )
        broker.start()

        def delivered() -> bool:
            return all(
                (h := held_at_center(db, a.sha256)) is not None and h[2] for a in (photo, note)
            )

        await wait_for(delivered, RESUMED_S, "the photo and the note whole at the center")
        await wait_for(lambda: store.usage().waiting == 0, DEADLINE_S, "the handset's bytes gone")
        assert store.usage().used_bytes == 0
        for a in (photo, note):  # the bytes are gone from the handset, not only counted out
            with pytest.raises(StorageError, match="not held"):
                store.read(a.sha256, 0, 1)
        assert center.receiver.stats.repeated == 0  # resumed from what the center held
        assert center.receiver.stats.refused == 0

        # the event at the center: category, the fix, GNSS time, the note's text
        (row,) = center_rows(
            db,
            "SELECT number, category, place, lat_e7, lon_e7, accuracy_dm, note, status"
            " FROM events WHERE device = 'h0001' AND seq = ?",
            report.seq,
        )
        number, category, place, lat_e7, lon_e7, accuracy_dm, text, status = row
        lat, lon = HERE["h0001"]
        assert (category, place, text, status) == (
            RUBBISH, PlaceSource.FIX, NOTE, EventStatusCode.REPORTED,
        )  # fmt: skip
        assert abs(lat_e7 / 1e7 - lat) < 1e-6 and abs(lon_e7 / 1e7 - lon) < 1e-6
        assert accuracy_dm == ACCURACY_M * 10
        ((source, reported_ms),) = center_rows(
            db, "SELECT time_source, time_ms FROM records WHERE device = 'h0001' AND seq = ?",
            report.seq,
        )  # fmt: skip
        assert source == TimeSource.GNSS and abs(reported_ms - now_ms()) < 600_000
        ((stored,),) = center_rows(
            db, "SELECT data FROM event_attachments WHERE sha256 = ?", photo.sha256
        )
        assert hashlib.sha256(stored).digest() == photo.sha256 and len(stored) == photo.size

        # -- the center accepts and dispatches it to the handler -----------------------------
        common = [
            "--db", db, "--fleet", tls_fleet.fleet.dir, "--broker", f"{broker.host}:{broker.port}",
            "--tls", tls_fleet.center_tls, "--json",
        ]  # fmt: skip
        accepted = await picket_json("center", "events", "accept", number, *common)
        assert [s["device"] for s in accepted["sent"]] == ["h0001"]
        await wait_for(
            lambda: (
                (e := mine(reporter, number)) is not None and e.status is EventStatusCode.ACCEPTED
            ),
            DEADLINE_S,
            "the reporter to see its report accepted",
        )
        dispatched = await picket_json(
            "center", "events", "dispatch", number, "--to", "h0002", *common
        )
        assert sorted(s["device"] for s in dispatched["sent"]) == ["h0001", "h0002"]
        await wait_for(
            lambda: (
                (e := mine(reporter, number)) is not None and e.status is EventStatusCode.DISPATCHED
            ),
            DEADLINE_S,
            "the reporter to see its report dispatched",
        )
        await wait_for(
            lambda: mine(handler, number) is not None, DEADLINE_S, "the handler to be told"
        )
        told = mine(reporter, number)
        assert told is not None
        assert (told.seq, told.reporter, told.assignee, told.note, told.photos) == (
            report.seq, "h0001", "h0002", NOTE, 1,
        )  # fmt: skip
        assert told.deadline_ms is not None and told.deadline_ms > now_ms()
        job = mine(handler, number)
        assert job is not None
        assert (job.seq, job.reporter, job.category, job.status, job.assignee) == (
            None, "h0001", RUBBISH, EventStatusCode.DISPATCHED, "h0002",
        )  # fmt: skip

        # -- the handler reports the result, with a photo: resolved at the center ----------
        result = await handler.report_event(
            category=RUBBISH, note=RESULT, photos=[SimCamera(seed=11).jpeg()], answers=number
        )
        await wait_for(
            lambda: status_at_center(db, number) is EventStatusCode.RESOLVED,
            DEADLINE_S,
            "the event resolved by the handler's result report",
        )
        ((answers, result_report),) = center_rows(
            db,
            "SELECT r.answers, e.result_report FROM events r, events e"
            " WHERE r.device = 'h0002' AND r.seq = ? AND e.number = ?",
            result.seq,
            number,
        )
        assert answers == number and result_report is not None

        # -- closed: the reporter sees the loop closed ----------------------------------------
        closed = await picket_json("center", "events", "close", number, *common)
        assert "h0001" in [s["device"] for s in closed["sent"]]
        await wait_for(
            lambda: (
                (e := mine(reporter, number)) is not None and e.status is EventStatusCode.CLOSED
            ),
            DEADLINE_S,
            "the reporter to see its report closed",
        )
        assert status_at_center(db, number) is EventStatusCode.CLOSED
        assert center.receiver.stats.repeated == 0

    # -- Open311: a client that is not Picket's reads the request and its photo ---------------
    events = EventDb(db)
    api = Api(events, load(DEFAULT), {KEY: "test"}, now_ms)
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(api, "127.0.0.1", 0, stop, port.set_result))
    try:
        base = f"http://127.0.0.1:{await asyncio.wait_for(port, DEADLINE_S)}"
        client = GeoReport(base, api_key=KEY)
        got = await asyncio.to_thread(client.get_service_request, str(number))
        assert str(got["service_request_id"]) == str(number)
        assert (got["status"], got["service_code"], got["description"]) == (
            "closed", str(RUBBISH), NOTE,
        )  # fmt: skip
        assert abs(got["lat"] - lat) < 1e-6 and abs(got["long"] - lon) < 1e-6
        media = await asyncio.to_thread(requests.get, got["media_url"], timeout=DEADLINE_S)
        assert media.status_code == 200 and media.headers["Content-Type"] == "image/jpeg"
        assert hashlib.sha256(media.content).digest() == photo.sha256
        assert Image.open(io.BytesIO(media.content)).size == Image.open(io.BytesIO(camera)).size
    finally:
        stop.set()
        await asyncio.wait_for(server, DEADLINE_S)
        events.close()


async def test_the_running_agent_refuses_what_it_cannot_save_and_says_why(
    tmp_path: Path, tls_fleet: TlsFleet
) -> None:
    """No center runs: nothing is acknowledged, so every attachment stays waiting. Three
    photos of about 0.3 MB fit a quota of 1 MB, a fourth does not; a file that is not a
    photo is refused; neither refusal stores anything. Not running, the agent says so."""
    run = handset(tls_fleet, "h0003", tmp_path, "attachment_quota_mb = 1\n")
    with pytest.raises(NotRunning, match="h0003: the agent is not running"):
        await run.report_event(category=RUBBISH, note=NOTE)
    async with running(run):
        three = [SimCamera(seed=s).jpeg() for s in (1, 2, 4)]
        first = await run.report_event(category=RUBBISH, photos=three)
        with pytest.raises(QuotaFull, match=r"photo storage full: .* by 3 attachments waiting"):
            await run.report_event(category=RUBBISH, photos=[SimCamera(seed=5).jpeg()])
        with pytest.raises(PhotoError):
            await run.report_event(category=RUBBISH, note=NOTE, photos=[b"%PDF-1.7 not a photo"])
        assert [(e.seq, e.photos) for e in run.my_events()] == [(first.seq, 3)]
        assert run.running is not None and run.running.store.usage().waiting == 3
    with pytest.raises(NotRunning):
        run.my_events()
