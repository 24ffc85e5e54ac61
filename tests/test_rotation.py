"""Key rotation with real parts: a fleet folder and a device folder made by enroll → approve →
install, the center database, the device's outbox and CommandExecutor, the center's ingest,
a kill -9 of a real process between the receipt's commit and the key swap, and the daemon
over TLS against the fleet's Mosquitto (CRL included) for the whole loop, twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID
from peers import kill_child_at, running_center, wait_for

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import Plan
from agent.commands.executor import CommandExecutor
from agent.config import load_config
from agent.daemon import AgentRun
from agent.gnss.timekeeper import Stamp
from agent.health import store_health
from agent.identity import rotation
from agent.identity.enroll import load_private
from agent.store.outbox import Outbox
from center.commands import CommandSigner, publish, receipts
from center.ingest import Ingest
from center.rotation import collect_commitments, prepare_rotation, resend_rotation
from center.store import CenterStore
from contract.commands import (
    Command,
    CommandType,
    CommandVerifier,
    Reason,
    Refusal,
    RollCall,
    RotateKeys,
    command_payload,
    read_stored,
)
from contract.cose import sign1
from contract.errors import RecordError
from contract.fix import TimeSource
from contract.protocol import Ack, Batch, records_topic
from contract.records import (
    Outcome,
    ReceiptKey,
    Record,
    RecordType,
    health_body,
    open_record,
    receipt_body,
)
from contract.recordschema import validate_body
from picket.argtypes import center_tls
from provisioning import ca
from provisioning.brokerconf import write_broker_config
from provisioning.device import provision_device
from provisioning.fleet import Fleet
from provisioning.registry import ProvisioningError, fingerprint
from simulators.broker import Mosquitto
from simulators.nmea import gga, rmc

REPO = Path(__file__).resolve().parents[1]
DEVICE = "h0001"
NO_PLAN = Plan(0, (), ())


def now_ms() -> int:
    return int(time.time() * 1000)


def public(path: Path) -> bytes:
    """The public half of a private key file (raw Ed25519, or DER for an EC key)."""
    key = load_private(path)
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key().public_bytes_raw()
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ec_public(key: ec.EllipticCurvePublicKey | object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder of a device (its outbox and attachment store aside, which
    any run writes): content and mode."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if not p.name.startswith(("outbox.db", "attachments.db"))
    }


@dataclass
class Keys:
    """The device's key files, by public half."""

    signing: bytes
    tls: bytes
    next_signing: bytes
    next_tls: bytes
    cert_serial: int
    cert_key: bytes

    @classmethod
    def of(cls, folder: Path) -> Keys:
        cert = x509.load_pem_x509_certificate((folder / "device.crt").read_bytes())
        return cls(
            public(folder / "signing.key"),
            public(folder / "device.key"),
            public(folder / "next" / "signing.key"),
            public(folder / "next" / "device.key"),
            cert.serial_number,
            ec_public(cert.public_key()),
        )


# --- a provisioned device, its handset and the center ------------------------------------------


@dataclass
class Site:
    fleet: Fleet
    folder: Path
    config: Path
    center_db: Path

    def signer(self) -> CommandSigner:
        return CommandSigner(self.fleet.center_key, self.center_db)

    def fingerprint(self) -> str:
        entry = self.fleet.registry.entry(DEVICE)
        assert entry is not None
        return entry.fingerprint

    def current_key(self) -> bytes:
        key = self.fleet.registry.public_key(DEVICE)
        assert key is not None
        return key.public_bytes_raw()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    files = provision_device(
        tmp_path / "fleet",
        DEVICE,
        tmp_path / DEVICE,
        broker_host="127.0.0.1",
        broker_port=1883,
        now_ms=now_ms(),
        tls=False,
    )
    center_db = tmp_path / "center.db"
    CenterStore(center_db).close()
    fleet = Fleet(tmp_path / "fleet")
    yield Site(fleet, files.directory, files.config, center_db)
    fleet.close()


@dataclass
class Handset:
    box: Outbox
    agent: DeviceAgent
    executor: CommandExecutor
    rotated: list[int] = field(default_factory=list)  # on_rotated calls

    def health(self) -> None:
        store_health(
            self.box,
            self.agent.key,
            health_body(depth=0),
            time_ms=now_ms(),
            time_source=TimeSource.GNSS,
        )

    def close(self) -> None:
        self.box.close()


def open_handset(config: Path, *, identity: bool = True) -> Handset:
    """The device as the daemon wires it: its key, outbox, verifier and executor."""
    cfg = load_config(config)
    box = Outbox(cfg.outbox_path, cfg.device)
    box.begin_boot()
    agent = DeviceAgent(cfg.device, cfg.load_key(), NO_PLAN, box)
    center = cfg.load_center_key()
    assert center is not None
    calls: list[int] = []
    executor = CommandExecutor(
        agent,
        CommandVerifier(center, cfg.device),
        lambda: Stamp(now_ms(), TimeSource.GNSS),
        identity=rotation.identity_folder(cfg.key_path) if identity else None,
        on_rotated=lambda: calls.append(1),
    )
    return Handset(box, agent, executor, calls)


@pytest.fixture
def handset(site: Site) -> Iterator[Handset]:
    h = open_handset(site.config)
    yield h
    h.close()


def deliver(site: Site, box: Outbox) -> Ack:
    """Hand every record waiting in the outbox to the center's ingest, which verifies each
    against the registry's key history; the acknowledged ones leave the outbox."""
    pending = box.pending(10_000)
    store = CenterStore(site.center_db)
    try:
        ingest = Ingest(store, site.fleet.registry.trust)
        batch = Batch(1, tuple(s.raw for s in pending)).encode()
        ack = ingest.handle(records_topic(DEVICE), batch, now_ms())
    finally:
        store.close()
    assert isinstance(ack, Ack)
    box.acknowledge(ack.stored)
    return ack


def center_records(db: Path) -> list[tuple[int, bytes]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [
            (int(t), bytes(r)) for t, r in con.execute("SELECT type, raw FROM records ORDER BY seq")
        ]
    finally:
        con.close()


def signer_of(raw: bytes, *keys: bytes) -> int:
    """Which of `keys` (raw Ed25519 public keys) signed the record `raw` (its index)."""
    for i, k in enumerate(keys):
        try:
            open_record(raw, Ed25519PublicKey.from_public_bytes(k))
            return i
        except RecordError:
            continue
    raise AssertionError("signed by none of the keys")


def receipt_of(handled_raw: bytes) -> dict[object, object]:
    body = cbor2.loads(cbor2.loads(handled_raw).value[2])
    assert isinstance(body, dict)
    return body


def csr_key(der: bytes) -> bytes:
    return ec_public(x509.load_der_x509_csr(der).public_key())


# --- the wire format ----------------------------------------------------------------------------


def test_a_rotation_command_round_trips_and_a_malformed_one_is_refused_with_a_receipt(
    site: Site,
) -> None:
    commitment = site.fleet.registry.next_commitment(DEVICE)
    assert commitment is not None
    csr = x509.load_der_x509_csr(commitment[1])
    cert = ca.issue_client(site.fleet.ca_key(), site.fleet.ca_cert, DEVICE, csr, now_ms())
    der = cert.public_bytes(serialization.Encoding.DER)
    key = site.fleet.center_key
    verifier = CommandVerifier(key.public_key(), DEVICE)
    t = now_ms()

    def signed(extra: dict[int, object]) -> bytes:
        head: dict[int, object] = {1: 5, 2: DEVICE, 4: 1, 5: t, 6: t + 60_000}
        return sign1(cbor2.dumps({**head, **extra}, canonical=True), key)

    raw = sign1(
        command_payload(
            target=DEVICE, number=1, issued_ms=t, expires_ms=t + 60_000, body=RotateKeys(der)
        ),
        key,
    )
    verdict = verifier.check(raw, t, 0)
    assert isinstance(verdict, Command)
    assert verdict.type is CommandType.ROTATE_KEYS and verdict.body == RotateKeys(der)
    assert read_stored(raw) == verdict
    cases: list[tuple[dict[int, object], str]] = [
        ({16: "not bytes"}, "certificate of 1..4096 bytes"),
        ({16: b"not DER"}, "not a DER X.509 certificate"),
        ({16: der, 17: 1}, "unknown key 17"),
        ({}, "certificate of 1..4096 bytes"),
    ]
    for extra, words in cases:
        r = verifier.check(signed(extra), t, 0)
        assert isinstance(r, Refusal) and r.reason is Reason.INVALID and r.answered
        assert words in r.receipt_reason


def test_a_receipt_carries_the_next_pair_whole_or_not_at_all() -> None:
    full = receipt_body(1, 5, Outcome.DONE, next_signing_key=bytes(32), next_csr=b"\x30\x00")
    validate_body(RecordType.RECEIPT, full)
    assert full[ReceiptKey.NEXT_SIGNING_KEY] == bytes(32)
    with pytest.raises(RecordError, match="come together"):
        validate_body(RecordType.RECEIPT, {16: 1, 17: 5, 18: 0, 20: bytes(32)})
    with pytest.raises(RecordError, match="32 bytes"):
        validate_body(RecordType.RECEIPT, {16: 1, 17: 5, 18: 0, 20: bytes(31), 21: b"x"})
    with pytest.raises(RecordError, match="byte string"):
        validate_body(RecordType.RECEIPT, {16: 1, 17: 5, 18: 0, 20: bytes(32), 21: b""})


# --- a rotation, as the user checks it ----------------------------------------------------------


def test_a_rotation_swaps_the_keys_and_the_center_verifies_old_and_new_records(
    site: Site, handset: Handset
) -> None:
    before = Keys.of(site.folder)
    old_fingerprint = site.fingerprint()
    old_pem = (site.folder / "signing.key").read_bytes()
    handset.health()
    assert deliver(site, handset.box).stored == (1,)  # at the center before the rotation
    handset.health()  # signed with the old key, still in the outbox at the rotation

    r = prepare_rotation(site.fleet, DEVICE, site.center_db, now_ms())
    assert site.fingerprint() == r.new_fingerprint
    assert r.new_fingerprint != old_fingerprint
    assert r.new_fingerprint == fingerprint(before.next_signing)
    assert site.fleet.registry.next_commitment(DEVICE) is None  # used up

    handled = handset.executor.handle(r.command)
    assert handled.outcome is Outcome.DONE and handled.number == r.number
    after = Keys.of(site.folder)
    # the pre-committed pair is current, a fresh pair is next, the certificate is new
    assert after.signing == before.next_signing == site.current_key()
    assert after.tls == before.next_tls == after.cert_key
    assert after.cert_serial == r.cert_serial != before.cert_serial
    assert after.next_signing not in (before.signing, before.next_signing)
    assert after.next_tls not in (before.tls, before.next_tls)
    cert = x509.load_pem_x509_certificate((site.folder / "device.crt").read_bytes())
    cert.verify_directly_issued_by(site.fleet.ca_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEVICE
    for name in ("signing.key", "device.key", "next/signing.key", "next/device.key"):
        assert (site.folder / name).stat().st_mode & 0o777 == 0o600, name
    assert not (site.folder / rotation.PENDING).exists()
    assert not (site.folder / rotation.STAGING).exists()
    # the old record key is gone from the device
    assert all(old_pem not in p.read_bytes() for p in site.folder.rglob("*") if p.is_file())

    # the receipt: signed with the old key, announcing the new next pair
    (receipt,) = handled.stored
    assert signer_of(receipt.raw, before.signing, after.signing) == 0
    body = receipt_of(receipt.raw)
    assert body[16] == r.number and body[17] == 5 and body[18] == Outcome.DONE
    assert body[20] == after.next_signing
    assert isinstance(body[21], bytes) and csr_key(body[21]) == after.next_tls
    assert handset.rotated == [1]  # the uplink was told to load the new certificate

    # from now on the device signs with the new key
    assert handset.agent.key.public_key().public_bytes_raw() == after.signing
    with site.signer() as s:
        roll = s.build(DEVICE, RollCall(bytes(16)), now_ms=now_ms(), ttl_s=60)
    assert handset.executor.handle(roll.raw).outcome is Outcome.DONE
    handset.health()
    ack = deliver(site, handset.box)
    assert (
        ack.refused == () and len(ack.stored) == 5
    )  # old health, receipt, answer, receipt, health
    signers = [
        signer_of(raw, before.signing, after.signing) for _t, raw in center_records(site.center_db)
    ]
    assert signers == [0, 0, 0, 1, 1, 1]
    assert [(x.number, x.type, x.outcome) for x in receipts(site.center_db)] == [
        (r.number, 5, Outcome.DONE),
        (roll.number, 2, Outcome.DONE),
    ]
    # the redelivered command is a replay: no answer, nothing changes
    unchanged = snapshot(site.folder)
    assert handset.executor.handle(r.command).outcome is None
    assert snapshot(site.folder) == unchanged


def test_a_second_rotation_uses_the_commitment_from_the_first_receipt(
    site: Site, handset: Handset
) -> None:
    first = prepare_rotation(site.fleet, DEVICE, site.center_db, now_ms())
    assert handset.executor.handle(first.command).outcome is Outcome.DONE
    announced = Keys.of(site.folder)
    with pytest.raises(ProvisioningError, match=f"not answered rotation command {first.number}"):
        prepare_rotation(site.fleet, DEVICE, site.center_db, now_ms())  # receipt not there yet
    deliver(site, handset.box)
    assert collect_commitments(site.fleet, site.center_db) == 1
    assert collect_commitments(site.fleet, site.center_db) == 0  # once
    commitment = site.fleet.registry.next_commitment(DEVICE)
    assert commitment is not None and commitment[0] == announced.next_signing
    assert csr_key(commitment[1]) == announced.next_tls

    second = prepare_rotation(site.fleet, DEVICE, site.center_db, now_ms())
    assert second.number == first.number + 1
    assert second.new_fingerprint == fingerprint(announced.next_signing)
    assert handset.executor.handle(second.command).outcome is Outcome.DONE
    after = Keys.of(site.folder)
    assert after.signing == announced.next_signing == site.current_key()
    assert after.tls == announced.next_tls == after.cert_key
    assert after.cert_serial == second.cert_serial
    handset.health()
    assert deliver(site, handset.box).refused == ()
    history = [e.key.public_bytes_raw() for e in site.fleet.registry.trust(DEVICE)]
    assert len(history) == 3 and history[0] == after.signing
    # every record the center holds verifies with one of the device's keys, in order
    keys = tuple(reversed(history))
    signers = [signer_of(raw, *keys) for _t, raw in center_records(site.center_db)]
    assert signers == [0, 1, 2]  # receipt 1 (first key), receipt 2 (second), health (third)


def test_a_lost_rotation_command_is_signed_again_with_the_same_certificate(
    site: Site, handset: Handset
) -> None:
    lost = prepare_rotation(site.fleet, DEVICE, site.center_db, now_ms())
    again = resend_rotation(site.fleet, DEVICE, site.center_db, now_ms())
    assert again.number == lost.number + 1
    assert (again.cert_serial, again.new_fingerprint) == (lost.cert_serial, lost.new_fingerprint)
    assert handset.executor.handle(again.command).outcome is Outcome.DONE
    assert Keys.of(site.folder).signing == site.current_key()
    assert handset.executor.handle(lost.command).outcome is None  # a lower number: a replay
    deliver(site, handset.box)
    with pytest.raises(ProvisioningError, match="answered rotation command"):
        resend_rotation(site.fleet, DEVICE, site.center_db, now_ms())


# --- refusals -----------------------------------------------------------------------------------


def _csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def _next_csr(site: Site) -> x509.CertificateSigningRequest:
    commitment = site.fleet.registry.next_commitment(DEVICE)
    assert commitment is not None
    return x509.load_der_x509_csr(commitment[1])


def cert_for_another_key(site: Site, tmp: Path) -> x509.Certificate:
    other = _csr(ec.generate_private_key(ec.SECP256R1()))
    return ca.issue_client(site.fleet.ca_key(), site.fleet.ca_cert, DEVICE, other, now_ms())


def cert_from_another_ca(site: Site, tmp: Path) -> x509.Certificate:
    other = Fleet.init(tmp / "other-fleet", now_ms(), name="other")
    try:
        return ca.issue_client(other.ca_key(), other.ca_cert, DEVICE, _next_csr(site), now_ms())
    finally:
        other.close()


def cert_for_another_device(site: Site, tmp: Path) -> x509.Certificate:
    f = site.fleet
    return ca.issue_client(f.ca_key(), f.ca_cert, "h0002", _next_csr(site), now_ms())


def cert_expired(site: Site, tmp: Path) -> x509.Certificate:
    issued = now_ms() - 10 * 86_400_000
    f = site.fleet
    return ca.issue_client(f.ca_key(), f.ca_cert, DEVICE, _next_csr(site), issued, days=2)


def cert_fine(site: Site, tmp: Path) -> x509.Certificate:
    f = site.fleet
    return ca.issue_client(f.ca_key(), f.ca_cert, DEVICE, _next_csr(site), now_ms())


REFUSED: dict[str, tuple[Callable[[Site, Path], x509.Certificate], bool, str]] = {
    "another key": (cert_for_another_key, True, "not this device's next TLS key"),
    "another CA": (cert_from_another_ca, True, "not issued by this device's CA"),
    "another device": (cert_for_another_device, True, "names 'h0002', not this device"),
    "expired": (cert_expired, True, "certificate expired on"),
    "no key folder": (cert_fine, False, "key rotation is not set up on this device"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_rotation_that_does_not_fit_is_refused_and_changes_nothing(
    site: Site, tmp_path: Path, case: str
) -> None:
    make, identity, words = REFUSED[case]
    h = open_handset(site.config, identity=identity)
    der = make(site, tmp_path).public_bytes(serialization.Encoding.DER)
    with site.signer() as s:
        command = s.build(DEVICE, RotateKeys(der), now_ms=now_ms(), ttl_s=600)
    before, key = snapshot(site.folder), h.agent.key
    handled = h.executor.handle(command.raw)
    assert handled.outcome is Outcome.REFUSED
    assert handled.reason is not None and words in handled.reason, handled.reason
    assert snapshot(site.folder) == before
    assert h.agent.key is key and h.rotated == []
    body = receipt_of(handled.stored[0].raw)
    assert body[18] == Outcome.REFUSED and body[19] == handled.reason
    assert 20 not in body and 21 not in body
    h.close()


# --- crashes ------------------------------------------------------------------------------------

CHILD = """
import os, sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}, {repo!r}]
import test_rotation as t

config, phase, raw = Path(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])
h = t.open_handset(config)
if phase == "staged":  # the receipt is being signed: keys staged, nothing committed
    class Stall:
        def sign(self, data):
            os.write(1, b"staged\\n")
            time.sleep(60)
    h.agent.key = Stall()
else:  # the receipt is committed, the swap not begun
    def stall(_stored):
        os.write(1, b"committed\\n")
        time.sleep(60)
    h.agent.on_stored = stall
os.write(1, b"ready\\n")
h.executor.handle(raw)
os.write(1, b"returned\\n")
"""


def run_and_kill(config: Path, phase: str, raw: bytes) -> None:
    """Carry out `raw` in a real process and kill -9 it at `phase`."""
    kill_child_at(CHILD.format(tests=str(REPO / "tests"), repo=str(REPO)), config, phase, raw)


async def restart(config: Path) -> DeviceAgent:
    """Start the real daemon on the device folder and stop it at once: what a reboot does
    before the first record (recovery, then the key is loaded)."""
    run = AgentRun(load_config(config), stop_event=asyncio.Event())
    run.stop()
    return await run.run()


async def test_killed_after_the_receipt_commit_the_restart_completes_the_swap(site: Site) -> None:
    before = Keys.of(site.folder)
    r = prepare_rotation(site.fleet, DEVICE, site.center_db, now_ms())
    run_and_kill(site.config, "committed", r.command)
    assert (site.folder / rotation.PENDING).is_dir()
    assert Keys.of(site.folder) == before  # killed before the swap began
    agent = await restart(site.config)
    after = Keys.of(site.folder)
    assert agent.key.public_key().public_bytes_raw() == after.signing == site.current_key()
    assert after.tls == before.next_tls == after.cert_key and after.cert_serial == r.cert_serial
    assert not (site.folder / rotation.PENDING).exists()
    h = open_handset(site.config)
    (row,) = h.box.answered_commands()
    assert (row.number, row.outcome) == (r.number, Outcome.DONE)
    # the next pair on disk is exactly the one the committed receipt announced
    body = receipt_of(h.box.pending(10)[0].raw)
    assert isinstance(body[21], bytes)
    assert body[20] == after.next_signing and csr_key(body[21]) == after.next_tls
    assert signer_of(h.box.pending(10)[0].raw, before.signing) == 0
    assert h.executor.handle(r.command).outcome is None  # redelivered: a replay
    h.health()
    ack = deliver(site, h.box)
    assert ack.refused == () and len(ack.stored) == 2
    h.close()
    assert collect_commitments(site.fleet, site.center_db) == 1  # rotation can happen again


async def test_killed_before_the_receipt_commit_the_restart_undoes_the_stage(site: Site) -> None:
    untouched = snapshot(site.folder)
    before = Keys.of(site.folder)
    r = prepare_rotation(site.fleet, DEVICE, site.center_db, now_ms())
    run_and_kill(site.config, "staged", r.command)
    assert (site.folder / rotation.PENDING).is_dir()  # staged …
    agent = await restart(site.config)
    assert snapshot(site.folder) == untouched  # … and undone: the receipt was never committed
    assert agent.key.public_key().public_bytes_raw() == before.signing
    h = open_handset(site.config)
    assert h.box.answered_commands() == [] and h.box.pending(10) == []
    assert h.executor.handle(r.command).outcome is Outcome.DONE  # the redelivery rotates
    assert Keys.of(site.folder).signing == before.next_signing == site.current_key()
    h.close()


@pytest.mark.parametrize("crash_at", range(len(rotation.MOVES) + 1))
def test_a_swap_interrupted_at_any_rename_is_completed_by_recovery(
    site: Site, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    """The swap's renames one by one, the process dying before rename `crash_at` (the last
    case: after all renames, before the pending folder is removed)."""
    before = Keys.of(site.folder)
    der = cert_fine(site, site.folder).public_bytes(serialization.Encoding.DER)
    staged = rotation.stage(site.folder, der, 7)
    real_replace = os.replace
    done: list[str] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if len(done) == crash_at:
            raise OSError("killed")
        done.append(str(src))
        real_replace(src, dst)

    def rmtree(*_args: object, **_kw: object) -> None:
        raise OSError("killed")

    with monkeypatch.context() as m:
        m.setattr(
            os, "replace", replace
        )  # agent/identity/rotation.py calls os.replace, shutil.rmtree
        m.setattr(shutil, "rmtree", rmtree)
        with pytest.raises(OSError, match="killed"):
            rotation.complete(site.folder)
    assert rotation.recover(site.folder, lambda n: n == 7) == "completed"
    after = Keys.of(site.folder)
    assert (after.signing, after.tls) == (before.next_signing, before.next_tls)
    assert after.cert_key == after.tls
    assert after.next_signing == staged.next_signing_key
    assert after.next_tls == csr_key(staged.next_csr)
    assert not (site.folder / rotation.PENDING).exists()


def test_a_swap_that_fails_after_the_commit_keeps_the_old_key_until_recovery(
    site: Site, handset: Handset, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = Keys.of(site.folder)
    r = prepare_rotation(site.fleet, DEVICE, site.center_db, now_ms())

    def broken(_folder: Path) -> None:
        raise OSError("disk error")

    with monkeypatch.context() as m:
        m.setattr(rotation, "complete", broken)
        assert handset.executor.handle(r.command).outcome is Outcome.DONE
    assert handset.agent.key.public_key().public_bytes_raw() == before.signing  # still valid
    assert handset.rotated == []
    handset.health()
    assert deliver(site, handset.box).refused == ()  # the registry still trusts the old key
    assert rotation.recover(site.folder, rotation.committed(handset.box)) == "completed"
    assert Keys.of(site.folder).signing == before.next_signing == site.current_key()


# --- end to end: the daemon, the fleet's TLS broker, the center -------------------------------


def rollcall_answers(db: Path) -> list[bytes]:
    return [raw for t, raw in center_records(db) if t == RecordType.ROLLCALL]


def answered(db: Path, number: int) -> bool:
    return any(x.number == number for x in receipts(db, [DEVICE]))


def record(raw: bytes, key: bytes) -> Record:
    return open_record(raw, Ed25519PublicKey.from_public_bytes(key))


@pytest.mark.integration
async def test_two_rotations_over_tls_with_the_daemon_and_the_broker_crl(tmp_path: Path) -> None:
    t = now_ms()
    fleet = Fleet.init(tmp_path / "fleet", t, name="test")
    broker = Mosquitto(tmp_path / "broker", tls_dir=tmp_path / "broker-tls")
    write_broker_config(fleet, tmp_path / "broker-tls", broker.port, t)
    fleet.issue_center(tmp_path / "center-tls", t)
    tls = center_tls(tmp_path / "center-tls")
    files = provision_device(
        fleet, DEVICE, tmp_path / DEVICE, broker_host=broker.host, broker_port=broker.port, now_ms=t
    )
    folder, db = files.directory, tmp_path / "center.db"
    nmea = tmp_path / "fix.nmea"
    nmea.write_text(
        gga(t, 29.2651, 106.2551) + rmc(t, 29.2651, 106.2551, speed_mps=0, course_deg=0)
    )
    files.config.write_text(files.config.read_text() + f'\n[gnss]\nsource = "file://{nmea}"\n')
    cfg = load_config(files.config)
    assert cfg.tls is not None and cfg.tls.cert_path == folder / "device.crt"
    box = Outbox(cfg.outbox_path, DEVICE)
    box.store_time(now_ms())  # the device knows the time from an earlier run
    box.close()
    first_key = Keys.of(folder)
    with broker:
        async with running_center(tmp_path, fleet.dir / "registry.db", broker, tls=tls):
            run = AgentRun(cfg)
            task = asyncio.create_task(run.run(), name="agent")
            try:
                await wait_for(lambda: center_records(db), 20, "the first health record")
                one = prepare_rotation(fleet, DEVICE, db, now_ms())
                # no pause: a record under the new key makes the center re-read the registry
                await publish(broker.host, broker.port, DEVICE, one.command, tls=tls)
                await wait_for(lambda: answered(db, one.number), 20, "the rotation's receipt")
                second_key = Keys.of(folder)
                assert second_key.signing == first_key.next_signing
                assert second_key.cert_serial == one.cert_serial

                # still valid until the device confirmed: a CRL written meanwhile spares it
                crl = x509.load_pem_x509_crl((tmp_path / "broker-tls" / "crl.pem").read_bytes())
                assert crl.get_revoked_certificate_by_serial_number(first_key.cert_serial) is None
                # the receipt confirms it: collecting it revokes the old certificate
                assert collect_commitments(fleet, db) == 1
                crl = x509.load_pem_x509_crl((tmp_path / "broker-tls" / "crl.pem").read_bytes())
                assert crl.get_revoked_certificate_by_serial_number(first_key.cert_serial)
                broker.stop()
                broker.start()
                with CommandSigner(fleet.center_key, db) as s:
                    roll = s.build(DEVICE, RollCall(bytes(16)), now_ms=now_ms(), ttl_s=60)
                await publish(broker.host, broker.port, DEVICE, roll.raw, tls=tls)
                await wait_for(lambda: rollcall_answers(db), 30, "the roll call answer")
                record(rollcall_answers(db)[0], second_key.signing)  # signed with the new key

                two = prepare_rotation(fleet, DEVICE, db, now_ms())  # the receipt's commitment
                await publish(broker.host, broker.port, DEVICE, two.command, tls=tls)
                await wait_for(lambda: answered(db, two.number), 20, "the second receipt")
            finally:
                run.stop()
                await asyncio.wait_for(task, timeout=15)
    third_key = Keys.of(folder)
    current = fleet.registry.public_key(DEVICE)
    assert current is not None
    assert third_key.signing == second_key.next_signing == current.public_bytes_raw()
    assert third_key.cert_serial == two.cert_serial
    assert [(x.number, x.type, x.outcome) for x in receipts(db, [DEVICE])] == [
        (one.number, 5, Outcome.DONE),
        (roll.number, 2, Outcome.DONE),
        (two.number, 5, Outcome.DONE),
    ]
    # every record at the center verifies with the key the device held when it signed it
    keys = (first_key.signing, second_key.signing, third_key.signing)
    signers = [signer_of(raw, *keys) for _t, raw in center_records(db)]
    assert signers == sorted(signers) and signers[0] == 0 and 1 in signers
    fleet.close()
