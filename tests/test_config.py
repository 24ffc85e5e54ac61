"""The device config file: good files decode, every bad one is refused naming the key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agent.config import DEFAULT_GNSS, ConfigError, load_config

GOOD = """
device = "h0001"
key = "device.key"

[broker]
host = "127.0.0.1"
port = 1883
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.device == "h0001"
    assert cfg.key_path == tmp_path / "device.key"
    assert cfg.outbox_path == tmp_path / "outbox.db"
    assert cfg.plan_path is None
    assert cfg.gnss_source == DEFAULT_GNSS
    assert cfg.not_before == dt.date(2026, 1, 1)


def test_gnss_and_plan_sections(tmp_path: Path) -> None:
    text = GOOD.replace('key = "device.key"', 'key = "device.key"\nplan = "p.geojson"')
    text += '\n[gnss]\nsource = "serial:///dev/ttyAMA0?baud=115200"\nnot_before = 2025-06-01\n'
    cfg = load_config(write(tmp_path, text))
    assert cfg.plan_path == tmp_path / "p.geojson"
    assert cfg.gnss_source == "serial:///dev/ttyAMA0?baud=115200"
    assert cfg.not_before == dt.date(2025, 6, 1)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda t: t.replace('device = "h0001"', ""), "missing key 'device'"),
        (lambda t: t.replace('"h0001"', '"h 0001"'), "not a valid device id"),
        (lambda t: t.replace('"h0001"', '"h0001\\n"'), "not a valid device id"),
        (lambda t: t.replace("port = 1883", "port = 70000"), "'port' 70000 is out of range"),
        (lambda t: t.replace("port = 1883", 'port = "1883"'), "'port' must be int"),
        (lambda t: t.replace("port = 1883", "port = true"), "'port' must be int"),
        (lambda t: t + "\nsurprise = 1\n", "unknown key(s) 'surprise'"),
        (lambda t: t + "\n[gnss]\nsorce = 'x'\n", "unknown key(s) 'sorce'"),
        (lambda t: t + "\n[gnss]\nnot_before = 'soon'\n", "'not_before' must be a date"),
        (lambda t: t + "\n[gnss]\nsource = 5\n", "'source' must be a URL"),
        (lambda t: t.replace("[broker]", "[brokr]"), "unknown key(s) 'brokr'"),
        (lambda t: t + "\n[[", "not valid TOML"),
    ],
)
def test_bad_configs_are_refused_with_the_key_named(
    tmp_path: Path, change: object, needle: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, change(GOOD)))  # type: ignore[operator]
    assert needle in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_signing_key_with_open_permissions_is_refused(tmp_path: Path) -> None:
    from provisioning.device import provision_device

    files = provision_device(
        tmp_path / "fleet", "h0001", tmp_path / "dev", broker_host="127.0.0.1", broker_port=1883,
        now_ms=0,
    )  # fmt: skip
    cfg = load_config(files.config)
    assert cfg.load_key() is not None  # 0600 as provisioned
    files.key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"permissions 0644 are too open.*chmod 600"):
        cfg.load_key()
    files.key.chmod(0o600)
    files.key.write_text("not a key")
    with pytest.raises(ConfigError, match="signing key"):
        cfg.load_key()
