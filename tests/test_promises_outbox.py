"""The outbox's durability promise: `synchronous=FULL`, read live, and a power cut modelled.

kill -9 cannot tell synchronous=FULL from OFF: the page cache outlives the process. Two
tests can. The first reads the setting on every connection the outbox opens for writing
(new, reopened, begun again after damage, and inside the running daemon). The second
models a power cut: a real writer process runs under strace, and the trace is replayed
into a model disk that keeps of each file only what it held at its last fsync or
fdatasync, and of each folder only the names it held at its last fsync; every moment of
the trace becomes a disk image that a power cut there would leave behind. Each image must
open cleanly with every record whose `append` had returned, and must never hand out a
number already confirmed. The same model finds the loss when the writer runs with
synchronous=NORMAL or OFF (the control), so it can tell (docs/testing.md, "Faults").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peers import signed, wait_for

from agent.config import load_config
from agent.daemon import AgentRun
from agent.store.outbox import Outbox
from contract.records import RecordType
from simulators.broker import Mosquitto

REPO = Path(__file__).resolve().parents[1]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(40, 72)))
DEVICE = "h0001"
T0 = 1_772_323_200_000
FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


# --- the live setting -------------------------------------------------------------------------


@dataclass
class Opened:
    """Every SQLite connection opened in this process while the spy is on."""

    connections: list[tuple[str, sqlite3.Connection]] = field(default_factory=list)

    def writable_on(self, path: Path) -> list[sqlite3.Connection]:
        """The live (not closed) connections to `path` that may write (no mode=ro, no
        immutable=1)."""
        out = []
        for target, con in self.connections:
            name = target.removeprefix("file://").split("?")[0]
            if Path(name).resolve() != path.resolve() or re.search(r"mode=ro|immutable=1", target):
                continue
            try:
                con.execute("SELECT 1")
            except sqlite3.ProgrammingError:  # closed
                continue
            out.append(con)
        return out


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Opened:
    """Record every `sqlite3.connect` (the real one runs; the spy only keeps the result)."""
    seen = Opened()
    real = sqlite3.connect

    def spy(database: object, *args: object, **kwargs: object) -> sqlite3.Connection:
        con = real(database, *args, **kwargs)  # type: ignore[arg-type]
        seen.connections.append((str(database), con))
        return con

    monkeypatch.setattr(sqlite3, "connect", spy)
    return seen


def settings(con: sqlite3.Connection) -> tuple[int, str]:
    return con.execute("PRAGMA synchronous").fetchone()[0], con.execute(
        "PRAGMA journal_mode"
    ).fetchone()[0]


def assert_full(opened: Opened, path: Path) -> None:
    live = opened.writable_on(path)
    assert live, f"no connection to {path} is open: nothing was checked"
    assert [settings(c) for c in live] == [(FULL, "wal")] * len(live)


def test_every_outbox_connection_runs_wal_with_synchronous_full(
    tmp_path: Path, opened: Opened
) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, DEVICE)  # a new file
    box.append(signed(KEY, DEVICE, RecordType.CHECKIN, {16: "P1"}, T0))
    assert_full(opened, path)
    box.close()

    box = Outbox(path, DEVICE)  # reopened, records in it
    assert box.depth() == 1
    assert_full(opened, path)
    box.close()

    path.write_bytes(b"not a database, " * 512)  # damaged: moved aside, a new one begun
    box = Outbox(path, DEVICE, keys=[KEY.public_key()])
    assert box.recovered_from is not None  # the recovery path really ran
    assert_full(opened, path)
    box.append(signed(KEY, DEVICE, RecordType.CHECKIN, {16: "P2"}, T0))
    assert_full(opened, path)
    box.close()


async def test_the_daemons_outbox_runs_wal_with_synchronous_full(
    tmp_path: Path, opened: Opened, broker: Mosquitto
) -> None:
    device = tmp_path / "device"
    device.mkdir()
    key = device / "device.key"
    key.write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    (device / "empty.nmea").write_bytes(b"")
    (device / "config.toml").write_text(
        f'device = "{DEVICE}"\nkey = "device.key"\noutbox = "outbox.db"\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[gnss]\nsource = "file://{device / "empty.nmea"}"\n'
    )
    run = AgentRun(load_config(device / "config.toml"))
    task = asyncio.create_task(run.run(), name="daemon")
    path = device / "outbox.db"

    def booted() -> bool:  # the daemon has opened its outbox and counted this start
        for con in opened.writable_on(path):
            with contextlib.suppress(sqlite3.Error):
                if con.execute("SELECT v FROM meta WHERE k = 'boot'").fetchone() == (1,):
                    return True
        return False

    try:
        await wait_for(booted, 20, "the daemon to open its outbox")
        assert_full(opened, path)
    finally:
        run.stop()
        await asyncio.wait_for(task, 20)


# --- the power cut ----------------------------------------------------------------------------

WRITER = r"""
import os, sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from agent.store.outbox import Outbox, signed
from contract.fix import TimeSource
from contract.records import RecordType

folder, key_hex, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key_hex))

def say(stored):
    for s in stored:  # one write per line: the trace shows it where it happened
        os.write(1, b"confirmed %d %s\n" % (s.seq, s.raw.hex().encode()))

def build(i):
    return signed(key, "h0001", RecordType.CHECKIN, time_ms=1_772_323_200_000 + i,
                  source=TimeSource.GNSS, body={16: "P%03d" % i})

for start in (0, 100):  # two starts of the agent, each ending with a clean close
    box = Outbox(folder / "outbox.db", "h0001")
    if mode != "FULL":
        box._db.execute("PRAGMA synchronous=" + mode)  # the control: the promise broken
    box.begin_boot()
    for i in range(start, start + 6):
        say([box.append(build(i))])
    say(box.append_many(build(i) for i in range(start + 6, start + 10)))
    box.close()
"""
CALLS = ",".join(
    ("openat", "close", "write", "pwrite64", "lseek", "ftruncate", "fsync", "fdatasync",
     "rename", "renameat", "renameat2", "unlink", "unlinkat")
)  # fmt: skip
_LINE = re.compile(r"^(\w+)\((.*)\) = (-?\d+)")
_FD = re.compile(r"^(\d+)<((?:\\x[0-9a-f]{2})*)>$")
_STR = re.compile(r'^"((?:\\x[0-9a-f]{2})*)"$')


def _bytes(arg: str) -> bytes:
    """A string argument as strace -xx prints it: "\\x2f\\x74..." """
    m = _STR.match(arg)
    assert m is not None, arg
    return bytes.fromhex(m.group(1).replace("\\x", ""))


def _text(arg: str) -> str:
    return _bytes(arg).decode()


@dataclass
class Disk:
    """A folder as a power cut sees it: what each file held at its last fsync, the names
    the folder held at its last fsync; everything else is the page cache, lost."""

    root: str
    names: dict[str, int] = field(default_factory=dict)  # the page cache: name -> file
    data: dict[int, bytearray] = field(default_factory=dict)
    synced: dict[int, bytes] = field(default_factory=dict)  # on the medium
    durable: dict[str, int] = field(default_factory=dict)
    fds: dict[int, int | None] = field(default_factory=dict)  # None: the folder itself
    offsets: dict[int, int] = field(default_factory=dict)
    next_file: int = 0

    def image(self) -> dict[str, bytes]:
        return {name: self.synced.get(f, b"") for name, f in sorted(self.durable.items())}

    def apply(self, call: str, args: list[str], ret: int) -> bool:
        """One successful system call; True when it touched the folder."""
        if call == "openat":
            return self._open(args, ret)
        if call in ("rename", "renameat", "renameat2", "unlink", "unlinkat"):
            return self._rename(call, args)
        fd_match = _FD.match(args[0])
        if fd_match is None or int(fd_match.group(1)) not in self.fds:
            return False
        fd = int(fd_match.group(1))
        f = self.fds[fd]
        if call == "close":
            del self.fds[fd]
        elif call in ("fsync", "fdatasync"):
            if f is None:
                self.durable = dict(self.names)
            else:
                self.synced[f] = bytes(self.data[f])
        else:
            assert f is not None, (call, args)
            self._change(fd, self.data[f], call, args, ret)
        return True

    def _open(self, args: list[str], ret: int) -> bool:
        path = _text(args[1])
        if path == self.root:
            self.fds[ret] = None
            return True
        if not path.startswith(self.root + "/"):
            self.fds.pop(ret, None)
            return False
        name = path[len(self.root) + 1 :]
        if name not in self.names:
            assert "O_CREAT" in args[2], args
            self.names[name], self.next_file = self.next_file, self.next_file + 1
            self.data[self.names[name]] = bytearray()
        if "O_TRUNC" in args[2]:
            self.data[self.names[name]].clear()
        self.fds[ret], self.offsets[ret] = self.names[name], 0
        return True

    def _rename(self, call: str, args: list[str]) -> bool:
        paths = [_text(a) for a in args if _STR.match(a)]
        if not paths[0].startswith(self.root + "/"):
            return False
        names = [p[len(self.root) + 1 :] for p in paths]
        moved = self.names.pop(names[0])
        if call.startswith("rename"):
            self.names[names[1]] = moved
        return True

    def _change(self, fd: int, buf: bytearray, call: str, args: list[str], ret: int) -> None:
        if call == "lseek":
            self.offsets[fd] = ret
        elif call == "ftruncate":
            del buf[int(args[1]) :]
            buf.extend(bytes(int(args[1]) - len(buf)))
        elif call in ("write", "pwrite64"):
            payload = _bytes(args[1])
            assert len(payload) == ret, f"strace cut a {call} short"
            at = int(args[3]) if call == "pwrite64" else self.offsets[fd]
            buf.extend(bytes(max(0, at - len(buf))))
            buf[at : at + ret] = payload
            if call == "write":
                self.offsets[fd] = at + ret


@dataclass(frozen=True)
class Cut:
    """A power cut after some system call: the disk it leaves, what was confirmed by then."""

    image: dict[str, bytes]
    confirmed: dict[int, bytes]  # seq -> the record's bytes, as the writer was told


def traced_writer(folder: Path, mode: str) -> Iterator[Cut]:
    """Run the writer under strace; every distinct power cut of its run, in order."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    folder.mkdir()
    trace = folder.with_name(folder.name + ".trace")
    proc = subprocess.run(
        [strace, "-qq", "-y", "-xx", "-s", "1000000", "-o", str(trace), "-e", f"trace={CALLS}",
         sys.executable, "-c", WRITER, str(folder), KEY.private_bytes_raw().hex(), mode],
        cwd=REPO, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    disk = Disk(str(folder.resolve()))
    confirmed: dict[int, bytes] = {}
    seen: set[tuple[int, bytes]] = set()
    for line in trace.read_text().splitlines():
        m = _LINE.match(line)
        if m is None or int(m.group(3)) < 0:
            continue
        call, args, ret = m.group(1), m.group(2).split(", "), int(m.group(3))
        if call == "write" and args[0].startswith("1<"):
            words = _bytes(args[1]).split()
            if words[0] == b"confirmed":
                confirmed[int(words[1])] = bytes.fromhex(words[2].decode())
            continue
        if disk.apply(call, args, ret):
            image = disk.image()
            key = (len(confirmed), hashlib.sha256(repr(image).encode()).digest())
            if key not in seen:
                seen.add(key)
                yield Cut(image, dict(confirmed))
    assert len(confirmed) == 20, "the writer did not confirm every record"


def lost_after(cut: Cut, where: Path) -> str | None:
    """What the disk of `cut` fails to keep of the promise (None: it keeps it all)."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir()
    for name, content in cut.image.items():
        (where / name).write_bytes(content)
    box = Outbox(where / "outbox.db", DEVICE)
    try:
        if box.recovered_from is not None:
            return "the file was taken for damaged"
        kept = {s.seq: s.raw for s in box.pending(10**6)}
        missing = [s for s, raw in cut.confirmed.items() if kept.get(s) != raw]
        if missing:
            return f"confirmed records lost: {missing}"
        new = box.append(signed(KEY, DEVICE, RecordType.CHECKIN, {16: "NEW"}, T0))
        if new.seq <= max(cut.confirmed, default=0):
            return f"number {new.seq} handed out again"
    finally:
        box.close()
    return None


def test_a_power_cut_at_any_moment_keeps_every_confirmed_record(tmp_path: Path) -> None:
    moments: dict[int, int] = {}  # records confirmed -> distinct disks a cut could leave
    for cut in traced_writer(tmp_path / "device", "FULL"):
        confirmed = len(cut.confirmed)
        moments[confirmed] = moments.get(confirmed, 0) + 1
        problem = lost_after(cut, tmp_path / "image")
        assert problem is None, f"power cut after {confirmed} confirmed: {problem}"
    # a moment to cut at after every confirmation (the writer: 6 appends and a batch of 4,
    # twice), and more between them
    after = [*range(7), *range(10, 17), 20]
    assert sorted(moments) == after and sum(moments.values()) > len(after), moments


@pytest.mark.parametrize("mode", ["NORMAL", "OFF"])
def test_the_power_cut_model_finds_what_a_weaker_setting_loses(tmp_path: Path, mode: str) -> None:
    """The control: with the promise broken on purpose, the same model sees records go."""
    for cut in traced_writer(tmp_path / "device", mode):
        problem = lost_after(cut, tmp_path / "image")
        if problem is not None:
            assert "confirmed records lost" in problem
            return
    pytest.fail(f"synchronous={mode} lost nothing under the model: it cannot tell")
