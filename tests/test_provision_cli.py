"""`picket provision …` and `picket agent enroll | install` as a technician runs them.

The commands are parsed by a parser built from picket/provisioncmd.py's own `add_*_parsers`
and dispatched through its `HANDLERS`, exactly as picket/cli.py does, so these tests do not
depend on how cli.py is wired. Two machines are two folders: the device folder only ever
receives the bundle, the fleet folder only ever receives the request. Every key, signature
and certificate is real; files are tampered with by flipping real bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.checkin.planfile import plan_to_geojson
from agent.config import ConfigError, load_config
from contract.enrollment import decode_bundle
from picket.provisioncmd import HANDLERS, add_agent_parsers, add_provision_parsers
from provisioning.registry import Registry
from simulators.district import generate_district

FP = re.compile(r"[0-9a-f]{4}(?:-[0-9a-f]{4}){7}")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def picket(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    """Parse and dispatch like picket/cli.py, with this module's parsers and handlers."""
    parser = argparse.ArgumentParser(prog="picket")
    sub = parser.add_subparsers(dest="command", required=True)
    add_provision_parsers(
        sub.add_parser("provision").add_subparsers(dest="provision_command", required=True)
    )
    add_agent_parsers(sub.add_parser("agent").add_subparsers(dest="agent_command", required=True))
    capsys.readouterr()
    try:
        args = parser.parse_args([str(a) for a in argv])
        code = HANDLERS[(args.command, getattr(args, f"{args.command}_command"))](args)
    except SystemExit as exc:  # argparse refusing an argument
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return Result(code, out, err)


def fleet_fp(result: Result) -> str:
    found = re.search(r"fleet fingerprint: (\S+)", result.out)
    assert found, result.out
    return found.group(1)


def key_fp(result: Result) -> str:
    found = re.search(r"device key fingerprint: (\S+)", result.out)
    assert found, result.out
    return found.group(1)


@pytest.fixture
def fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    folder = tmp_path / "fleet"
    r = picket(capsys, "provision", "init", "--fleet", folder, "--name", "north")
    assert r.code == 0, r.err
    return folder, fleet_fp(r)


def enroll(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, pin: str | None, *extra: str
) -> tuple[Path, Path, Result]:
    """Enroll a device in tmp_path/name; returns (device folder, request file, result)."""
    folder, request = tmp_path / name, tmp_path / f"{name}.request"
    pinned = [] if pin is None else ["--fleet-fingerprint", pin]
    r = picket(capsys, "agent", "enroll", "--dir", folder, "--out", request, *pinned, *extra)
    assert r.code == 0, r.err
    return folder, request, r


def approve(
    capsys: pytest.CaptureFixture[str], fleet: Path, request: Path, device: str, *extra: str | Path
) -> Result:
    bundle = request.with_suffix(".bundle")
    return picket(
        capsys, "provision", "approve", request, "--fleet", fleet, "--id", device,
        "--out", bundle, *extra,
    )  # fmt: skip


def provisioned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fleet: tuple[Path, str], device: str
) -> Path:
    """A device enrolled, approved and installed the two-machine way; its folder."""
    folder, request, _ = enroll(capsys, tmp_path, device, fleet[1])
    assert approve(capsys, fleet[0], request, device).code == 0
    r = picket(capsys, "agent", "install", request.with_suffix(".bundle"), "--dir", folder)
    assert r.code == 0, r.err
    return folder


def verify(capsys: pytest.CaptureFixture[str], fleet: Path, *what: str | Path) -> dict[str, bool]:
    """Run `provision verify --json`; the checks by name (False if any of that name failed)."""
    r = picket(capsys, "provision", "verify", *what, "--fleet", fleet, "--json")
    doc = json.loads(r.out.strip().splitlines()[-1])
    assert r.code == (0 if doc["ok"] else 1)
    checks: dict[str, bool] = {}
    for c in doc["checks"]:
        checks[c["check"]] = checks.get(c["check"], True) and c["ok"]
    return checks


# --- the two-machine flow ---------------------------------------------------------------------


def test_init_enroll_approve_install_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    folder, fp = fleet
    assert FP.fullmatch(fp)
    plan = tmp_path / "plan.geojson"
    plan.write_text(json.dumps(plan_to_geojson(generate_district(7))), encoding="utf-8")

    device, request, enrolled = enroll(
        capsys, tmp_path, "dev", fp, "--fact", "site=depot-3", "--fact", "asset=PK-0042"
    )
    device_key = key_fp(enrolled)
    assert "picket provision approve" in enrolled.out and "picket agent install" in enrolled.out
    assert stat.S_IMODE((device / "signing.key").stat().st_mode) == 0o600

    r = approve(
        capsys, folder, request, "h0001", "--tier", "street", "--team", "T01",
        "--plan", plan, "--label", tmp_path / "labels",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert device_key in r.out  # the technician compares it with the device's screen
    assert "site" in r.out and "depot-3" in r.out and "PK-0042" in r.out
    assert (tmp_path / "labels" / "h0001.png").is_file()
    bundle = request.with_suffix(".bundle")

    r = picket(capsys, "agent", "install", bundle, "--dir", device)
    assert r.code == 0, r.err
    assert fp in r.out and "picket agent run --config" in r.out
    cfg = load_config(device / "config.toml")
    assert (cfg.device, cfg.team, cfg.broker_port) == ("h0001", "T01", 8883)
    assert cfg.plan_path is not None and cfg.plan_path.read_bytes() == plan.read_bytes()
    with Registry(folder / "registry.db", readonly=True) as reg:
        registered = reg.public_key("h0001")
    assert registered is not None
    assert registered.public_bytes_raw() == cfg.load_key().public_key().public_bytes_raw()

    assert all(verify(capsys, folder, bundle).values())
    checks = verify(capsys, folder, "--dir", device)
    assert all(checks.values()), checks
    assert {"config", "record key", "TLS key", "certificate chain", "fleet key"} <= set(checks)
    r = picket(capsys, "provision", "verify", "--dir", device, "--fleet", folder)
    assert r.code == 0 and "all" in r.out and "FAILED" not in r.out


def test_init_again_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    folder, fp = fleet
    before = {p.name: p.read_bytes() for p in (folder / "ca.crt", folder / "center.key")}
    r = picket(capsys, "provision", "init", "--fleet", folder, "--broker", "10.0.0.1:8883")
    assert r.code == 0
    assert "already exists" in r.out and "nothing changed" in r.out
    assert fleet_fp(r) == fp
    assert "not applied" in r.err
    assert {p.name: p.read_bytes() for p in (folder / "ca.crt", folder / "center.key")} == before


def test_enroll_refuses_a_bad_fleet_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = picket(
        capsys, "agent", "enroll", "--dir", tmp_path / "d", "--out", tmp_path / "r",
        "--fleet-fingerprint", "1234-abcd",
    )  # fmt: skip
    assert r.code == 2 and "not a fleet fingerprint" in r.err
    assert not (tmp_path / "d").exists()


def test_enroll_refuses_an_installed_identity_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    device = provisioned(capsys, tmp_path, fleet, "h0001")
    key = (device / "signing.key").read_bytes()
    r = picket(capsys, "agent", "enroll", "--dir", device, "--out", tmp_path / "again")
    assert r.code == 2
    assert "already holds an installed identity" in r.err and "--force" in r.err
    assert (device / "signing.key").read_bytes() == key
    r = picket(capsys, "agent", "enroll", "--dir", device, "--out", tmp_path / "again", "--force")
    assert r.code == 0, r.err
    assert (device / "signing.key").read_bytes() != key


# --- bundles refused ------------------------------------------------------------------------


def test_a_tampered_bundle_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    device, request, _ = enroll(capsys, tmp_path, "dev", fleet[1])
    assert approve(capsys, fleet[0], request, "h0001").code == 0
    bundle = request.with_suffix(".bundle")
    raw = bytearray(bundle.read_bytes())
    cert = decode_bundle(bytes(raw)).cert
    at = raw.index(cert) + len(cert) // 2  # inside the certificate's signed fields
    raw[at] ^= 0x01
    tampered = tmp_path / "tampered.bundle"
    tampered.write_bytes(bytes(raw))

    r = picket(capsys, "agent", "install", tampered, "--dir", device)
    assert r.code == 2
    assert "signature" in r.err and str(tampered) in r.err
    assert not (device / "device.crt").exists() and not (device / "config.toml").exists()
    assert verify(capsys, fleet[0], tampered) == {"bundle signature": False}


def test_a_bundle_from_another_fleet_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    other = tmp_path / "other"
    assert picket(capsys, "provision", "init", "--fleet", other).code == 0
    device, request, _ = enroll(capsys, tmp_path, "dev", fleet[1])
    assert approve(capsys, other, request, "h0001").code == 0  # the wrong fleet answers
    bundle = request.with_suffix(".bundle")
    r = picket(capsys, "agent", "install", bundle, "--dir", device)
    assert r.code == 2
    assert "foreign bundle" in r.err and fleet[1] in r.err
    assert not (device / "device.crt").exists()
    checks = verify(capsys, fleet[0], bundle)
    assert not checks["fleet key"] and not checks["certificate chain"]


def test_a_bundle_for_another_device_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    one, _, _ = enroll(capsys, tmp_path, "one", fleet[1])
    _, request_two, _ = enroll(capsys, tmp_path, "two", fleet[1])
    assert approve(capsys, fleet[0], request_two, "h0002").code == 0
    r = picket(capsys, "agent", "install", request_two.with_suffix(".bundle"), "--dir", one)
    assert r.code == 2
    assert "different enrollment request" in r.err
    assert not (one / "device.crt").exists()


# --- approval refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "needle"),
    [
        ("picket-center", "reserved"),
        ("picket-center-2", "reserved"),
        ("a b", "device id 'a b'"),
        ("_h1", "device id '_h1'"),
        ("h" * 65, "1-64 letters"),
    ],
)
def test_approve_refuses_a_bad_id(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fleet: tuple[Path, str],
    device: str,
    needle: str,
) -> None:
    _, request, _ = enroll(capsys, tmp_path, "dev", fleet[1])
    r = approve(capsys, fleet[0], request, device)
    assert r.code == 2 and needle in r.err
    assert not request.with_suffix(".bundle").exists()


def test_approve_refuses_an_enrolled_id_unless_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    provisioned(capsys, tmp_path, fleet, "h0001")
    _, request, _ = enroll(capsys, tmp_path, "spare", fleet[1])
    r = approve(capsys, fleet[0], request, "h0001")
    assert r.code == 2 and "already enrolled" in r.err and "--replace" in r.err
    assert not request.with_suffix(".bundle").exists()
    r = approve(capsys, fleet[0], request, "h0001", "--replace")
    assert r.code == 0, r.err


def test_approve_does_not_undo_a_revocation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    provisioned(capsys, tmp_path, fleet, "h0001")
    assert picket(capsys, "provision", "revoke", "--fleet", fleet[0], "--id", "h0001").code == 0
    old_request = tmp_path / "h0001.request"
    for extra in ((), ("--replace",)):
        r = approve(capsys, fleet[0], old_request, "h0001", *extra)
        assert r.code == 2 and "was revoked at" in r.err and "enroll again" in r.err
    _, request, _ = enroll(capsys, tmp_path, "spare", fleet[1])
    r = approve(capsys, fleet[0], request, "h0001")
    assert r.code == 2 and "h0001 was revoked at" in r.err and "--replace" in r.err
    assert approve(capsys, fleet[0], request, "h0001", "--replace").code == 0
    with Registry(fleet[0] / "registry.db", readonly=True) as reg:
        entry = reg.entry("h0001")
    assert entry is not None and entry.revoked_ms is None


def test_approve_refuses_a_broken_request_and_a_broken_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    _, request, _ = enroll(capsys, tmp_path, "dev", fleet[1])
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00" * 40)
    r = approve(capsys, fleet[0], garbage, "h0001")
    assert r.code == 2 and str(garbage) in r.err
    plan = tmp_path / "plan.geojson"
    plan.write_text('{"type": "FeatureCollection"', encoding="utf-8")
    r = approve(capsys, fleet[0], request, "h0001", "--plan", plan)
    assert r.code == 2 and "plan" in r.err and "not valid JSON" in r.err
    listed = picket(capsys, "provision", "list", "--fleet", fleet[0], "--json")
    assert json.loads(listed.out)["devices"] == []


# --- batch and list -------------------------------------------------------------------------


def test_batch_enrolls_fifty_then_skips_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    out = tmp_path / "devices"
    args = ("provision", "batch", "--fleet", fleet[0], "--out", out, "--count", "50")
    r = picket(capsys, *args, "--prefix", "h", "--team", "T01", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out.strip().splitlines()[-1])
    assert (doc["enrolled"], doc["skipped"], doc["failed"], doc["devices"]) == (50, 0, 0, 50)
    assert doc["per_second"] > 0 and doc["fleet_fingerprint"] == fleet[1]
    assert "enrolled 50" in r.err  # the progress line's summary, on stderr
    assert sorted(p.name for p in out.iterdir()) == [f"h{n:04d}" for n in range(1, 51)]
    assert load_config(out / "h0050" / "config.toml").team == "T01"
    assert all(verify(capsys, fleet[0], "--dir", out / "h0037").values())

    r = picket(capsys, *args, "--json")
    doc = json.loads(r.out.strip().splitlines()[-1])
    assert r.code == 0 and (doc["enrolled"], doc["skipped"]) == (0, 50)

    listed = picket(capsys, "provision", "list", "--fleet", fleet[0], "--json")
    devices = json.loads(listed.out)["devices"]
    assert len(devices) == 50 and {d["team"] for d in devices} == {"T01"}


def test_batch_reports_a_failed_device_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    out = tmp_path / "devices"
    out.mkdir()
    (out / "h0002").write_text("a file where the device folder goes\n", encoding="utf-8")
    r = picket(
        capsys, "provision", "batch", "--fleet", fleet[0], "--out", out,
        "--ids", "h0001,h0002,h0003", "--labels", "--json",
    )  # fmt: skip
    assert r.code == 1
    doc = json.loads(r.out.strip().splitlines()[-1])
    assert (doc["enrolled"], doc["failed"]) == (2, 1)
    assert doc["failures"][0]["id"] == "h0002" and "h0002" in doc["failures"][0]["error"]
    assert (out / "h0003" / "config.toml").is_file()
    assert (out / "h0003" / "h0003.png").is_file() and (out / "h0003" / "h0003.svg").is_file()

    r = picket(capsys, "provision", "batch", "--fleet", fleet[0], "--out", out, "--ids", "h0002")
    assert r.code == 1 and "FAILED h0002" in r.out and "failed 1" in r.out


def test_batch_refuses_ids_that_do_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    base = ("provision", "batch", "--fleet", fleet[0], "--out", tmp_path / "d")
    r = picket(capsys, *base, "--count", "20", "--start", "90", "--width", "2")
    assert r.code == 2 and "more than --width 2 digits" in r.err
    r = picket(capsys, *base, "--ids", "h1,h1")
    assert r.code == 2 and "named twice" in r.err
    r = picket(capsys, *base, "--ids", "h1", "--count", "3")
    assert r.code == 2 and "not allowed with" in r.err


def test_list_shows_every_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    for device in ("h0001", "h0002"):
        provisioned(capsys, tmp_path, fleet, device)
    assert picket(capsys, "provision", "revoke", "--fleet", fleet[0], "--id", "h0002").code == 0
    r = picket(capsys, "provision", "list", "--fleet", fleet[0], "--json")
    assert r.code == 0
    doc = json.loads(r.out)
    assert doc["fingerprint"] == fleet[1] and doc["fleet"] == "north"
    one, two = doc["devices"]
    assert (one["id"], two["id"]) == ("h0001", "h0002")
    assert FP.fullmatch(one["fingerprint"]) and one["cert_not_after_ms"] > 0
    assert one["revoked_ms"] is None and two["revoked_ms"] is not None
    table = picket(capsys, "provision", "list", "--fleet", fleet[0]).out.splitlines()
    assert table[0].split()[:3] == ["DEVICE", "TIER", "TEAM"]
    assert table[1].startswith("h0001") and one["fingerprint"] in table[1]
    assert "2 devices, 1 revoked" in table[-1]


# --- verify catches what is wrong -----------------------------------------------------------


def test_verify_detects_keys_of_another_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    one = provisioned(capsys, tmp_path, fleet, "h0001")
    two = provisioned(capsys, tmp_path, fleet, "h0002")
    shutil.copy2(two / "device.key", one / "device.key")
    checks = verify(capsys, fleet[0], "--dir", one)
    assert checks["TLS key"] is False and checks["record key"] is True
    r = picket(capsys, "provision", "verify", "--dir", one, "--fleet", fleet[0])
    assert r.code == 1 and re.search(r"FAILED\s+TLS key: .*device\.key is not the key", r.out)

    shutil.copy2(two / "signing.key", one / "signing.key")
    checks = verify(capsys, fleet[0], "--dir", one)
    assert checks["record key"] is False


def test_verify_detects_a_revoked_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    device = provisioned(capsys, tmp_path, fleet, "h0001")
    broker = tmp_path / "broker"
    r = picket(
        capsys, "provision", "broker-config", "--fleet", fleet[0], "--out", broker,
        "--port", "8883",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert f"mosquitto -c {(broker / 'mosquitto.conf').resolve()}" in r.out
    crl_before = (broker / "crl.pem").read_bytes()

    r = picket(capsys, "provision", "revoke", "--fleet", fleet[0], "--id", "h0001")
    assert r.code == 0, r.err
    assert "1 certificate revoked" in r.out and "kill -HUP" in r.out
    assert f"CRL rewritten: {fleet[0] / 'crl.pem'}" in r.out
    assert f"CRL rewritten: {broker.resolve() / 'crl.pem'}" in r.out
    assert (broker / "crl.pem").read_bytes() != crl_before

    checks = verify(capsys, fleet[0], "--dir", device)
    assert checks["certificate revocation"] is False and checks["registry entry"] is False
    assert checks["TLS key"] is True
    bundle = tmp_path / "h0001.bundle"
    assert verify(capsys, fleet[0], bundle)["certificate revocation"] is False

    r = picket(capsys, "provision", "revoke", "--fleet", fleet[0], "--id", "h9999")
    assert r.code == 2 and "no device 'h9999'" in r.err


def test_open_key_permissions_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    device = provisioned(capsys, tmp_path, fleet, "h0001")
    signing = device / "signing.key"
    os.chmod(signing, 0o644)
    r = picket(capsys, "provision", "verify", "--dir", device, "--fleet", fleet[0])
    assert r.code == 1
    assert "permissions 0644 are too open" in r.out and f"chmod 600 {signing}" in r.out
    with pytest.raises(ConfigError, match="too open"):
        load_config(device / "config.toml").load_key()

    os.chmod(signing, 0o600)
    os.chmod(device / "device.key", 0o640)
    checks = verify(capsys, fleet[0], "--dir", device)
    assert checks["config"] is False and checks["TLS key"] is False


def test_verify_needs_a_bundle_or_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    r = picket(capsys, "provision", "verify", "--fleet", fleet[0])
    assert r.code == 2 and "name a bundle file or --dir" in r.err
    r = picket(capsys, "provision", "verify", tmp_path / "none", "--fleet", fleet[0])
    assert r.code == 2 and f"no bundle at {tmp_path / 'none'}" in r.err
    r = picket(capsys, "provision", "list", "--fleet", tmp_path / "nofleet")
    assert r.code == 2 and "is not a fleet folder" in r.err and "provision init" in r.err


# --- the other commands ---------------------------------------------------------------------


def test_label_writes_png_and_svg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    provisioned(capsys, tmp_path, fleet, "h0001")
    out = tmp_path / "labels"
    r = picket(capsys, "provision", "label", "--fleet", fleet[0], "--id", "h0001", "--out", out)
    assert r.code == 0, r.err
    png, svg = out / "h0001.png", out / "h0001.svg"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Registry(fleet[0] / "registry.db", readonly=True) as reg:
        entry = reg.entry("h0001")
    assert entry is not None and entry.fingerprint in svg.read_text(encoding="utf-8")
    r = picket(capsys, "provision", "label", "--fleet", fleet[0], "--id", "h0404", "--out", out)
    assert r.code == 2 and "no device 'h0404'" in r.err


def test_device_provisions_both_sides_in_one_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out = tmp_path / "fleet", tmp_path / "h0042"
    r = picket(
        capsys, "provision", "device", "--fleet", folder, "--id", "h0042", "--out", out,
        "--broker", "127.0.0.1:18830",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert r.out == f"provisioned h0042: {out / 'config.toml'} (key {out / 'signing.key'})\n"
    cfg = load_config(out / "config.toml")
    assert (cfg.device, cfg.broker_port) == ("h0042", 18830)
    assert all(verify(capsys, folder, "--dir", out).values())


def test_center_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: tuple[Path, str]
) -> None:
    out = tmp_path / "center"
    r = picket(capsys, "provision", "center", "--fleet", fleet[0], "--out", out)
    assert r.code == 0, r.err
    assert {p.name for p in out.iterdir()} == {"center.crt", "center.key", "ca.crt"}
    assert stat.S_IMODE((out / "center.key").stat().st_mode) == 0o600
    assert (out / "ca.crt").read_bytes() == (fleet[0] / "ca.crt").read_bytes()
