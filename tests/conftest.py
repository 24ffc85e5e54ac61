"""Shared fixtures: real peers only (a private Mosquitto per test on a free port, a private
PostgreSQL per session unless PICKET_TEST_PG names one: tests/pgserver.py)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.broker import Mosquitto
from tests.peers import TlsFleet, tls_fleet_in
from tests.pgserver import PgSession, session_postgres

REPO = Path(__file__).resolve().parents[1]
# A verbatim copy of ../shared/corpus (see tests/corpus/SOURCES.md), so a clean clone has it.
CORPUS = REPO / "tests" / "corpus"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def tls_fleet(tmp_path: Path) -> Iterator[TlsFleet]:
    """A fleet with its own TLS broker (client certificates, ACL, CRL): the real path."""
    with tls_fleet_in(tmp_path) as f:
        yield f


@pytest.fixture(scope="session")
def pg() -> Iterator[PgSession]:
    """The session's PostgreSQL (tests/pgserver.py): started at the first test that asks,
    stopped and removed after the last; skips every asker when there is none."""
    with session_postgres() as session:
        yield session


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> object:
    """Fail a test that leaves asyncio tasks running behind it (as pymodbus does)."""
    yield None
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left running: {[t.get_name() for t in left]}"


@pytest.fixture(autouse=True)
def _machine_left_whole(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test after which /dev/null is no longer the null device: the tests run as root
    in CI, and a write that replaces its target atomically must never replace a device."""
    yield
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode), (
        f"{request.node.nodeid} replaced /dev/null with a regular file"
    )
