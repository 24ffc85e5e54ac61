"""Hostile and broken input to the commands that read plans, configs and GNSS sources (issue
15): each is refused with exit code 2 and one `picket: error:` sentence naming the problem,
never a traceback, and nothing is read without bound. Every case runs the real command in a
subprocess, as a technician would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.device import provision_device

SURROGATE_PLAN = (
    '{"type": "FeatureCollection", "features": [{"type": "Feature", '
    '"geometry": {"type": "Point", "coordinates": [106.25, 29.26]}, '
    '"properties": {"id": "P\\ud800"}}]}'
)
HUGE_INT_PLAN = (
    '{"type": "FeatureCollection", "features": [{"type": "Feature", '
    '"geometry": {"type": "Point", "coordinates": [106.25, 29.26]}, '
    '"properties": {"id": "P1", "radius_m": ' + "9" * 5000 + "}}]}"
)
GOOD_PLAN = json.dumps({"type": "FeatureCollection", "features": []})


def picket(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picket", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        check=False,
    )


def refused(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, no traceback, and a message on stderr holding every needle."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A provisioned device folder (signing key, TLS files, config with TLS)."""
    root = tmp_path_factory.mktemp("fleet")
    files = provision_device(
        root / "fleet", "h0001", root / "dev", broker_host="127.0.0.1", broker_port=8883,
        now_ms=0,
    )  # fmt: skip
    return files.directory


@pytest.fixture
def device(provisioned: Path, tmp_path: Path) -> Path:
    """A copy of the device folder for one test to break."""
    return Path(shutil.copytree(provisioned, tmp_path / "dev"))


def edit(device: Path, old: str, new: str) -> Path:
    config = device / "config.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    return config


# --- plans: one loader for plan check, checkin detect, agent run, provision approve -------


@pytest.mark.parametrize(
    ("plan", "needles"),
    [
        (SURROGATE_PLAN, ("lone surrogate U+D800", "feature 0")),
        (HUGE_INT_PLAN, ("more than 4300 digits",)),
    ],
    ids=["lone-surrogate-id", "5000-digit-number"],
)
def test_a_hostile_plan_is_refused_by_every_command_that_reads_it(
    plan: str, needles: tuple[str, ...], provisioned: Path, device: Path, tmp_path: Path
) -> None:
    path = tmp_path / "plan.geojson"
    path.write_text(plan)
    r = picket("plan", "check", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert all(n in r.stdout for n in needles), r.stdout
    nmea = tmp_path / "track.nmea"
    nmea.write_text("")
    refused(picket("checkin", "detect", "--plan", str(path), "--nmea", str(nmea)), *needles)
    config = edit(device, 'key = "signing.key"', f'key = "signing.key"\nplan = "{path}"')
    refused(picket("agent", "run", "--config", str(config)), *needles)
    fleet = provisioned.parent / "fleet"  # refused before the fleet is opened
    out = tmp_path / "bundle.cbor"
    r = picket("provision", "approve", str(device / "request.cbor"), "--fleet", str(fleet),
               "--id", "h0002", "--plan", str(path), "--out", str(out))  # fmt: skip
    refused(r, *needles)
    assert not out.exists()


# --- agent run --config: what the config names is checked before anything starts ----------

AGENT_CASES = [
    ('host = "127.0.0.1"', 'host = ""', "'host' '' is empty"),
    ('host = "127.0.0.1"', 'host = "\\u0000"', "holds a space or a control character"),
    ('host = "127.0.0.1"', 'host = "bro ker"', "holds a space or a control character"),
    ('ca = "ca.crt"', 'ca = "."', "is a folder, not a file"),
    ('ca = "ca.crt"', 'ca = "/dev/zero"', "is a device or a pipe, not a file"),
    ('ca = "ca.crt"', 'ca = "missing.crt"', "No such file"),
    ('ca = "ca.crt"', 'ca = "center.pub"', "holds no PEM certificate"),
    ('cert = "device.crt"', 'cert = "signing.key"', "'cert'"),
    ('cert = "device.crt"', 'cert = "ca.crt"', "is not the key of 'cert'"),
    ('cert_key = "device.key"', 'cert_key = "device.crt"', "not an unencrypted PEM private key"),
    ('cert_key = "device.key"', 'cert_key = "/dev/zero"', "is a device or a pipe"),
    ('outbox = "outbox.db"', 'outbox = "."', "is a folder; it must be a file"),
    ('outbox = "outbox.db"', 'outbox = "nowhere/outbox.db"', "nowhere does not exist"),
    ('outbox = "outbox.db"', 'outbox = "/dev/zero"', "is a device or a pipe"),
    ('outbox = "outbox.db"', 'outbox = ""', "'outbox' is empty"),
    ('outbox = "outbox.db"', 'outbox = "a\\u0000b"', "holds a NUL byte"),
    ("[broker]", '[gnss]\nsource = "gpsd://[::1"\n[broker]', "not a valid URL"),
    ("[broker]", '[gnss]\nsource = "file://%00"\n[broker]', "control character"),
    ("[broker]", '[gnss]\nsource = "file:///nonexistent"\n[broker]', "No such file"),
    ("[broker]", '[gnss]\nsource = "tcp://:5000"\n[broker]', "missing host"),
]


@pytest.mark.parametrize(("old", "new", "needle"), AGENT_CASES, ids=[c[1] for c in AGENT_CASES])
def test_agent_run_refuses_a_config_naming_something_unusable(
    device: Path, old: str, new: str, needle: str
) -> None:
    r = picket("agent", "run", "--config", str(edit(device, old, new)))
    refused(r, "picket: error:", needle)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one sentence, no log noise
    assert not (device / "outbox.db").exists()  # refused before anything was made


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_agent_run_refuses_an_unreadable_ca(device: Path) -> None:
    (device / "ca.crt").chmod(0)
    r = picket("agent", "run", "--config", str(device / "config.toml"))
    refused(r, "ca.crt cannot be read", "Permission denied")


# --- gps watch, gps replay, checkin detect ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["gps", "watch", "gpsd://[::1"], "not a valid URL"),
        (["gps", "watch", "file://%00"], "the path holds a control character"),
        (["gps", "watch", "file:///nonexistent"], "/nonexistent: No such file"),
        (["gps", "watch", "/"], "is a folder, not an NMEA log"),
        (["gps", "watch", "tcp://exa_mple..:1"], "is not a host name"),
        (["gps", "watch", "file:///dev/zero", "--seconds", "-5"], "must be a number of seconds"),
        (["gps", "watch", "file:///dev/zero", "--seconds", "nan"], "must be a number of seconds"),
        (["gps", "watch", "file:///dev/zero", "--seconds", "0"], "must be a number of seconds"),
        (["gps", "replay", "/dev/zero"], "line 1 runs past 4096 bytes without a line end"),
        (["gps", "replay", "/"], "cannot read /: Is a directory"),
    ],
)
def test_gps_commands_refuse_unusable_sources(args: list[str], needle: str) -> None:
    refused(picket(*args), needle)


def test_checkin_detect_refuses_a_track_that_is_not_a_log(tmp_path: Path) -> None:
    plan = tmp_path / "plan.geojson"
    plan.write_text(GOOD_PLAN)
    r = picket("checkin", "detect", "--plan", str(plan), "--nmea", "/dev/zero")
    refused(r, "/dev/zero: line 1 runs past 4096 bytes")
    log = tmp_path / "long.nmea"
    log.write_bytes(b"$GPGGA,1\n" * 3 + b"x" * 5000 + b"\n")
    r = picket("checkin", "detect", "--plan", str(plan), "--nmea", str(log))
    refused(r, "long.nmea: line 4 runs past 4096 bytes")
