"""The PostgreSQL the tests run against (tests/pgserver.py, simulators/pgserver.py).

What a user checks: on their machine the PostgreSQL cases run against a private server,
not against whatever answers on 127.0.0.1:5432; a server they name in PICKET_TEST_PG is the
one used; with neither, the cases skip and say what to install; and no server process or
folder is left behind, not even when the process that started it is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from simulators.pgserver import PgServer, server_user
from tests.pgserver import ENV, PgSession, session_postgres

REPO = Path(__file__).resolve().parents[1]
UNANSWERED = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


def alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for its parent to read it has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def uid_of(pid: int) -> int | None:
    """The real uid of `pid`; None when it has ended since it was listed (a server's
    short-lived helpers, such as an autovacuum worker, come and go)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for process {pid}")


def wait_until(cond: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def test_the_suite_uses_a_private_server_unless_one_is_named(pg: PgSession) -> None:
    if os.environ.get(ENV):
        pytest.skip(f"{ENV} names the server: the private one is not started")
    assert pg.server is not None and pg.server.folder is not None
    with psycopg.connect(pg.url) as con:
        [(data,)] = con.execute("SHOW data_directory").fetchall()
        [(port,)] = con.execute("SELECT inet_server_port()").fetchall()
        [(fsync,)] = con.execute("SHOW fsync").fetchall()
    # the server the cases talk to is the one in the session's own folder, whatever runs
    # on 127.0.0.1:5432 (on a machine with a system server too, this is where they differ)
    assert Path(data) == pg.server.data and pg.server.data.is_relative_to(pg.server.folder)
    assert port == pg.server.port != 5432
    assert fsync == "off"  # durability off for a throw-away cluster (docs/testing.md)


def test_a_named_server_wins_and_nothing_is_started(pg: PgSession) -> None:
    with session_postgres({ENV: pg.url}) as named:
        assert named == PgSession(pg.url, None)
    refused = pytest.raises(pytest.skip.Exception, match=r"PICKET_TEST_PG=.*127\.0\.0\.1:1/")
    with refused, session_postgres({ENV: UNANSWERED}):
        pass


def test_without_server_binaries_the_cases_skip_and_say_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "lib-postgresql"
    (empty / "15" / "bin").mkdir(parents=True)  # a version folder without its binaries
    says = pytest.raises(pytest.skip.Exception, match=r"apt-get install postgresql.*PICKET_TEST")
    with says, session_postgres({}, search=[empty]):
        pass


def test_a_private_server_runs_unprivileged_and_leaves_nothing_behind() -> None:
    server = PgServer()
    try:
        server.start()
        assert server.pid is not None and server.folder is not None
        pid, folder, url = server.pid, server.folder, server.url
        with psycopg.connect(url) as con:
            assert con.execute("SELECT 1 + 1").fetchall() == [(2,)]
        processes = [pid, *children(pid)]
        assert len(processes) > 1  # the postmaster and its helpers: what must all go
        if os.geteuid() == 0:  # initdb and postgres refuse root
            user = server_user()
            assert user is not None
            uids = {uid_of(p) for p in processes} - {None}  # the postmaster never ends here
            assert uids == {user.pw_uid} != {0}
        assert folder.exists()
    finally:
        server.stop()
    wait_until(lambda: not any(alive(p) for p in processes), 10, "every server process to end")
    assert not folder.exists()
    assert not answers(url)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_a_private_server_does_not_outlive_its_killed_owner(tmp_path: Path) -> None:
    said = tmp_path / "server"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from simulators.pgserver import PgServer\n"
        "s = PgServer()\n"
        "s.start()\n"
        "Path(sys.argv[1] + '.tmp').write_text(f'{s.pid} {s.folder} {s.url}')\n"
        "Path(sys.argv[1] + '.tmp').rename(sys.argv[1])\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", code, str(said)], cwd=REPO)
    pid = 0
    folder = None
    try:
        wait_until(lambda: said.exists() or owner.poll() is not None, 60, "the owner's server")
        pid_text, folder_text, url = said.read_text().split()
        pid, folder = int(pid_text), Path(folder_text)
        assert answers(url) and alive(pid)
        owner.send_signal(signal.SIGKILL)  # no teardown runs in the owner
        owner.wait(timeout=10)
        wait_until(lambda: not alive(pid), 20, "the orphaned server to shut itself down")
        assert not answers(url)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
