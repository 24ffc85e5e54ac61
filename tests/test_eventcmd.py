"""`picket center events …` and `picket center api`'s refusals, through the real CLI.

Events are stored as the center stores a device's report (center/events/intake.py) in a
real center database; then the operator's commands run through `picket.cli.main` (one as a
real `python -m picket` process) and what they print, what they exit with, and what the
database then holds (read back with `show --json`) are what an operator would check: the
lifecycle walked end to end, a refused action exiting 2 with a sentence that says what can be
done instead, a likely duplicate offered and merged with both reporters told, photos
exported byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from center.events import intake
from center.events import store as ev
from center.events.store import EventDb
from center.store import CenterStore
from picket.cli import main

T = 1_772_323_200_000
LAT, LON = 295_000_000, 1_063_000_000
PHOTO = b"\xff\xd8\xff\xe0 not much of a jpeg \xff\xd9"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "center.db"
    CenterStore(path).close()
    sha = hashlib.sha256(PHOTO).digest()
    events = EventDb(path)
    with events.write() as sql:
        listed = (intake.Attachment(1, sha, len(PHOTO)),)
        first = intake.Report("h0001", 3, T, 1, place=0, lat_e7=LAT, lon_e7=LON, attachments=listed)
        intake.store_report(sql, first, T)
        # the same rubbish pile, 20 m north, an hour later, by another member
        second = intake.Report("h0002", 8, T + 3_600_000, 1, place=0, lat_e7=LAT + 1800, lon_e7=LON)
        intake.store_report(sql, second, T)
        ev.add_attachment(sql, 1, sha, 1, len(PHOTO), data=PHOTO)
    events.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def act(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, "center", "events", *argv, "--db", str(db), "--json")
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out.splitlines()[-1])
    return doc


def test_the_lifecycle_end_to_end(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    listed = act(capsys, db, "list")
    assert [(e["number"], e["status"], e["device"]) for e in listed["events"]] == [
        (2, "reported", "h0002"),
        (1, "reported", "h0001"),
    ]
    assert act(capsys, db, "accept", "1", "--by", "alice")["to"] == "accepted"
    sent = act(capsys, db, "dispatch", "1", "--to", "h0005", "--within", "2")
    assert (sent["to"], sent["notify"]) == ("dispatched", ["h0001", "h0005"])
    act(capsys, db, "start", "1", "--by", "h0005")
    done = act(capsys, db, "resolve", "1", "--result", "cleared by the street team")
    assert done["to"] == "resolved"
    act(capsys, db, "close", "1")
    back = act(capsys, db, "reopen", "1", "--reason", "more rubbish the next day")
    assert back["to"] == "reopened"
    shown = act(capsys, db, "show", "1")
    assert [(c["from"], c["to"], c["by"]) for c in shown["changes"]] == [
        ("reported", "accepted", "alice"),
        ("accepted", "dispatched", "center"),
        ("dispatched", "in progress", "h0005"),
        ("in progress", "resolved", "center"),
        ("resolved", "closed", "center"),
        ("closed", "reopened", "center"),
    ]
    assert (shown["status"], shown["reason"], shown["assignee"]) == (
        "reopened",
        "more rubbish the next day",
        "h0005",
    )


def test_a_refused_action_says_what_can_be_done(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    code, out, err = run(capsys, "center", "events", "close", "1", "--db", str(db))
    assert (code, out) == (2, "")
    assert err.strip() == (
        "picket: error: event 1 is reported: it can be accepted, rejected or merged, not closed"
    )
    code, _, err = run(capsys, "center", "events", "accept", "7", "--db", str(db))
    assert code == 2 and "there is no event 7" in err
    code, _, err = run(capsys, "center", "events", "list", "--db", str(db.parent / "none.db"))
    assert code == 2 and "no center database" in err
    assert not (db.parent / "none.db").exists()
    act(capsys, db, "accept", "1")
    act(capsys, db, "dispatch", "1", "--team", "街道综合执法")
    act(capsys, db, "start", "1")
    code, _, err = run(
        capsys, "center", "events", "resolve", "1", "--db", str(db), "--result", "ok",
        "--report", "99",
    )  # fmt: skip
    assert code == 2 and "--report: there is no event 99" in err


def test_a_duplicate_is_offered_and_merged(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, out, _ = run(capsys, "center", "events", "show", "2", "--db", str(db))
    assert code == 0
    assert "likely duplicate of event 1 (20 m away): merge it?" in out
    merged = act(capsys, db, "merge", "2", "--into", "1")
    assert (merged["to"], merged["detail"]) == ("merged", "into 1")
    assert set(merged["notify"]) == {"h0001", "h0002"}
    later = act(capsys, db, "accept", "1")
    assert later["notify"] == ["h0001", "h0002"]  # the merged report's member hears too
    assert act(capsys, db, "show", "1")["reporters"] == ["h0001", "h0002"]


def test_show_exports_photos(capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "photos"
    out_dir.mkdir()
    shown = act(capsys, db, "show", "1", "--export", str(out_dir))
    (written,) = shown["exported"]
    assert Path(written).parent == out_dir and Path(written).suffix == ".jpg"
    assert Path(written).read_bytes() == PHOTO
    code, _, err = run(
        capsys, "center", "events", "show", "1", "--db", str(db), "--export", str(tmp_path / "no")
    )
    assert code == 2 and "is not a folder" in err


def test_the_real_command_lists_for_people(db: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "picket", "center", "events", "list", "--db", str(db)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["EVENT", "STATUS", "REPORTED", "DEVICE", "CATEGORY"]
    assert "Decoration rubbish not cleared" in lines[1] and lines[1].split()[0] == "2"
    assert done.stderr.strip() == "2 events"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "holds no API key"),
        ("hotline\n", "expected NAME KEY"),
        ("hotline short\n", "16+ ASCII"),
        ("a k-1234567890abcdef\nb k-1234567890abcdef\n", "also a's"),
    ],
)
def test_the_api_refuses_a_bad_keys_file(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path, text: str, says: str
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(text)
    code, _, err = run(
        capsys, "center", "api", "--db", str(db), "--listen", "127.0.0.1:0", "--keys", str(keys)
    )
    assert code == 2 and says in err, err
