"""`picket event report|list --dir DEVICE`, the real command in a subprocess, on a device folder
as `picket agent install` leaves one (a config.toml, an Ed25519 key readable by its owner).

What a technician would check: a report prints its record's number and the digest of each
attachment, and those are the record's digests (verified with the device's key) and the
hashes of the stored bytes; `list` shows it with its category and note; each bad input
(not a photo, a 50 MB photo, an unknown category, a note too long, --lat without --lon, a
folder that is not a device's) exits 2 with one line saying what to change, a full photo
storage exits 1 saying how to free it; none of them appends anything.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.events.attachstore import AttachmentStore
from agent.events.mine import MyEvents
from agent.store.outbox import Outbox
from contract.eventcommands import Catalogue, Category
from contract.events import EventReport, parse_event
from contract.records import RecordType, open_record
from simulators.camera import SimCamera

REPO = Path(__file__).resolve().parents[1]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
DEVICE = "h0301"


def make_device(folder: Path, quota_mb: float = 200, max_side: int = 800) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "device.key"
    key.write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    (folder / "config.toml").write_text(
        f'device = "{DEVICE}"\nkey = "device.key"\noutbox = "outbox.db"\n'
        '[broker]\nhost = "127.0.0.1"\nport = 8883\n'
        f"[events]\nattachment_quota_mb = {quota_mb}\nphoto_max_side = {max_side}\n"
    )
    return folder


def picket(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picket", *map(str, args)],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip


def outbox_events(folder: Path) -> list[tuple[int, EventReport]]:
    box = Outbox(folder / "outbox.db", DEVICE)
    try:
        return [
            (s.seq, parse_event(open_record(s.raw, KEY.public_key()).body))
            for s in box.pending(100)
            if s.type is RecordType.EVENT
        ]
    finally:
        box.close()


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "stairwell.jpg"
    path.write_bytes(SimCamera(seed=11, width=1600, height=1200).jpeg(0))
    return path


def test_a_report_prints_the_digests_the_record_lists_and_list_shows_it(
    tmp_path: Path, jpeg: Path
) -> None:
    folder = make_device(tmp_path / "dev")
    r = picket("event", "report", "--dir", folder, "--category", "2", "--note", "楼道堆物",
               "--photo", jpeg, "--lat", "29.5", "--lon", "106.25", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    [(seq, event)] = outbox_events(folder)
    assert out["seq"] == seq and out["device"] == DEVICE and out["place"] == "picked"
    assert [a["kind"] for a in out["attachments"]] == ["photo", "note"]
    assert [bytes.fromhex(a["sha256"]) for a in out["attachments"]] == list(event.digests)
    assert event.position == (29.5, 106.25) and event.category == 2
    store = AttachmentStore(folder / "attachments.db", 10**9)
    try:
        for a in out["attachments"]:
            data = store.read(bytes.fromhex(a["sha256"]), 0, a["size"])
            assert hashlib.sha256(data).hexdigest() == a["sha256"] and len(data) == a["size"]
        assert data == "楼道堆物".encode()
    finally:
        store.close()

    listed = picket("event", "list", "--dir", folder, "--json")
    assert listed.returncode == 0, listed.stderr
    [mine] = json.loads(listed.stdout)["events"]
    assert (mine["seq"], mine["category"], mine["note"], mine["photos"], mine["status"]) == (
        seq, 2, "楼道堆物", 1, "reported",
    )  # fmt: skip
    table = picket("event", "list", "--dir", folder)
    assert table.returncode == 0 and "reported" in table.stdout
    human = picket("event", "report", "--dir", folder, "--category", "2", "--note", "again")
    assert human.returncode == 0 and f"event record {seq + 1} of {DEVICE}" in human.stdout


def _one_line_exit(r: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("picket: error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--photo", "{not_image}"], ["not_image.jpg", "not an image"]),
        (["--photo", "{huge}"], ["huge.jpg", "larger than the 20 MB"]),
        (["--photo", "{missing}"], ["missing.jpg", "JPEG or PNG"]),
        (["--category", "9"], ["category 9 is not in catalogue version 3", "use one of 1, 2"]),
        (["--note", "x" * 501], ["501 characters", "shorten it"]),
        (["--lat", "29.5"], ["--lat and --lon come together"]),
    ],
    ids=["not-an-image", "50-MB", "missing", "unknown-category", "long-note", "lat-alone"],
)
def test_bad_input_exits_2_with_one_line_and_nothing_appended(
    tmp_path: Path, extra: list[str], words: list[str]
) -> None:
    folder = make_device(tmp_path / "dev")
    store = AttachmentStore(folder / "attachments.db", 10**9)
    mine = MyEvents(store.path, DEVICE)  # a catalogue the center sent earlier
    mine.apply_catalogue(
        Catalogue(3, (Category(1, "甲", "A", "g", "t"), Category(2, "乙", "B", "g", "t")))
    )
    mine.close()
    store.close()
    (tmp_path / "not_image.jpg").write_bytes(b"this is a text file, not a photo\n" * 10)
    with (tmp_path / "huge.jpg").open("wb") as f:
        f.truncate(50 * 1000 * 1000)  # sparse: 50 MB that take no disk
    files = {n: str(tmp_path / f"{n}.jpg") for n in ("not_image", "huge", "missing")}
    args = [a.format(**files) for a in extra]
    if "--category" not in args:
        args += ["--category", "2"]
    r = picket("event", "report", "--dir", folder, *args)
    _one_line_exit(r, 2, *words)
    assert outbox_events(folder) == []


def test_a_folder_that_is_not_a_device_exits_2(tmp_path: Path) -> None:
    r = picket("event", "list", "--dir", tmp_path)
    _one_line_exit(r, 2, "not a device folder", "picket agent install")
    assert not (tmp_path / "attachments.db").exists()


def test_full_photo_storage_exits_1_saying_how_to_free_it(tmp_path: Path) -> None:
    folder = make_device(tmp_path / "dev", quota_mb=1, max_side=1600)
    camera = SimCamera(seed=12, width=2000, height=1500)
    runs = []
    for i in range(8):  # about 300 kB a photo: the quota of 1 MB is full within a few
        path = tmp_path / f"p{i}.jpg"
        path.write_bytes(camera.jpeg(i))
        runs.append(picket("event", "report", "--dir", folder, "--category", "1",
                           "--photo", path))  # fmt: skip
        if runs[-1].returncode != 0:
            break
    *saved, full = runs
    assert saved and all(r.returncode == 0 for r in saved)
    _one_line_exit(full, 1, "photo storage full", "of 1 MB used by", "connect to the network")
    assert len(outbox_events(folder)) == len(saved)
