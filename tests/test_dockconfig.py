from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.dock.settings import parse_dock_section, read_wind

GOOD: dict[str, object] = {
    "mavlink": "udp://127.0.0.1:14550",
    "drone_address": "127.0.0.1:14555",
    "drone": "D01",
    "home": [52.52, 13.405, 35.0],
    "plan": "aerial.geojson",
}


def test_a_dock_section_is_read_with_its_defaults_and_a_wind_file(tmp_path: Path) -> None:
    assert parse_dock_section(None, tmp_path, "c") is None
    s = parse_dock_section({**GOOD, "wind": "wind.txt"}, tmp_path, "c")
    assert s is not None and s.drone_address == ("127.0.0.1", 14555)
    assert s.plan_path == tmp_path / "aerial.geojson" and s.reserve_pct == 20.0
    assert read_wind(s) is None
    (tmp_path / "wind.txt").write_text("7.5\n")
    assert read_wind(s) == 7.5
    # a sensor that stopped writing: after wind_max_age_s (300 s) its last figure is no reading
    mtime = (tmp_path / "wind.txt").stat().st_mtime
    assert read_wind(s, now_s=mtime + 299) == 7.5
    assert read_wind(s, now_s=mtime + 301) is None
    fixed = parse_dock_section({**GOOD, "wind": 3}, tmp_path, "c")
    assert fixed is not None and read_wind(fixed) == 3.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drone_address": "nowhere"}, "drone_address"),
        ({"home": [1, 2]}, "home"),
        ({"mavlink": "ftp://x"}, "mavlink"),
        ({"reserve_pct": 100}, "reserve_pct"),
        ({"wind_max_age_s": 0}, "wind_max_age_s"),
        ({"typo": 1}, "unknown"),
    ],
)
def test_a_bad_dock_section_is_refused_naming_the_key(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_dock_section({**GOOD, **change}, tmp_path, "c")


DEVICE = """
device = "d01"
key = "signing.key"
center_key = "center.pub"

[broker]
host = "127.0.0.1"
port = 8883

[dock]
mavlink = "udp://0.0.0.0:14550"
drone_address = "192.168.4.2:14555"
drone = "u01"
home = [29.284, 106.2375, 321.0]
"""


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_dock_config_runs_its_aerial_plan_and_reads_gnss_only_when_asked(
    tmp_path: Path,
) -> None:
    cfg = load_config(config_file(tmp_path, DEVICE + 'plan = "aerial.geojson"\n'))
    assert cfg.dock is not None and cfg.dock.drone == "u01"
    assert cfg.plan_path == tmp_path / "aerial.geojson"  # the dock's plan is the agent's
    assert not cfg.gnss_given
    top = DEVICE.replace('center_key = "center.pub"', 'center_key = "center.pub"\nplan = "a.json"')
    cfg = load_config(config_file(tmp_path, top + '\n[gnss]\nsource = "gpsd://127.0.0.1:2947"\n'))
    assert cfg.plan_path == tmp_path / "a.json" and cfg.gnss_given


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DEVICE.replace('center_key = "center.pub"\n', "") + 'plan = "a.json"\n', "center_key"),
        (DEVICE, "no aerial plan"),
        (
            DEVICE.replace('center_key = "center.pub"', 'center_key = "c.pub"\nplan = "a.json"')
            + 'plan = "b.json"\n',
            "given twice",
        ),
    ],
    ids=["no-center-key", "no-plan", "two-plans"],
)
def test_a_dock_config_that_cannot_fly_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(config_file(tmp_path, text))
