"""Another implementation verifies Picket records: pycose, run as a user would run it.

pycose 1.1.0 needs cbor2 5 (Picket uses cbor2 6), so it lives apart in .venv/interop
(`./run test` installs it) and runs in a subprocess with only that folder put first on
PYTHONPATH; nothing of Picket's code is imported there. The script it runs is the one in
docs/records.md ("Verifying with a standard COSE library"), read from the document, so the
documentation is tested as written. The input is a real center database, exported with
`center.export`; the tampering cases are the COSE working group's Ed25519 example and
Picket records, each mutated the same ways, and both implementations must agree on each.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from center.export import export_records, list_devices
from center.ingest import Ingest
from center.store import CenterStore
from contract.cose import sig_structure, verify1
from contract.errors import RecordError
from contract.fix import Fix, TimeSource
from contract.protocol import Batch, records_topic
from contract.records import (
    ChainPosition,
    Eviction,
    Outcome,
    RecordType,
    alert_body,
    build,
    chain_hash,
    dropped_body,
    health_body,
    receipt_body,
    rollcall_body,
)

REPO = Path(__file__).resolve().parents[1]
INTEROP = REPO / ".venv" / "interop"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
DOC = REPO / "docs" / "records.md"
VECTOR = REPO / "tests" / "corpus" / "cose" / "eddsa-sig-01.json"

# Runs in the subprocess: loads the documented script as a module and applies its `items` and
# `verify` to each case, the way the script treats each record of an export.
HARNESS = """
import importlib.metadata, importlib.util, json, sys

spec = importlib.util.spec_from_file_location("verify_picket", sys.argv[1])
doc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(doc)
with open(sys.argv[2]) as f:
    cases = json.load(f)
results = {}
for case in cases:
    try:
        found = list(doc.items(bytes.fromhex(case["cose"])))
        if len(found) != 1:
            raise ValueError(f"{len(found)} CBOR items, not one")
        payload = doc.verify(found[0], bytes.fromhex(case["public_key"]))
        results[case["name"]] = {"ok": True, "payload": payload.hex()}
    except Exception as exc:
        results[case["name"]] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
picket = ("agent", "center", "picket", "simulators", "provisioning")
print(json.dumps({
    "cbor2": importlib.metadata.version("cbor2"),
    "pycose": importlib.metadata.version("pycose"),
    "picket_modules": sorted(m for m in sys.modules if m.split(".")[0] in picket),
    "results": results,
}))
"""


@pytest.fixture(scope="module")
def interop() -> Path:
    if not (INTEROP / "pycose").is_dir():
        pytest.fail(
            f"pycose is not installed in {INTEROP}: run ./run test (it installs pycose 1.1.0 "
            "with cbor2 5 there, apart from the project's cbor2 6)",
            pytrace=False,
        )
    return INTEROP


@pytest.fixture
def verify_script(tmp_path: Path) -> Path:
    """The pycose script of docs/records.md, as a reader would copy it."""
    text = DOC.read_text()
    section = text.split("## Verifying with a standard COSE library", 1)[-1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, f"no python block under 'Verifying with a standard COSE library' in {DOC}"
    path = tmp_path / "verify_picket.py"
    path.write_text(found.group(1))
    return path


def run(interop: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    env = {**os.environ, "PYTHONPATH": str(interop)}
    return subprocess.run(
        [str(python), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=interop.parent,
        timeout=120,
        check=False,
    )


def pycose_results(
    interop: Path, script: Path, tmp_path: Path, cases: dict[str, tuple[bytes, bytes]]
) -> dict[str, Any]:
    """{name: {"ok": bool, ...}} from pycose for {name: (COSE bytes, raw public key)}."""
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    data = tmp_path / "cases.json"
    data.write_text(
        json.dumps(
            [{"name": n, "cose": c.hex(), "public_key": k.hex()} for n, (c, k) in cases.items()]
        )
    )
    done = run(interop, harness, script, data)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    # the other implementation really is the other one
    assert report["cbor2"].startswith("5."), report["cbor2"]
    assert report["pycose"] == "1.1.0"
    assert report["picket_modules"] == []
    results: dict[str, Any] = report["results"]
    return results


def picket_accepts(raw: bytes, public_key: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        verify1(raw, Ed25519PublicKey.from_public_bytes(public_key))
    except RecordError:
        return False
    return True


# --- a real center database, exported, verified by the documented pycose script ---------------

KEYS = {d: Ed25519PrivateKey.generate() for d in ("h0001", "h0002", "h0003")}
FIX = Fix(time_ms=1_772_323_260_000, lat=29.5630, lon=106.5516, accuracy_m=4.2)


def bodies() -> Iterator[tuple[RecordType, dict[int, object]]]:
    """A record of every type, in the order a device might write them."""
    yield RecordType.CHECKIN, {16: "P007", 17: 1, 18: 95, 19: 295630000, 20: 1065516000}
    yield RecordType.MISSED, {16: "P011", 17: 1, 18: "L02", 20: 1_772_323_300_000}
    yield RecordType.SUSPICION, {16: 1, 17: 295630000, 18: 1065516000, 19: "implied speed 90 m/s"}
    yield RecordType.HEALTH, health_body(depth=2, battery_pct=80, rssi_dbm=-101)
    yield RecordType.ROLLCALL, rollcall_body(b"\x07\x01\xfe", FIX)
    yield RecordType.ALERT, alert_body(fix=FIX, battery_pct=12)
    yield RecordType.RECEIPT, receipt_body(33, 2, Outcome.DONE)
    yield RecordType.DROPPED, dropped_body(Eviction(2, 3, 4, 310, (RecordType.CHECKIN,)))


def device_records(device: str) -> list[bytes]:
    out: list[bytes] = []
    for seq, (rtype, body) in enumerate(bodies(), start=1):
        out.append(
            build(
                KEYS[device],
                device=device,
                chain=ChainPosition(boot=2, seq=seq, prev=chain_hash(out[-1]) if out else b""),
                rtype=rtype,
                time_ms=1_772_323_200_000 + seq * 60_000,
                time_source=TimeSource.GNSS,
                body=body,
            )
        )
    return out


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path, list[bytes]]:
    """records.cbor and devices.json from a center database fed through ingest."""
    db = tmp_path / "center.db"
    ingest = Ingest(CenterStore(db), lambda d: KEYS[d].public_key() if d in KEYS else None)
    sent: list[bytes] = []
    for device in KEYS:
        recs = device_records(device)
        ack = ingest.handle(records_topic(device), Batch(1, tuple(recs)).encode(), 0)
        assert ack is not None and len(ack.stored) == len(recs), ack
        sent.extend(recs)
    ingest.store.close()
    records = tmp_path / "records.cbor"
    assert export_records(db, records) == len(sent) == 24
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps({"devices": list_devices(db)}))
    return records, devices, sent


def test_pycose_verifies_every_record_of_a_center_export(
    interop: Path, verify_script: Path, exported: tuple[Path, Path, list[bytes]]
) -> None:
    records, devices, sent = exported
    done = run(interop, verify_script, records, devices)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"{len(sent)} verified, 0 failed"
    verified = sorted(line.split()[1:4:2] for line in lines[:-1] if line.startswith("ok "))
    expected = sorted([d, str(s)] for d in KEYS for s in range(1, 9))
    assert verified == expected


def test_pycose_script_reports_a_record_no_key_verifies(
    interop: Path, verify_script: Path, exported: tuple[Path, Path, list[bytes]]
) -> None:
    records, devices, _ = exported
    data = bytearray(records.read_bytes())
    i = data.index(b"P007") + 3
    data[i] ^= 0x01  # one byte of one stored record, changed after the fact
    records.write_bytes(bytes(data))
    done = run(interop, verify_script, records, devices)
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == "23 verified, 1 failed"
    assert "FAILED  h0001: no key of this device verifies the record" in done.stdout


# --- tampering: the same mutations, refused by both implementations -----------------------------


def _parts(raw: bytes) -> list[Any]:
    item = cbor2.loads(raw)
    assert isinstance(item, cbor2.CBORTag) and item.tag == 18
    return [item.value[0], dict(item.value[1]), item.value[2], item.value[3]]


def _encode(parts: list[Any], tag: int | None = 18) -> bytes:
    return cbor2.dumps(parts if tag is None else cbor2.CBORTag(tag, parts))


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def mutations(
    raw: bytes, key: Ed25519PrivateKey, payload_index: int
) -> dict[str, Callable[[], bytes]]:
    """The issue's list of mutations of one valid COSE_Sign1 signed by `key`."""
    protected, unprotected, payload, signature = _parts(raw)

    def resigned(new_protected: bytes, new_unprotected: dict[Any, Any]) -> bytes:
        sig = key.sign(sig_structure(new_protected, payload))
        return _encode([new_protected, new_unprotected, payload, sig])

    other_protected = cbor2.loads(protected) | {3: 1}  # one more (content type) parameter
    return {
        "wrong tag (98)": lambda: _encode([protected, unprotected, payload, signature], tag=98),
        "untagged": lambda: _encode([protected, unprotected, payload, signature], tag=None),
        "changed payload": lambda: _encode(
            [protected, unprotected, _flip(payload, payload_index), signature]
        ),
        "changed algorithm (ES256, re-signed)": lambda: resigned(cbor2.dumps({1: -7}), unprotected),
        "removed algorithm (re-signed)": lambda: resigned(b"", unprotected),
        "algorithm only in the unprotected header (re-signed)": lambda: resigned(
            b"", {**unprotected, 1: -8}
        ),
        "changed protected header": lambda: _encode(
            [cbor2.dumps(other_protected), unprotected, payload, signature]
        ),
        "truncated signature": lambda: _encode([protected, unprotected, payload, signature[:63]]),
        "trailing bytes": lambda: raw + b"\x00",
    }


def agree(
    interop: Path,
    script: Path,
    tmp_path: Path,
    *,
    raw: bytes,
    key: Ed25519PrivateKey,
    payload_index: int,
) -> dict[str, Any]:
    public = key.public_key().public_bytes_raw()
    wrong = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key().public_bytes_raw()
    cases = {"original": (raw, public), "wrong key": (raw, wrong)}
    cases |= {name: (make(), public) for name, make in mutations(raw, key, payload_index).items()}
    results = pycose_results(interop, script, tmp_path, cases)
    for name, (cose, k) in cases.items():
        accepted = name == "original"
        assert results[name]["ok"] is accepted, f"pycose on {name!r}: {results[name]}"
        assert picket_accepts(cose, k) is accepted, f"Picket on {name!r}"
    return results


def test_cose_wg_vector_and_its_mutations_agree_in_pycose_and_picket(
    interop: Path, verify_script: Path, tmp_path: Path
) -> None:
    vector = json.loads(VECTOR.read_text())
    key = Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex(vector["input"]["sign0"]["key"]["d_hex"])
    )
    raw = bytes.fromhex(vector["output"]["cbor"])
    results = agree(interop, verify_script, tmp_path, raw=raw, key=key, payload_index=0)
    assert bytes.fromhex(results["original"]["payload"]) == vector["input"]["plaintext"].encode()
    # the key of the vector is the one its JSON names
    assert key.public_key().public_bytes_raw().hex() == vector["input"]["sign0"]["key"]["x_hex"]


def test_picket_record_and_its_mutations_agree_in_pycose_and_picket(
    interop: Path, verify_script: Path, tmp_path: Path
) -> None:
    raw = device_records("h0002")[0]
    payload = _parts(raw)[2]
    at = payload.index(b"P007") + 3
    results = agree(interop, verify_script, tmp_path, raw=raw, key=KEYS["h0002"], payload_index=at)
    assert cbor2.loads(bytes.fromhex(results["original"]["payload"]))[16] == "P007"
