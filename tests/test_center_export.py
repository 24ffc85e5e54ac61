"""`picket center export` and `devices`: the center's evidence, byte for byte, for anyone."""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from center.errors import CenterDbError
from center.export import export, export_records, list_devices
from center.ingest import Ingest
from center.store import CenterStore
from contract.fix import TimeSource
from contract.protocol import Batch, records_topic
from contract.records import (
    ChainPosition,
    RecordType,
    build,
    chain_hash,
    health_body,
    open_record,
)
from contract.recordschema import validate_body
from picket import centercmd
from picket.progress import Progress
from provisioning.registry import Registry
from simulators.demo import DemoOptions, run_demo

KEYS = {d: Ed25519PrivateKey.generate() for d in ("h0002", "h0001", "h0010")}


def record(device: str, seq: int, prev: bytes = b"") -> bytes:
    rtype = RecordType.HEALTH if seq % 3 == 0 else RecordType.CHECKIN
    body = health_body(depth=seq) if rtype is RecordType.HEALTH else {16: f"P{seq:03d}"}
    return build(
        KEYS[device],
        device=device,
        chain=ChainPosition(boot=1, seq=seq, prev=prev),
        rtype=rtype,
        time_ms=1_772_323_200_000 + seq * 1000,
        time_source=TimeSource.GNSS,
        body=body,
    )


def chain(device: str, n: int) -> list[bytes]:
    out: list[bytes] = []
    for seq in range(1, n + 1):
        out.append(record(device, seq, chain_hash(out[-1]) if out else b""))
    return out


def key_of(device: str) -> Ed25519PublicKey | None:
    k = KEYS.get(device)
    return None if k is None else k.public_key()


def items(data: bytes) -> list[bytes]:
    """A CBOR sequence's items, each as its own bytes (as an outside reader would split it)."""
    fp = io.BytesIO(data)
    out = []
    while fp.tell() < len(data):
        start = fp.tell()
        cbor2.CBORDecoder(fp).decode()
        out.append(data[start : fp.tell()])
    return out


@pytest.fixture
def center_db(tmp_path: Path) -> tuple[Path, dict[tuple[str, int], bytes]]:
    """A center database fed through the real ingest path; returns what was accepted."""
    db = tmp_path / "center.db"
    ingest = Ingest(CenterStore(db), key_of)
    sent: dict[tuple[str, int], bytes] = {}
    for device, n in (("h0002", 4), ("h0001", 5), ("h0010", 2)):
        recs = chain(device, n)
        first = Batch(1, tuple(recs[:3]))
        ingest.handle(records_topic(device), first.encode(), 1000)
        ingest.handle(records_topic(device), first.encode(), 2000)  # delivered twice
        ingest.handle(records_topic(device), Batch(2, tuple(recs[2:])).encode(), 3000)
        sent.update({(device, i + 1): raw for i, raw in enumerate(recs)})
    tampered = record("h0001", 7).replace(b"P007", b"P666")
    ingest.handle(records_topic("h0001"), Batch(3, (tampered,)).encode(), 4000)
    assert ingest.stats.duplicates > 0 and ingest.stats.refused == 1
    ingest.store.close()
    return db, sent


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="picket")
    sub = p.add_subparsers(dest="command", required=True)
    center = sub.add_parser("center").add_subparsers(dest="center_command", required=True)
    centercmd.add_center_parsers(center)
    return p.parse_args(argv)


# --- export ---------------------------------------------------------------------------------


def test_export_is_every_record_byte_for_byte_in_device_and_sequence_order(
    tmp_path: Path, center_db: tuple[Path, dict[tuple[str, int], bytes]]
) -> None:
    db, sent = center_db
    out = tmp_path / "records.cbor"
    assert export_records(db, out) == len(sent) == 11
    data = out.read_bytes()
    assert data == b"".join(sent[k] for k in sorted(sent))  # one per (device, seq), as sent
    got = items(data)
    assert len(got) == len(sent)
    for raw in got:
        rec = open_record(raw, KEYS[cbor2.loads(cbor2.loads(raw).value[2])[2]].public_key())
        assert sent[(rec.header.device, rec.header.seq)] == raw
    assert not list(tmp_path.glob(".*.part"))


def test_export_to_an_open_file_and_counts_devices(
    center_db: tuple[Path, dict[tuple[str, int], bytes]],
) -> None:
    db, sent = center_db
    buf = io.BytesIO()
    done = export(db, buf)
    assert (done.records, done.devices) == (11, 3)
    assert items(buf.getvalue()) == [sent[k] for k in sorted(sent)]


def test_export_of_an_empty_center_is_an_empty_sequence(tmp_path: Path) -> None:
    db = tmp_path / "center.db"
    CenterStore(db).close()
    out = tmp_path / "out.cbor"
    out.write_bytes(b"old contents")
    assert export_records(db, out) == 0
    assert out.read_bytes() == b""
    assert list_devices(db) == []


def test_cli_export_says_what_it_wrote(
    tmp_path: Path,
    center_db: tuple[Path, dict[tuple[str, int], bytes]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, sent = center_db
    out = tmp_path / "evidence.cbor"
    code = centercmd.export(parse(["center", "export", "--db", str(db), "--out", str(out)]))
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err == f"exported 11 records from 3 devices to {out}\n"
    assert captured.out == ""
    assert out.read_bytes() == b"".join(sent[k] for k in sorted(sent))


# --- devices --------------------------------------------------------------------------------


def test_devices_json_lists_each_raw_public_key_in_hex(
    center_db: tuple[Path, dict[tuple[str, int], bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = center_db
    code = centercmd.devices(parse(["center", "devices", "--db", str(db), "--json"]))
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out.splitlines()[-1]) == {
        "devices": [
            {"id": d, "public_key": KEYS[d].public_key().public_bytes_raw().hex()}
            for d in ("h0001", "h0002", "h0010")
        ]
    }
    assert list_devices(db) == json.loads(captured.out)["devices"]


def test_devices_table_for_people(
    center_db: tuple[Path, dict[tuple[str, int], bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = center_db
    assert centercmd.devices(parse(["center", "devices", "--db", str(db)])) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:2] == ["DEVICE", "PUBLIC"]
    assert lines[1].split() == ["h0001", KEYS["h0001"].public_key().public_bytes_raw().hex()]
    assert len(lines) == 4
    assert captured.err == "3 devices, 3 keys\n"


# --- bad input: exit 2 with a clear message -----------------------------------------------------


def _registry(path: Path) -> Path:
    reg = Registry(path)
    reg.add("h0001", KEYS["h0001"].public_key().public_bytes_raw(), 0)
    reg.close()
    return path


def _old_center(path: Path) -> Path:
    """A center database from before the devices table."""
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE records (device TEXT, seq INTEGER, raw BLOB);"
        "CREATE TABLE refused (id INTEGER PRIMARY KEY, reason TEXT);"
    )
    con.execute("INSERT INTO records VALUES ('h0001', 1, ?)", (record("h0001", 1),))
    con.commit()
    con.close()
    return path


BAD_DBS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda p: p / "nope.db", "no center database at"),
    "a folder": (lambda p: p, "no center database at"),
    "not SQLite": (
        lambda p: (p / "notes.db", (p / "notes.db").write_text("hello " * 100))[0],
        "is not a SQLite database",
    ),
    "the fleet registry": (
        lambda p: _registry(p / "registry.db"),
        "is not a Picket center database",
    ),
}


@pytest.mark.parametrize("case", BAD_DBS)
@pytest.mark.parametrize("command", ["export", "devices"])
def test_a_db_that_is_not_a_center_db_is_bad_input(
    tmp_path: Path, case: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make_db, words = BAD_DBS[case]
    db = make_db(tmp_path)
    out = tmp_path / "out.cbor"
    argv = ["center", command, "--db", str(db)]
    argv += ["--out", str(out)] if command == "export" else ["--json"]
    handler = centercmd.export if command == "export" else centercmd.devices
    code = handler(parse(argv))
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("picket: error: ")
    assert words in captured.err
    assert str(db) in captured.err
    assert captured.out == ""
    assert not out.exists()


def test_an_older_center_db_exports_but_has_no_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _old_center(tmp_path / "old.db")
    assert export_records(db, tmp_path / "out.cbor") == 1
    assert centercmd.devices(parse(["center", "devices", "--db", str(db)])) == 2
    assert "has no devices table" in capsys.readouterr().err
    with pytest.raises(CenterDbError, match="older center"):
        list_devices(db)


def test_export_into_a_missing_folder_is_bad_input(
    tmp_path: Path,
    center_db: tuple[Path, dict[tuple[str, int], bytes]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, _ = center_db
    out = tmp_path / "no" / "such" / "records.cbor"
    assert centercmd.export(parse(["center", "export", "--db", str(db), "--out", str(out)])) == 2
    assert "folder" in capsys.readouterr().err
    out = tmp_path  # a folder, not a file
    assert centercmd.export(parse(["center", "export", "--db", str(db), "--out", str(out)])) == 2
    assert f"cannot write {out}" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*.part"))


# --- a demo's work directory: the evidence verifies with the keys from the same database -------


@pytest.mark.integration
async def test_export_of_a_demo_run_verifies_with_its_own_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "demo"
    report = await run_demo(
        DemoOptions(devices=3, minutes=10, seed=5, workdir=workdir), Progress(quiet=True)
    )
    db = workdir / "center.db"
    out = tmp_path / "records.cbor"
    capsys.readouterr()
    assert centercmd.export(parse(["center", "export", "--db", str(db), "--out", str(out)])) == 0
    assert centercmd.devices(parse(["center", "devices", "--db", str(db), "--json"])) == 0
    listed = json.loads(capsys.readouterr().out.splitlines()[-1])["devices"]
    assert {d["id"] for d in listed} <= {"h0001", "h0002", "h0003"}
    keys = {
        d["id"]: Ed25519PublicKey.from_public_bytes(bytes.fromhex(d["public_key"])) for d in listed
    }
    raws = items(out.read_bytes())
    assert 0 < len(raws) == report["records_delivered"] == report["records_created"]
    seen = set()
    for raw in raws:
        claimed = cbor2.loads(cbor2.loads(raw).value[2])[2]
        rec = open_record(raw, keys[claimed])
        validate_body(rec.header.type, rec.body)
        seen.add((rec.header.device, rec.header.seq))
    assert len(seen) == len(raws)  # one item per (device, seq)
    assert {device for device, _ in seen} == set(keys)  # a key for every device with records
    # the keys in the center database are the fleet registry's
    reg = Registry(workdir / "fleet" / "registry.db", readonly=True)
    try:
        for device, key in keys.items():
            registered = reg.public_key(device)
            assert registered is not None
            assert registered.public_bytes_raw() == key.public_bytes_raw()
    finally:
        reg.close()
