"""The `[events]` section of config.toml (agent/events/settings.py through agent/config.py).

What a technician checks: a config without the section gets the documented defaults, one
with it gets its values (a relative `file:` folder taken from the config's folder, as every
path), and every wrong key or value is refused naming the section, the key and the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.events.cameraurl import CameraKind, CameraSpec
from agent.events.settings import EventsConfig

GOOD = """
device = "h0001"
key = "device.key"

[broker]
host = "127.0.0.1"
port = 1883
"""


def load_config_events(tmp_path: Path, section: str) -> EventsConfig:
    path = tmp_path / "config.toml"
    path.write_text(GOOD + section, encoding="utf-8")
    return load_config(path).events


def test_without_the_section_the_documented_defaults_hold(tmp_path: Path) -> None:
    events = load_config_events(tmp_path, "")
    assert events.camera is None
    assert (events.photo_max_side, events.photo_quality) == (1600, 80)
    assert (events.max_input_bytes, events.quota_bytes, events.chunk_bytes) == (
        20_000_000,
        200_000_000,
        32 * 1024,
    )


def test_the_section_is_read(tmp_path: Path) -> None:
    events = load_config_events(
        tmp_path,
        '\n[events]\ncamera = "file:dcim"\nphoto_max_side = 1024\nphoto_quality = 70\n'
        "photo_max_input_mb = 12.5\nattachment_quota_mb = 50\nchunk_kib = 16\n",
    )
    assert events.camera == CameraSpec(CameraKind.FILE, path=str(tmp_path / "dcim"))
    assert (events.photo_max_side, events.photo_quality) == (1024, 70)
    assert (events.max_input_bytes, events.quota_bytes, events.chunk_bytes) == (
        12_500_000,
        50_000_000,
        16 * 1024,
    )
    usb = load_config_events(tmp_path, '\n[events]\ncamera = "v4l2:/dev/video2"\n')
    assert usb.camera == CameraSpec(CameraKind.V4L2, path="/dev/video2")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[events]\ncamra = 'libcamera:'", r"\[events\]: unknown key\(s\) 'camra'"),
        ("[events]\ncamera = 3", r"\[events\]: 'camera' must be a URL"),
        ("[events]\ncamera = 'webcam:'", r"\[events\]: 'camera': camera 'webcam:': unknown kind"),
        ("[events]\nphoto_max_side = 20000", r"'photo_max_side' 20000 is out of range \(64-8000\)"),
        ("[events]\nphoto_max_side = 1600.5", r"'photo_max_side' must be a whole number"),
        ("[events]\nphoto_quality = 100", r"'photo_quality' 100 is out of range \(30-95\)"),
        ("[events]\nchunk_kib = 65", r"'chunk_kib' 65 is out of range \(1-64\)"),
        ("[events]\nattachment_quota_mb = true", r"'attachment_quota_mb' must be a number"),
        ("[events]\nphoto_max_input_mb = 0", r"'photo_max_input_mb' 0 is out of range"),
        ("events = 3", r": \[events\] must be a table"),
    ],
)
def test_a_wrong_events_section_is_refused_naming_the_key(
    tmp_path: Path, section: str, message: str
) -> None:
    text = GOOD.replace("[broker]", section + "\n\n[broker]")
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
