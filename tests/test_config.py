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


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda t: t.replace('"127.0.0.1"', '""'), "'host' '' is empty"),
        (lambda t: t.replace('"127.0.0.1"', '"\\u0000"'), "holds a space or a control character"),
        (lambda t: t.replace('"127.0.0.1"', '"[::1]"'), "give it without them"),
        (lambda t: t.replace('"127.0.0.1"', '"-x-"'), "is not a host name or an IP address"),
        (lambda t: 'outbox = "."\n' + t, "is a folder; it must be a file"),
        (lambda t: 'outbox = ""\n' + t, "'outbox' is empty"),
        (lambda t: 'outbox = "no/such/outbox.db"\n' + t, "does not exist (create it)"),
        (lambda t: 'outbox = "/dev/zero"\n' + t, "is a device or a pipe"),
        (lambda t: 'plan = "a\\u0000b"\n' + t, "'plan' 'a\\x00b' holds a NUL byte"),
        (lambda t: 'team = "T\\u0000"\n' + t, "'team' 'T\\x00' must be 1 to 32 bytes"),
        (lambda t: 'team = ""\n' + t, "must be 1 to 32 bytes of printable text"),
        (lambda t: t + '\n[gnss]\nsource = "gpsd://[::1"\n', "[gnss]: 'source': GNSS source"),
        (lambda t: t + '\n[gnss]\nsource = "file:///nonexistent"\n', "No such file"),
        (lambda t: t + '\n[gnss]\nsource = "file://%00"\n', "control character"),
        (lambda t: t.replace("port = 1883", 'port = 1883\nca = "."'), "is a folder, not a file"),
        (lambda t: t.replace("port = 1883", 'port = 1883\nca = "nope.crt"'), "No such file"),
    ],
)
def test_what_a_config_names_is_checked_when_it_loads(
    tmp_path: Path, change: object, needle: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, change(GOOD)))  # type: ignore[operator]
    assert needle in str(err.value)


def test_tls_files_must_be_pem_of_the_right_kind_and_a_pair(tmp_path: Path) -> None:
    from provisioning.device import provision_device

    files = provision_device(
        tmp_path / "fleet", "h0001", tmp_path / "dev", broker_host="127.0.0.1", broker_port=1883,
        now_ms=0,
    )  # fmt: skip
    good = files.config.read_text()
    assert load_config(files.config).tls is not None

    def refused(old: str, new: str) -> str:
        files.config.write_text(good.replace(old, new))
        with pytest.raises(ConfigError) as err:
            load_config(files.config)
        return str(err.value)

    assert "'ca'" in refused('ca = "ca.crt"', 'ca = "signing.key"')
    assert "holds no PEM certificate" in refused('ca = "ca.crt"', 'ca = "center.pub"')
    assert "is not the key of 'cert'" in refused('cert = "device.crt"', 'cert = "ca.crt"')
    assert "not an unencrypted PEM private key" in refused(
        'cert_key = "device.key"', 'cert_key = "device.crt"'
    )
    (files.directory / "big.crt").write_bytes(b"x" * (1024 * 1024 + 1))
    assert "too large" in refused('ca = "ca.crt"', 'ca = "big.crt"')
