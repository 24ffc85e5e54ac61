"""The `picket` command as a user runs it: a real subprocess, exit codes and messages."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from provisioning.registry import Registry


def picket(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picket", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["demo", "--devices", "0"], "--devices: 0 must be at least 1"),
        (["demo", "--devices", "many"], "'many' is not a whole number"),
        (["demo", "--minutes", "-5"], "must be a number above 0"),
        (["demo", "--minutes", "nan"], "must be a number above 0"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["center", "run", "--db", "x.db"], "--registry"),
        (
            ["center", "run", "--db", "x", "--registry", "r", "--broker", "nohost"],
            "is not HOST:PORT",
        ),
        (["provision", "device", "--fleet", "f", "--id", "a b", "--out", "o"], "device id 'a b'"),
        ([], "COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    result = picket(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_center_refuses_a_missing_registry(tmp_path: Path) -> None:
    result = picket(
        "center", "run", "--db", str(tmp_path / "c.db"), "--registry", str(tmp_path / "none.db")
    )
    assert result.returncode == 2
    assert "none.db does not exist" in result.stderr


def test_provision_device_writes_a_private_key_config_and_registry_entry(tmp_path: Path) -> None:
    result = picket(
        "provision", "device", "--fleet", str(tmp_path / "fleet"), "--id", "h0042",
        "--out", str(tmp_path / "h0042"), "--broker", "127.0.0.1:18830",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    device = tmp_path / "h0042"
    signing = device / "signing.key"  # records; device.key is the TLS key (device.crt's)
    assert result.stdout.startswith(f"provisioned h0042: {device / 'config.toml'} (key {signing})")
    for key in (signing, device / "device.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    cfg = load_config(device / "config.toml")
    assert (cfg.device, cfg.broker_host, cfg.broker_port) == ("h0042", "127.0.0.1", 18830)
    assert cfg.key_path == signing
    assert cfg.tls is not None and cfg.tls.key_path == device / "device.key"
    reg = Registry(tmp_path / "fleet" / "registry.db", readonly=True)
    public = reg.public_key("h0042")
    reg.close()
    assert public is not None
    assert public.public_bytes_raw() == cfg.load_key().public_key().public_bytes_raw()


def test_demo_json_is_the_last_line_and_reports_a_clean_run(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    result = picket(
        "demo",
        "--devices",
        "3",
        "--minutes",
        "15",
        "--seed",
        "3",
        "--workdir",
        str(workdir),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "devices", "checkins_expected", "checkins_recorded", "records_delivered",
        "records_verified", "records_lost", "records_duplicated", "wall_seconds",
    ):  # fmt: skip
        assert key in report
    assert report["devices"] == 3
    assert report["checkins_recorded"] == report["checkins_expected"] > 0
    assert report["records_lost"] == report["records_duplicated"] == 0
    assert report["records_verified"] == report["records_delivered"]
    assert (workdir / "center.db").is_file()
    again = picket("demo", "--devices", "1", "--minutes", "1", "--workdir", str(workdir))
    assert again.returncode == 2
    assert "already holds a run (center.db)" in again.stderr
