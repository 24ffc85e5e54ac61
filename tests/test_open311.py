"""Open311 GeoReport v2 at the center, through a real HTTP server and a client not Picket's.

`picket center api` runs as a real process on a free loopback port over a real center
database; `georeport` (PyPI, 0.3.1: a GeoReport v2 client written for city endpoints) lists
the services, reads requests and their status back. It has no call for filing, so filing is
a plain form POST with `requests`, the HTTP library georeport itself uses. The loop is the
operator's: a request filed over HTTP is rejected with `picket center events reject` and the
client reads the new status and the reason. Bad POSTs and queries must get the spec's error
array with the HTTP status of the same code; the spec's 90-day window and 1,000-request cap
are checked on events placed around them; a request's media_url serves its photo.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from georeport import GeoReport  # type: ignore[import-untyped]
from PIL import Image

from center.events import lifecycle
from center.events import store as ev
from center.events.store import EventDb, NewEvent
from center.store import CenterStore
from tests.peers import DEADLINE_S

KEY = "k-3f9a1c77e2b04d51"
DAY = 86_400_000
LAT, LON = 29.5012345, 106.3054321
CAP_CODE = 8  # the category that holds the 1,005 events of the cap test


@dataclass
class Server:
    root: str
    db: Path
    now_ms: int
    old: int  # an event reported 100 days ago
    photo: bytes
    with_photo: int


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, "JPEG", quality=80)
    return out.getvalue()


def _listening(proc: subprocess.Popen[str]) -> str:
    """The URL `picket center api` prints once it listens (polled to a deadline)."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        if sel.select(timeout=0.05):
            line = proc.stdout.readline()
            if line.startswith("listening on "):
                return line.split()[-1]
            assert line, (
                f"picket center api ended: {proc.wait()} {proc.stderr and proc.stderr.read()}"
            )
    raise AssertionError("picket center api did not listen within the deadline")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("open311")
    db_path = tmp / "center.db"
    CenterStore(db_path).close()
    keys = tmp / "keys.txt"
    keys.write_text(f"# the city's hotline\nhotline {KEY}\n")
    now = int(time.time() * 1000)
    photo = _jpeg()
    db = EventDb(db_path)
    with db.write() as sql:
        old, _ = ev.add_event(sql, NewEvent("h0001", 1, 1, now - 100 * DAY, place=0), now)
        shown, _ = ev.add_event(
            sql,
            NewEvent("h0001", 2, 2, now - DAY, place=0, lat_e7=295_000_000, lon_e7=1_063_000_000),
            now,
        )
        sha = hashlib.sha256(photo).digest()
        ev.add_attachment(sql, shown, sha, 1, len(photo), data=photo)
        for i in range(1005):
            ev.add_event(sql, NewEvent("h0002", 100 + i, CAP_CODE, now - 2 * DAY + i), now)
    db.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "picket",
            "center",
            "api",
            "--db",
            str(db_path),
            "--listen",
            "127.0.0.1:0",
            "--keys",
            str(keys),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        root = _listening(proc)
        yield Server(root, db_path, now, old, photo, shown)
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE_S)


def client(s: Server) -> GeoReport:
    return GeoReport(s.root, api_key=KEY)


def file(s: Server, **fields: str) -> requests.Response:
    return requests.post(f"{s.root}/requests.json", data=fields, timeout=DEADLINE_S)


def spec_error(r: requests.Response, code: int) -> str:
    """The description of the spec's error array, after checking its shape and status."""
    assert r.status_code == code, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, list) and len(body) == 1 and set(body[0]) == {"code", "description"}
    assert body[0]["code"] == code
    return str(body[0]["description"])


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picket", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- services ---------------------------------------------------------------------------------


def test_a_client_lists_the_services(server: Server) -> None:
    services = client(server).get_service_list()
    by_code = {s["service_code"]: s for s in services}
    assert {"1", "2", "3", "4", "5", "6", "7", "8", "9", "99"} <= set(by_code)
    fields = {
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    }
    assert all(set(s) == fields for s in services)
    assert by_code["1"]["service_name"] == "Decoration rubbish not cleared"
    assert "装修垃圾未清理" in by_code["1"]["keywords"]
    assert by_code["4"]["group"] == "消防安全" and by_code["4"]["metadata"] is False
    assert client(server).get_service_definition("4") == {"service_code": "4", "attributes": []}


def test_an_unknown_service_is_the_spec_404(server: Server) -> None:
    r = requests.get(f"{server.root}/services/12345.json", timeout=DEADLINE_S)
    assert "12345" in spec_error(r, 404)


# --- filing and reading back --------------------------------------------------------------------


def test_a_filed_request_is_read_back_and_follows_the_operator(server: Server) -> None:
    r = file(
        server,
        api_key=KEY,
        service_code="7",
        lat=str(LAT),
        long=str(LON),
        description="卖菜的摊子占了人行道 (vendors on the sidewalk)",
    )
    assert r.status_code == 200, r.text
    (answer,) = r.json()
    rid = answer["service_request_id"]
    got = client(server).get_service_request(rid)
    assert (got["service_request_id"], got["status"], got["service_code"]) == (rid, "open", "7")
    assert got["service_name"] == "Street obstruction by vendors"
    assert got["description"] == "卖菜的摊子占了人行道 (vendors on the sidewalk)"
    assert abs(got["lat"] - LAT) < 1e-7 and abs(got["long"] - LON) < 1e-7
    filed = dt.datetime.fromisoformat(got["requested_datetime"])
    assert filed.tzinfo is not None
    assert abs(filed.timestamp() * 1000 - time.time() * 1000) < 600_000

    done = cli("center", "events", "reject", rid, "--db", str(server.db), "--reason", "not ours")
    assert done.returncode == 0, done.stderr
    got = client(server).get_service_request(rid)
    assert got["status"] == "closed"
    assert "not ours" in got["status_notes"]
    closed = client(server).get_service_requests(status="closed")
    assert rid in {x["service_request_id"] for x in closed}
    opened = client(server).get_service_requests(status="open", service_code="7")
    assert rid not in {x["service_request_id"] for x in opened}


def test_an_address_is_enough_and_kept(server: Server) -> None:
    r = file(server, api_key=KEY, service_code="2", address_string="福城社区六网格 3 栋")
    rid = r.json()[0]["service_request_id"]
    got = client(server).get_service_request(rid)
    assert (got["address"], got["lat"], got["long"]) == ("福城社区六网格 3 栋", None, None)


def test_a_request_with_a_photo_serves_it(server: Server) -> None:
    got = client(server).get_service_request(str(server.with_photo))
    r = requests.get(got["media_url"], timeout=DEADLINE_S)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert r.content == server.photo
    assert Image.open(io.BytesIO(r.content)).size == (64, 48)
    r = requests.get(f"{server.root}/media/{'ab' * 32}.jpg", timeout=DEADLINE_S)
    spec_error(r, 404)


AT = {"lat": "29.5", "long": "106.3"}
GOOD = {"api_key": KEY, "service_code": "1", **AT}


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"service_code": "1", **AT}, 403, "api_key was not provided"),
        ({**GOOD, "api_key": "x" * 20}, 403, "api_key is not valid"),
        ({"api_key": KEY, **AT}, 400, "service_code was not provided"),
        ({**GOOD, "service_code": "4242"}, 404, "4242"),
        ({**GOOD, "service_code": "abc"}, 404, "abc"),
        ({"api_key": KEY, "service_code": "1"}, 400, "location is needed"),
        ({"api_key": KEY, "service_code": "1", "lat": "29.5"}, 400, "together"),
        ({**GOOD, "lat": "north"}, 400, "lat"),
        ({**GOOD, "lat": "95"}, 400, "outside"),
        ({**GOOD, "long": "nan"}, 400, "long"),
        ({**GOOD, "media_url": "file:///etc/passwd"}, 400, "media_url"),
        ({**GOOD, "description": "x" * 4001}, 400, "description"),
    ],
)
def test_a_bad_post_gets_the_spec_error(
    server: Server, fields: dict[str, str], code: int, says: str
) -> None:
    before = len(client(server).get_service_requests(service_code="1"))
    assert says in spec_error(file(server, **fields), code)
    assert len(client(server).get_service_requests(service_code="1")) == before  # nothing filed


# --- queries ------------------------------------------------------------------------------------


def test_the_default_window_is_90_days_and_a_window_finds_older(server: Server) -> None:
    c = client(server)
    ids = {x["service_request_id"] for x in c.get_service_requests(service_code="1")}
    assert str(server.old) not in ids
    day = dt.datetime.fromtimestamp((server.now_ms - 100 * DAY) / 1000, tz=dt.UTC)
    start = (day - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (day + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    ids = {x["service_request_id"] for x in c.get_service_requests(start_date=start, end_date=end)}
    assert ids == {str(server.old)}


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-04-02T00:00:00Z"}, "90 days"),
        ({"start_date": "2026-03-01T00:00:00Z", "end_date": "2026-02-01T00:00:00Z"}, "before"),
        ({"start_date": "yesterday"}, "ISO 8601"),
        ({"start_date": "2026-03-01T00:00:00"}, "time zone"),
        ({"status": "pending"}, "status"),
        ({"service_code": "1;DROP"}, "service_code"),
        ({"service_request_id": "1,x"}, "service_request_id"),
    ],
)
def test_a_bad_query_gets_the_spec_error(server: Server, params: dict[str, str], says: str) -> None:
    r = requests.get(f"{server.root}/requests.json", params=params, timeout=DEADLINE_S)
    assert says in spec_error(r, 400)


def test_at_most_1000_requests_the_most_recent_first(server: Server) -> None:
    got = client(server).get_service_requests(service_code=str(CAP_CODE))
    assert len(got) == 1000
    times = [x["requested_datetime"] for x in got]
    assert times == sorted(times, reverse=True)
    # the fixture stored events 1 and 2, then the 1,005 of this code as 3..1007, oldest first:
    # the five oldest are left out
    assert {int(x["service_request_id"]) for x in got} == set(range(8, 1008))


def test_requests_by_id_and_unknown_ones(server: Server) -> None:
    c = client(server)
    both = c.get_service_requests(service_request_id=f"{server.old},{server.with_photo}")
    assert {x["service_request_id"] for x in both} == {str(server.old), str(server.with_photo)}
    r = requests.get(f"{server.root}/requests/999999.json", timeout=DEADLINE_S)
    assert "999999" in spec_error(r, 404)
    r = requests.get(f"{server.root}/requests.xml", timeout=DEADLINE_S)
    spec_error(r, 404)


def test_a_merged_request_is_closed_and_says_into_which(server: Server) -> None:
    db = EventDb(server.db)
    now = int(time.time() * 1000)
    with db.write() as sql:
        a, _ = ev.add_event(sql, NewEvent("h0003", 1, 3, now - 5000, place=0), now)
        b, _ = ev.add_event(sql, NewEvent("h0004", 1, 3, now - 4000, place=0), now)
        ev.act(sql, b, lifecycle.Merge(a), by="op", at_ms=now)
    db.close()
    got = client(server).get_service_request(str(b))
    assert got["status"] == "closed" and f"merged into request {a}" in got["status_notes"]
