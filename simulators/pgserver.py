"""A private PostgreSQL server in a temporary folder, on a free loopback port.

Tests and benchmarks never touch a user's database: unless they are given a server's URL,
they start their own, as they start their own Mosquitto (simulators/broker.py), and throw
it away after. `initdb` makes a cluster in a fresh folder (trust authentication, superuser
`postgres`, locale C); `postgres` runs it on 127.0.0.1 and a free port, with its unix socket
in that folder, so it neither meets a system server on 5432 nor needs /var/run/postgresql.

Debian installs the server binaries off PATH, in /usr/lib/postgresql/<major>/bin: the
newest there is taken, else `postgres` and `initdb` found together on PATH. Both refuse to
run as root, so as root they run as the `postgres` account Debian's package makes (or
`nobody`), and the folder is made theirs.

Unless `durable=True`, durability is off (fsync, synchronous_commit, full_page_writes):
the cluster is thrown away after, so nothing is lost that a crash could lose, and commits
do not wait for the disk. A benchmark that compares commits asks for `durable=True`.

The server is stopped (fast shutdown, then kill) and its folder removed on `stop()`, on
leaving the `with` block, whatever happened in it. Should the process that started it die
without stopping it (kill -9), the server is told by the kernel (`setpriv --pdeathsig`,
util-linux, when present) and shuts down too: no server outlives its owner.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from simulators.broker import free_port
from simulators.simerror import SimulatorError

__all__ = ["PgMissing", "PgServer", "PgServerError", "find_bindir", "server_user"]

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
INSTALL_HINT = "install Debian's postgresql package (sudo apt-get install postgresql)"
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
PORT_ATTEMPTS = 3


class PgServerError(SimulatorError):
    """The private server could not be made, started or stopped."""


class PgMissing(PgServerError):
    """No PostgreSQL server binaries here: callers that can go without one skip."""


def _major(bindir: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_bindir(search: Iterable[Path] | None = None) -> Path:
    """The folder holding `initdb` and `postgres`: the newest under /usr/lib/postgresql
    (or under each of `search`), else the one on PATH."""
    roots = [DEBIAN_ROOT] if search is None else list(search)
    found = [
        b
        for root in roots
        for b in root.glob("*/bin")
        if os.access(b / "initdb", os.X_OK) and os.access(b / "postgres", os.X_OK)
    ]
    if found:
        return max(found, key=_major)
    on_path = shutil.which("postgres") if search is None else None
    if on_path is not None and os.access(Path(on_path).parent / "initdb", os.X_OK):
        return Path(on_path).parent
    where = ", ".join(str(r) for r in roots)
    raise PgMissing(f"no PostgreSQL server binaries (initdb, postgres) in {where}: {INSTALL_HINT}")


def server_user() -> pwd.struct_passwd | None:
    """Whom initdb and postgres run as: None (ourselves) unless we are root, then the
    `postgres` account, or `nobody` where there is none."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PgServerError("running as root, and neither a postgres nor a nobody account exists")


@dataclass(frozen=True, slots=True)
class _Run:
    """How to run a server binary: as whom, and what to put in front of it."""

    user: pwd.struct_passwd | None
    prefix: tuple[str, ...]

    @property
    def uid(self) -> int | None:
        return None if self.user is None else self.user.pw_uid

    @property
    def gid(self) -> int | None:
        return None if self.user is None else self.user.pw_gid

    @property
    def groups(self) -> list[int] | None:
        return None if self.user is None else []  # root's own groups are not passed on


class PgServer:
    """One throw-away cluster and its server. `url` is the superuser's, database `postgres`."""

    def __init__(
        self, parent: Path | None = None, *, bindir: Path | None = None, durable: bool = False
    ) -> None:
        self.parent = parent  # where the temporary folder goes (the system's temp by default)
        self.bindir = bindir or find_bindir()
        self.durable = durable
        self.host = "127.0.0.1"
        self.port = 0
        self.folder: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        user = server_user()
        setpriv = shutil.which("setpriv")
        # SIGINT is PostgreSQL's fast shutdown: sessions are ended, not waited for
        prefix = (setpriv, "--pdeathsig=INT", "--") if setpriv else ()
        self._run = _Run(user, prefix)

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id (None when stopped)."""
        return None if self._proc is None else self._proc.pid

    @property
    def data(self) -> Path:
        if self.folder is None:
            raise PgServerError("the server has not been started")
        return self.folder / "data"

    def start(self, timeout_s: float = 60.0) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="picket-pg-", dir=self.parent))
        try:
            if self._run.user is not None:
                os.chown(self.folder, self._run.user.pw_uid, self._run.user.pw_gid)
            self._initdb(timeout_s)
            for attempt in range(PORT_ATTEMPTS):
                self.port = free_port()
                if self._serve(timeout_s) or attempt == PORT_ATTEMPTS - 1:
                    break
            if self._proc is None:
                raise PgServerError(f"postgres did not start:\n{self._log()}")
        except BaseException:
            self.stop()
            raise

    def _initdb(self, timeout_s: float) -> None:
        argv = [
            *[str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER],
            *["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        ]
        done = subprocess.run(
            argv,
            cwd=self.folder,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            user=self._run.uid,
            group=self._run.gid,
            extra_groups=self._run.groups,
        )
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace").strip()
            if self._run.user is not None and "Permission denied" in out:
                out += (
                    f"\n(every folder above {self.folder} must be open to {self._run.user.pw_name})"
                )
            raise PgServerError(f"initdb failed (code {done.returncode}):\n{out}")

    def _serve(self, timeout_s: float) -> bool:
        """Start postgres on self.port and wait until it takes connections: True when it
        does, False when the port was taken meanwhile (the caller tries another)."""
        assert self.folder is not None
        settings = [
            f"listen_addresses={self.host}",
            f"unix_socket_directories={self.folder}",
            *(() if self.durable else FAST),
        ]
        argv = [*self._run.prefix, str(self.bindir / "postgres"), "-D", str(self.data)]
        argv += ["-p", str(self.port)] + [a for s in settings for a in ("-c", s)]
        with open(self.folder / "server.log", "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C at the terminal is for us, not for it
                user=self._run.uid,
                group=self._run.gid,
                extra_groups=self._run.groups,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                self._proc = None
                if "already in use" in self._log():
                    return False
                raise PgServerError(f"postgres exited at start:\n{self._log()}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise PgServerError(f"postgres took no connection in {timeout_s} s:\n{self._log()}")

    def _log(self) -> str:
        if self.folder is None:
            return ""
        try:
            return (self.folder / "server.log").read_text(errors="replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown, then kill) and remove its folder."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        folder, self.folder = self.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
