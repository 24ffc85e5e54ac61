"""The targets of the fuzz campaign (bench/fuzz.py): every decoder that reads bytes from
outside, its valid seeds, and what its users need of what it accepts.

One invariant per decoder: the input parses, or the decoder raises its documented error
(`RecordError`, `RemoteError`, `PlanError`, a `Refusal` value for the command verifier, which
never raises). What a decoder accepts must also be usable downstream: a record the center
would accept holds only integers that fit an INTEGER column (int64), and goes through a real
in-memory center store and `picket center status --json` (allow_nan=False); an accepted
command, ack or bundle holds int64 numbers; a GNSS fix has finite coordinates in range and a
non-negative accuracy; a plan has finite numbers; the frame decoder gives the same frames fed
whole or in pieces. A signed format is also fuzzed behind a valid signature (the test key
below): a device holds its own key, so a hostile payload signed correctly is the realistic
attack.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from bench.fuzzgen import Target, nmea_line
from contract.cose import sign1

NOW_MS = 1_772_323_740_000
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # the test key: fixed, never real
PUB = KEY.public_key()
DEVICE = "h0001"


class Invariant(Exception):
    """A decoder accepted something its users cannot hold (names what)."""


def _sign(mode: str, data: bytes, key: Ed25519PrivateKey = KEY) -> bytes:
    return sign1(data, key) if mode == "signed" else data


def _ints(v: object, out: list[int]) -> list[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        out.append(v)
    elif isinstance(v, list | tuple):
        for x in v:
            _ints(x, out)
    return out


_DB = sqlite3.connect(":memory:")
_DB.execute("CREATE TABLE ints (k TEXT, v INTEGER)")


def int64(what: str, values: dict[str, object]) -> None:
    """Every integer in `values` into an INTEGER column, as the center and the agent store them."""
    for name, v in values.items():
        for n in _ints(v, []):
            try:
                _DB.execute("INSERT INTO ints VALUES (?, ?)", (name, n))
            except OverflowError:
                raise Invariant(f"{what} accepted {name} beyond int64") from None
    _DB.execute("DELETE FROM ints")


def record_seeds() -> list[bytes]:
    from contract import records as r
    from contract.fix import Fix, TimeSource

    fix = Fix(time_ms=NOW_MS, lat=29.2651234, lon=106.2551234, accuracy_m=3.0)
    ev = r.Eviction(3, 10, 12, 450, (r.RecordType.HEALTH,))
    bodies: list[tuple[r.RecordType, dict[int, object]]] = [
        (r.RecordType.CHECKIN, {16: "P007", 17: 1, 18: 96, 19: 292651234, 20: 1062551234,
                                21: 30, 22: 97, 23: 0, 24: 13}),
        (r.RecordType.MISSED, {16: "P003", 17: 1, 18: "L01", 19: NOW_MS - 1, 20: NOW_MS}),
        (r.RecordType.SUSPICION, {16: 1, 17: 292651234, 18: 1062551234, 19: "jump 1400 m/s"}),
        (r.RecordType.HEALTH, r.health_body(depth=3, battery_pct=87, rssi_dbm=-97)),
        (r.RecordType.ROLLCALL, r.rollcall_body(bytes(16), fix)),
        (r.RecordType.ALERT, r.alert_body(r.AlertKind.SOS, fix, battery_pct=64)),
        (r.RecordType.RECEIPT, r.receipt_body(1207, 2, r.Outcome.REFUSED, "expired")),
        (r.RecordType.DROPPED, r.dropped_body(ev)),
        (r.RecordType.DOCK_STATE, {16: 5, 17: 4, 18: "took off", 19: 90, 20: "A1"}),
        (r.RecordType.MISSION, {16: "A1", 17: 12, 18: 0, 19: 3, 20: ["P1"], 21: 600, 23: 2}),
        (r.RecordType.EVENT, {16: 101, 17: 3, 18: 0, 19: 292651234, 20: 1062551234, 21: 30,
                              22: [[1, bytes(32), 300_000], [2, bytes(range(32)), 27]], 23: 4}),
    ]  # fmt: skip
    chain = r.ChainPosition(1, 1234, bytes(16))
    return [
        r.build(KEY, device=DEVICE, chain=chain, rtype=t, time_ms=NOW_MS,
                time_source=TimeSource.GNSS, body=b)
        for t, b in bodies
    ]  # fmt: skip


def center_keeps(raw: bytes, device: str) -> None:
    """A record through a real in-memory center, then `picket center status --json`."""
    from center.ingest import Ingest
    from center.status import as_json, build_status, render
    from center.store import CenterStore
    from contract.protocol import Batch, decode_ack, records_topic

    store = CenterStore(Path(":memory:"))
    try:
        ack = Ingest(store, lambda _d: PUB).handle(
            records_topic(device), Batch(1, (raw,)).encode(), NOW_MS
        )
        if ack is not None:
            decode_ack(ack.encode())
        status = build_status(store.snapshot(), NOW_MS)
        json.dumps(as_json(status), allow_nan=False)
        render(status)
    finally:
        store.close()


def run_record(mode: str, data: bytes) -> object:
    from contract.protocol import DEVICE_ID
    from contract.records import open_record
    from contract.recordschema import BODY_SCHEMA, validate_body

    rec = open_record(_sign(mode, data), PUB)
    h = rec.header
    int64("open_record", {"boot": h.boot, "seq": h.seq, "time": h.time_ms})
    validate_body(h.type, rec.body)
    known = {f"key {k}": rec.body[k] for k in BODY_SCHEMA[h.type] if k in rec.body}
    int64(f"validate_body ({h.type.name})", known)
    if h.seq >= 1 and DEVICE_ID.fullmatch(h.device):
        try:
            center_keeps(rec.raw, h.device)
        except Exception as exc:  # the record parsed: whatever the center does with it is ours
            raise Invariant(f"center store/status: {type(exc).__name__}: {exc}"[:300]) from exc
    return rec


def run_command(mode: str, data: bytes) -> object:
    from contract.commands import Command, CommandVerifier, Refusal

    out = CommandVerifier(PUB, DEVICE).check(_sign(mode, data), NOW_MS, 5)
    if isinstance(out, Command):
        int64("CommandVerifier", {"number": out.number, "issued": out.issued_ms,
                                  "expires": out.expires_ms})  # fmt: skip
    elif not isinstance(out, Refusal):
        raise Invariant(f"check returned {type(out).__name__}")
    elif out.answered:
        int64("CommandVerifier (answered refusal)", {"number": out.number, "type": out.type})
    return out


def command_seeds() -> list[bytes]:
    from contract import commands as c
    from contract import eventcommands as ec

    bodies: list[c.Body] = [
        c.TaskBundle(3, dt.date(2026, 3, 1), ("L01", "L02")), c.RollCall(bytes(16)),
        c.Reminder("meet at gate 2"), c.ConfigChange({"report_interval_s": 60, "team": "T01"}),
        c.RotateKeys(_cert()), c.FlyLine("A1", c.Priority.FIRE), c.AbortMission(),
        ec.Catalogue(4, (ec.Category(101, "装修垃圾", "Rubbish", "环境", "T01"),)),
        ec.EventStatus(17, ec.EventStatusCode.MERGED, DEVICE, 12, 101, "same pile", "T01",
                       NOW_MS + 1, NOW_MS, "op-li", 292651234, 1062551234, merged_into=16),
    ]  # fmt: skip
    return [
        c.command_payload(target=DEVICE, number=7 + i, issued_ms=NOW_MS, expires_ms=NOW_MS + 1,
                          body=b, team="T01")
        for i, b in enumerate(bodies)
    ]  # fmt: skip


def _tls() -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    return ec.derive_private_key(7, ec.SECP256R1()), x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)]
    )


def _cert() -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    k, name = _tls()
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    b = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
    b = b.serial_number(1).not_valid_before(t).not_valid_after(t + dt.timedelta(days=365))
    return b.sign(k, hashes.SHA256()).public_bytes(Encoding.DER)


def enrollment_seeds() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding

    from contract import enrollment as e

    k, name = _tls()
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(k, hashes.SHA256())
    der = csr.public_bytes(Encoding.DER)
    nxt = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes_raw()
    req = e.encode_request(
        e.Request(PUB.public_bytes_raw(), der, nxt, der, {"serial": "x1"}, bytes(16), NOW_MS),
        KEY,
    )
    bundle = e.encode_bundle(
        e.Bundle(DEVICE, "f", bytes(32), nxt, _cert(), _cert(), PUB.public_bytes_raw(),
                 "broker.local", 8883, NOW_MS, "street", "T01", b'{"type": "x"}'),
        KEY,
    )  # fmt: skip
    return req, bundle


def payload_of(raw: bytes) -> bytes:
    from contract.cose import decode_sign1

    return decode_sign1(raw).payload


def run_enrollment(decode: Callable[[bytes], object], stamp: str) -> Callable[[str, bytes], object]:
    def run(mode: str, data: bytes) -> object:
        out = decode(_sign(mode, data))
        int64("decode", {stamp: getattr(out, stamp)})
        return out

    return run


def run_frame(mode: str, data: bytes) -> object:
    from firmware_bridge import frame, messages
    from firmware_bridge.payloads import parse_event

    whole = frame.Decoder().feed(data)
    d, pieces, i, n = frame.Decoder(), [], 0, 1
    while i < len(data):
        pieces.extend(d.feed(data[i : i + n]))
        i, n = i + n, (n * 7 + 3) % 61 + 1
    if pieces != whole:
        raise Invariant("frames differ fed whole and fed in pieces")
    for ftype, _fid, payload in whole:
        if len(payload) > frame.MAX_PAYLOAD:
            raise Invariant("a frame longer than MAX_PAYLOAD")
        if ftype in (messages.BOOT, messages.RADIO_RX, messages.SOS, messages.LOG):
            with contextlib.suppress(ValueError, struct.error, UnicodeDecodeError, frame_errors()):
                parse_event(ftype, payload)
    for body in data.split(b"\x00"):
        if body:
            with contextlib.suppress(ValueError):
                frame.decode_body(body)
    return whole


def frame_errors() -> type[BaseException]:
    from firmware_bridge.errors import BridgeError

    return BridgeError


def frame_seeds() -> list[bytes]:
    from firmware_bridge import frame, messages

    return [
        frame.encode(0x01, 1) + frame.encode(0x81, 1, bytes(40)),
        frame.encode(messages.BOOT, 0, struct.pack(messages.BOOT_EVENT, 1, 1, 2, 0, 7, 1)),
        frame.encode(messages.RADIO_RX, 0, b"\xa0\xff\xf8\xff" + b"packet"),
        frame.encode(messages.SOS, 0, struct.pack(messages.SOS_EVENT, 2, 1500)),
        frame.encode(messages.LOG, 0, b"\x02boot ok") + frame.encode(0x04, 9, bytes(512)),
    ]


_SCRATCH: list[Path] = []  # the plan file, in memory where the system has a tmpfs


def run_plan(mode: str, data: bytes) -> object:
    from agent.checkin.planfile import check_file, load_plan

    if not _SCRATCH:
        shm = "/dev/shm"  # noqa: S108 (a private mkdtemp inside it, removed at exit)
        tmp = tempfile.mkdtemp(prefix="picket-fuzz-", dir=shm if os.path.isdir(shm) else None)
        _SCRATCH.append(Path(tmp))
        atexit.register(shutil.rmtree, tmp, True)
    path = _SCRATCH[0] / "plan.geojson"
    path.write_bytes(data)
    check_file(path)
    plan = load_plan(path)
    parts: list[object] = [*plan.points, *plan.zones]
    for part in parts:
        assert dataclasses.is_dataclass(part)
        for name, v in ((f.name, getattr(part, f.name)) for f in dataclasses.fields(part)):
            for x in v if isinstance(v, tuple) else (v,):
                for y in x if isinstance(x, tuple) else (x,):
                    if isinstance(y, float) and not math.isfinite(y):
                        raise Invariant(f"plan accepted a non-finite {name}")
    return plan


def plan_seed() -> bytes:
    from agent.checkin.planfile import plan_to_geojson
    from simulators.district import generate_district

    return json.dumps(plan_to_geojson(generate_district(7, n_points=6, n_lines=2))).encode()


def run_nmea(mode: str, data: bytes) -> object:
    from agent.gnss.nmea import NmeaParser

    fixes = NmeaParser().feed(data)
    p = NmeaParser(not_before=dt.date(2026, 1, 1))
    for i in range(0, len(data), 7):
        fixes += p.feed(data[i : i + 7])
    fixes += p.flush()
    for fx in fixes:
        floats = [fx.lat, fx.lon, fx.accuracy_m, fx.hdop, fx.pdop, fx.alt_m, fx.speed_mps,
                  fx.course_deg]  # fmt: skip
        if any(v is not None and not math.isfinite(v) for v in floats):
            raise Invariant("a Fix with a non-finite number")
        if not (abs(fx.lat) <= 90 and abs(fx.lon) <= 180):
            raise Invariant("a Fix out of range (position)")
        if any(v is not None and v < 0 for v in (fx.accuracy_m, fx.hdop, fx.pdop)):
            raise Invariant("a Fix with a negative accuracy or DOP")
        if fx.time_ms is not None:
            int64("NmeaParser", {"time_ms": fx.time_ms})
    return fixes


NMEA_SEED = "".join(nmea_line(s) for s in (
    "GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
    "GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1",
    "GPGSV,2,1,08,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45",
    "GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W,A",
    "GPGST,123519.00,1.0,2.0,1.5,45.0,1.2,1.1,2.5", "GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A",
    "GPZDA,123519.00,23,03,1994,00,00",
    "GNGNS,123520.00,4807.038,N,01131.000,E,AN,10,0.9,545.4,46.9,,",
    "GPGLL,4807.038,N,01131.000,E,123520.00,A,A",
)).encode()  # fmt: skip


def targets() -> dict[str, Callable[[], Target]]:
    from agent.checkin.planfile import PlanError
    from contract.errors import RecordError, RemoteError

    def records() -> Target:
        raw = record_seeds()
        return Target("records", raw, run_record, (RecordError,), [payload_of(r) for r in raw])

    def batch() -> Target:
        from contract.protocol import Batch, decode_batch

        def run(mode: str, data: bytes) -> object:
            b = decode_batch(data)
            int64("decode_batch", {"batch id": b.id})
            return b

        raw = [Batch(7, tuple(record_seeds()[:4])).encode(), Batch(0, ()).encode()]
        return Target("batch", raw, run, (RemoteError,))

    def ack() -> Target:
        from contract.protocol import Ack, Refusal, decode_ack

        def run(mode: str, data: bytes) -> object:
            a = decode_ack(data)
            int64("decode_ack", {"batch": a.batch, "stored": a.stored,
                                 "refused": [s for s, _ in a.refused]})  # fmt: skip
            return a

        raw = [Ack(7, (1, 2, 3), ((4, Refusal.MALFORMED), (5, Refusal.REVOKED))).encode()]
        return Target("ack", raw, run, (RemoteError,))

    def commands() -> Target:
        payloads = command_seeds()
        return Target("commands", [sign1(p, KEY) for p in payloads], run_command, (), payloads)

    def frames() -> Target:
        return Target("frame", frame_seeds(), run_frame, ())

    def plan() -> Target:
        return Target("plan", [plan_seed()], run_plan, (PlanError,), kind="json")

    def nmea() -> Target:
        return Target("nmea", [NMEA_SEED], run_nmea, (), kind="nmea")

    def enroll_request() -> Target:
        from contract.enrollment import EnrollmentError, decode_request

        req, _ = enrollment_seeds()
        run = run_enrollment(decode_request, "created_ms")
        return Target("enroll-request", [req], run, (EnrollmentError,), [payload_of(req)])

    def enroll_bundle() -> Target:
        from contract.enrollment import EnrollmentError, decode_bundle

        _, bundle = enrollment_seeds()
        run = run_enrollment(decode_bundle, "issued_ms")
        return Target("enroll-bundle", [bundle], run, (EnrollmentError,), [payload_of(bundle)])

    def fwbundle() -> Target:
        from firmware_bridge.fwbundle import BundleError, make_bundle, open_bundle

        raw = make_bundle(bytes(range(256)) * 4, (1, 2, 0), KEY)
        return Target("fwbundle", [raw], lambda m, d: open_bundle(_sign(m, d), PUB),
                      (BundleError,), [payload_of(raw)])  # fmt: skip

    def attachments() -> Target:
        from contract.attachments import (
            AttachmentState,
            Chunk,
            Question,
            Status,
            chunks,
            decode_status,
            decode_upload,
        )

        data = bytes(range(256)) * 40
        digest = hashlib.sha256(data).digest()
        raw = [c.encode() for c in chunks(data, 0, 4096, digest)][:2]
        raw += [
            Question(digest, 0, len(data)).encode(),
            Status(digest, 4096, AttachmentState.PARTIAL, None).encode(),
            Status(digest, 0, AttachmentState.REFUSED, "digest does not match").encode(),
        ]

        def run(mode: str, payload: bytes) -> object:
            return decode_status(payload) if len(payload) < 200 else decode_upload(payload)

        assert all(isinstance(decode_upload(r), Chunk | Question) for r in raw[:3])
        return Target("attachments", raw, run, (RemoteError,))

    return {"records": records, "batch": batch, "ack": ack, "commands": commands,
            "frame": frames, "plan": plan, "nmea": nmea, "enroll-request": enroll_request,
            "enroll-bundle": enroll_bundle, "fwbundle": fwbundle,
            "attachments": attachments}  # fmt: skip
