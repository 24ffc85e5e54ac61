"""`picket center run --api`: the center's service and its Open311 API in one process."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import urllib.request
from pathlib import Path

from peers import DEADLINE_S

from provisioning.registry import Registry
from simulators.broker import Mosquitto

REPO = Path(__file__).resolve().parents[1]
KEY = "desk-0123456789abcdef"


def center_argv(tmp_path: Path, broker: Mosquitto, *extra: str) -> list[str]:
    registry = tmp_path / "registry.db"
    Registry(registry).close()
    return [
        *("-m", "picket", "center", "run", "--db", str(tmp_path / "center.db")),
        *("--registry", str(registry), "--broker", f"{broker.host}:{broker.port}"),
        *extra,
    ]


async def test_the_api_answers_beside_the_service_and_both_stop_on_one_signal(
    tmp_path: Path, broker: Mosquitto
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"desk {KEY}\n", encoding="utf-8")
    argv = center_argv(tmp_path, broker, "--api", "127.0.0.1:0", "--api-keys", str(keys))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=(tmp_path / "center.log").open("ab"),
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        while not (any(x == "ready" for x in lines) and any("listening" in x for x in lines)):
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=DEADLINE_S)
            assert line, f"the center ended early: {lines}"
            lines.append(line.decode().strip())
        url = next(x for x in lines if "listening" in x).split()[-1]
        assert url.startswith("http://127.0.0.1:")
        services = await asyncio.to_thread(
            lambda: json.load(urllib.request.urlopen(f"{url}/services.json", timeout=10))  # noqa: S310
        )
        assert {s["service_code"] for s in services} >= {"1"}  # the default catalogue
        assert all(s["service_name"] for s in services)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=DEADLINE_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert "stored" in json.loads(out.decode().splitlines()[-1])  # the service's own report


async def test_api_without_its_keys_is_refused_before_anything_starts(
    tmp_path: Path, broker: Mosquitto
) -> None:
    argv = center_argv(tmp_path, broker, "--api", "127.0.0.1:0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), timeout=DEADLINE_S)
    assert proc.returncode == 2
    assert "--api-keys" in err.decode() and "Traceback" not in err.decode()
