"""Every `picket` sub-command against hostile and broken input (issue 15).

The sub-commands are found by walking the argparse parser of picket/cli.py, so a command
added there is covered here without a line changed. For each one a base command line is
made (fixture files for the flags whose names say what they are: a real fleet for
`--fleet`, a center database for `--db`; any value the flag's own type accepts for the
rest), and then one argument at a time is replaced by each value of a corpus of bad ones:
a missing file, a folder, /dev/null, an empty file, random bytes, a number that does not
fit, a negative one, NUL, non-UTF-8 bytes, a very long string. Whatever the outcome, the
command must end with 0, 1 or 2 and no traceback: refusing is fine, crashing is not.

The cases run in this process through `picket.cli.main(argv)`, each under a watchdog
timer, so the whole walk takes seconds; a sample runs as the real `python -m picket`, the
way a shell passes bytes that are not UTF-8. Commands that would start a service (the
center, the agent, the demo, the simulators) get one more argument that stops them early
(`ANCHORS`), and values that are fine for them (a new folder for `--workdir`) are not
tried (`LEGIT`): the point is input that must be refused, not a run that takes minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import resource
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.checkin.planfile import plan_to_geojson
from center.store import CenterStore
from picket.cli import build_parser, main
from picket.provisionsteps import utc
from provisioning.registry import Registry
from simulators.district import generate_district

REPO = Path(__file__).resolve().parents[1]
CASE_TIMEOUT_S = float(os.environ.get("PICKET_HOSTILE_TIMEOUT_S", "20"))
Path_ = tuple[str, ...]


# --- walking the parser ---------------------------------------------------------------------


def _sub_action(
    p: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a
    return None


def leaves(
    p: argparse.ArgumentParser | None = None, prefix: Path_ = ()
) -> Iterator[tuple[Path_, argparse.ArgumentParser]]:
    """Every runnable sub-command: its words and its parser."""
    p = p or build_parser()
    sub = _sub_action(p)
    if sub is None:
        yield prefix, p
        return
    for name, child in sub.choices.items():
        yield from leaves(child, (*prefix, name))


LEAVES = dict(leaves())


def _valued(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments that take a value (flags and --help left out)."""
    return [
        a
        for a in p._actions
        if a.nargs != 0 and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def _required_groups(p: argparse.ArgumentParser) -> list[list[argparse.Action]]:
    return [g._group_actions for g in p._mutually_exclusive_groups if g.required]


# --- the corpus -----------------------------------------------------------------------------

HOSTILE = (
    "missing",
    "directory",
    "devnull",
    "empty",
    "random",
    "huge",
    "negative",
    "zero",
    "nan",
    "emptystr",
    "nul",
    "nonutf8",
    "long",
)

# Commands that would run for minutes (or until stopped) with good input: an argument that
# makes them stop early, unless that argument is the one under test; and the values that are
# good input for them, so not tried.
ANCHORS: dict[Path_, dict[str, str]] = {
    ("demo",): {"workdir": "FILE"},
    ("center", "run"): {"registry": "MISSING"},
    ("sim", "fleet"): {"plan": "MISSING"},
    ("sim", "dock"): {"workdir": "FILE"},
    ("sim", "district"): {"out": "FILE"},
    ("bench", "checkins"): {"cases": "1"},
    ("gps", "watch"): {"seconds": "0.5", "source": "MISSING"},
}
# Given whenever they are not under test: without --dir, `agent enroll | install` write into
# the machine's device folder (/var/lib/picket as root).
ALWAYS = {"dir"}
NEW_FOLDER = {"missing", "directory", "emptystr"}  # "" is the current folder
# "-1", "0", "nan" and a huge number are good names for a new folder too: a run, not
# input to refuse
RUN_FOLDER = NEW_FOLDER | {"negative", "zero", "nan", "huge"}
LEGIT: dict[Path_, dict[str, set[str]]] = {
    ("demo",): {"workdir": RUN_FOLDER},
    ("sim", "dock"): {"workdir": RUN_FOLDER},
    ("sim", "district"): {"out": NEW_FOLDER},
    ("sim", "fleet"): {"plan": {"emptystr"}},  # the current folder may hold a district
    ("bench", "checkins"): {"seed": {"huge", "negative", "zero"}},
}


@dataclass
class World:
    """Fixture files, made once: a fleet with one device, a request, a bundle, a database."""

    tmp: Path
    fleet: Path
    center_db: Path
    config: Path
    request: Path
    bundle: Path
    plan: Path
    nmea: Path
    plain: Path
    n: int = 0

    def fresh(self, stem: str = "out") -> Path:
        self.n += 1
        return self.tmp / "fresh" / f"{stem}-{self.n}"

    def hostile(self, kind: str) -> str:
        junk = self.tmp / "junk"
        return {
            "missing": str(self.tmp / "no-such-folder" / "no-such-file"),
            "directory": str(junk / "folder"),
            # a link to it: a command that wrongly replaces its output by rename replaces the
            # link, not the machine's /dev/null (tests/conftest.py checks that none does)
            "devnull": str(junk / "devnull"),
            "empty": str(junk / "empty"),
            "random": str(junk / "random"),
            "huge": str(10**23),
            "negative": "-1",
            "zero": "0",
            "nan": "nan",
            "emptystr": "",
            "nul": "a\x00b",
            "nonutf8": str(junk / os.fsdecode(b"\xff\xfe-name")),
            "long": "x" * 5000,
        }[kind]

    def base_value(self, action: argparse.Action) -> str:
        """A value for `action` that gets past argparse: a fixture where the flag's name
        says what it wants, else whatever its type accepts."""
        named = {
            "fleet": str(self.fleet),
            "db": str(self.center_db),
            "registry": str(self.fleet / "registry.db"),
            "config": str(self.config),
            "request": str(self.request),
            "bundle": str(self.bundle),
            "plan": str(self.plan),
            "nmea": str(self.nmea),
            "file": str(self.nmea),
            "out": str(self.fresh()),
            "label": str(self.fresh("label")),
            "html": str(self.fresh("html")),
            "workdir": str(self.fresh("workdir")),
            "dir": str(self.fresh("dir")),
            "broker": "127.0.0.1:9",
            "id": "h0001",
            "device": "h0001",
            "members": "h0001",
            "version": "1.0.0",
            "date": "2026-03-01",
            "lines": "L1",
            "text": "hello",
            "image": str(self.plain),
            "center_key": str(self.fleet / "center.pub"),
            "source": str(self.plain),
        }
        if action.dest in named:
            return named[action.dest]
        if action.choices:
            return str(next(iter(action.choices)))
        for candidate in ("1", "h0001", "127.0.0.1:9", "2026-03-01", "a=b", "1.0.0", "a"):
            if _accepts(action, candidate):
                return candidate
        return "a"

    def special(self, token: str) -> str:
        if token == "FILE":
            return str(self.plain)
        if token == "MISSING":
            return str(self.tmp / "no-such-folder" / "anchor")
        return token


def _accepts(action: argparse.Action, candidate: str) -> bool:
    """Whether the argument's type takes `candidate` (probing: any refusal is a no)."""
    try:
        if callable(action.type):
            action.type(candidate)
    except Exception:
        return False
    return True


def _argv(words: Path_, parts: list[tuple[argparse.Action, str]]) -> list[str]:
    argv = list(words)
    positional: list[str] = []
    for action, value in parts:
        if action.option_strings:
            argv += [action.option_strings[-1], value]
        else:
            positional.append(value)
    # "--" keeps a value such as "-1" a positional, not an unknown option
    return argv + (["--", *positional] if positional else [])


def _first_of_other(
    a: argparse.Action, groups: list[list[argparse.Action]], mine: list[argparse.Action] | None
) -> bool:
    """`a` is the one argument given for a required group other than the one under test."""
    return any(g[0] is a for g in groups if g is not mine)


def cases(world: World, words: Path_) -> Iterator[tuple[str, list[str]]]:
    """(what is tried, argv) for each argument of `words` and each hostile value."""
    parser = LEAVES[words]
    actions = _valued(parser)
    groups = _required_groups(parser)
    anchors = ANCHORS.get(words, {})
    legit = LEGIT.get(words, {})
    by_dest = {a.dest: a for a in actions}
    for target in actions:
        group = next((g for g in groups if target in g), None)
        for kind in HOSTILE:
            if kind in legit.get(target.dest, set()):
                continue
            parts: list[tuple[argparse.Action, str]] = []
            for a in actions:
                if a is target:
                    parts.append((a, world.hostile(kind)))
                elif group is not None and a in group:
                    continue
                elif a.dest in anchors:
                    parts.append((a, world.special(anchors[a.dest])))
                elif a.required or a.dest in ALWAYS or _first_of_other(a, groups, group):
                    parts.append((a, world.base_value(a)))
            for dest in anchors:
                if dest != target.dest and dest not in by_dest:
                    raise AssertionError(f"{words}: anchor --{dest} is no argument of it")
            yield f"{target.dest}={kind}", _argv(words, parts)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("hostile")
    junk = tmp / "junk"
    (junk / "folder").mkdir(parents=True)
    (junk / "empty").write_bytes(b"")
    (junk / "random").write_bytes(random.Random(15).randbytes(4096))
    (junk / "devnull").symlink_to(os.devnull)
    (tmp / "fresh").mkdir()
    fleet, dev = tmp / "fleet", tmp / "devices" / "h0001"
    request, bundle = tmp / "request.cbor", tmp / "bundle.cbor"
    plan, nmea, plain = tmp / "plan.geojson", tmp / "track.nmea", tmp / "plain.txt"
    plan.write_text(__import__("json").dumps(plan_to_geojson(generate_district(7))))
    nmea.write_text("# nothing but a comment\n")
    plain.write_text("not what any command wants\n")
    with _quiet():
        for argv in (
            ["provision", "init", "--fleet", str(fleet)],
            ["provision", "device", "--fleet", str(fleet), "--id", "h0001", "--out", str(dev)],
            ["agent", "enroll", "--dir", str(tmp / "enrolled"), "--out", str(request)],
            [
                "provision",
                "approve",
                str(request),
                "--fleet",
                str(fleet),
                "--id",
                "h0002",
                "--out",
                str(bundle),
            ],
        ):
            assert main(argv) == 0, argv
    CenterStore(tmp / "center.db").close()
    config = dev / "config.toml"
    return World(tmp, fleet, tmp / "center.db", config, request, bundle, plan, nmea, plain)


# --- running a case -------------------------------------------------------------------------


class Hung(Exception):
    """The watchdog: a command that did not end in CASE_TIMEOUT_S."""


@contextlib.contextmanager
def _quiet() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    def bite(_signum: int, _frame: types.FrameType | None) -> None:
        raise Hung(f"still running after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, bite)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_in_process(argv: list[str], world: World) -> str | None:
    """None if the command ended well (0/1/2, no traceback); else what went wrong."""
    cwd = world.tmp / "cwd"
    cwd.mkdir(exist_ok=True)
    found = _run_in_process(argv, cwd)
    link = world.tmp / "junk" / "devnull"
    if not link.is_symlink():  # as root, that would have been the machine's /dev/null
        link.unlink()
        link.symlink_to(os.devnull)
        found = f"replaced {link} (a link to /dev/null) with a file; {found or 'exit ok'}"
    return found


def _run_in_process(argv: list[str], cwd: Path) -> str | None:
    with _quiet() as (out, err), contextlib.chdir(cwd):  # "" and "." are the current folder
        try:
            with _watchdog(CASE_TIMEOUT_S):
                code: object = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
        except Hung as exc:
            return str(exc)
        except BaseException as exc:  # what a user would see as a traceback
            return f"traceback: {type(exc).__name__}: {str(exc)[:300]}"
    text = err.getvalue()
    if "Traceback" in text:
        return "traceback on stderr: " + text[text.index("Traceback") :][-400:]
    if code not in (0, 1, 2):
        return f"exit code {code!r}: {text[-300:]}"
    if code == 2 and not (text.strip() or out.getvalue().strip()):
        return "exit 2 with nothing said"
    return None


def _name(words: Path_) -> str:
    return " ".join(words)


@pytest.mark.parametrize("words", sorted(LEAVES), ids=_name)
def test_every_hostile_argument_ends_with_0_1_or_2_and_no_traceback(
    words: Path_, world: World
) -> None:
    problems = []
    for what, argv in cases(world, words):
        found = run_in_process(argv, world)
        if found is not None:
            shown = " ".join(repr(a if len(a) < 60 else a[:20] + "…") for a in argv)
            problems.append(f"  picket {shown}  [{what}]\n    {found[:300]}")
    assert not problems, f"{len(problems)} hostile case(s) of `picket {_name(words)}`:\n" + (
        "\n".join(problems)
    )


def test_the_walk_finds_every_command_of_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for words in LEAVES:
        assert f"picket {words[0]}" in readme, words
    assert len(LEAVES) >= 35
    for words in ANCHORS:
        assert words in LEAVES, f"ANCHORS names {words}, which is no command"


# --- the real process, for a sample ---------------------------------------------------------


def picket(
    *argv: str | bytes, cwd: Path, nofile: int | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    def limit() -> None:
        if nofile is not None:  # soft and hard: as a shell's `ulimit -n` leaves them
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return subprocess.run(
        [sys.executable, "-m", "picket", *argv],
        capture_output=True,
        timeout=timeout,
        check=False,
        preexec_fn=limit,
        cwd=cwd,
        env={**os.environ, "LC_ALL": "C.UTF-8", "PYTHONPATH": str(REPO)},
    )


SAMPLE = (("random", 0), ("nonutf8", 0), ("directory", 0), ("huge", -1))


@pytest.mark.parametrize("words", sorted(LEAVES), ids=_name)
def test_a_sample_as_a_real_process(words: Path_, world: World) -> None:
    """Bytes that are not UTF-8 reach the command as a shell passes them; stdout is a pipe."""
    all_cases = [(w, a) for w, a in cases(world, words) if "\x00" not in "".join(a)]
    wanted = [k for k, _ in SAMPLE]
    chosen = [c for c in all_cases if c[0].split("=")[1] in wanted][:3]
    problems = []
    for what, argv in chosen:
        cwd = world.tmp / "cwd"
        cwd.mkdir(exist_ok=True)
        done = picket(*[os.fsencode(a) for a in argv], cwd=cwd)
        err = done.stderr.decode(errors="replace")
        if b"Traceback" in done.stderr or done.returncode not in (0, 1, 2):
            problems.append(f"  [{what}] exit {done.returncode}: {err[-400:]}")
    assert not problems, f"`picket {_name(words)}`:\n" + "\n".join(problems)


# --- the cases of issue 15, by name ---------------------------------------------------------


def _err(done: subprocess.CompletedProcess[bytes]) -> str:
    return done.stderr.decode(errors="replace")


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


def run(*argv: str | Path, cwd: Path) -> Ran:
    """`picket.cli.main` in this process, output captured."""
    with _quiet() as (out, err), contextlib.chdir(cwd):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    folder = tmp_path / "fleet"
    assert run("provision", "init", "--fleet", folder, cwd=tmp_path).code == 0
    device = run(
        "provision", "device", "--fleet", folder, "--id", "h0001", "--out", tmp_path / "h0001",
        cwd=tmp_path,
    )  # fmt: skip
    assert device.code == 0, device.err
    CenterStore(tmp_path / "center.db").close()
    return folder


@pytest.mark.parametrize("kind", ["random", "directory", "empty", "devnull"])
def test_center_run_refuses_a_registry_that_is_none_before_it_says_ready(
    tmp_path: Path, kind: str
) -> None:
    registry = tmp_path / "registry"
    if kind == "random":
        registry.write_bytes(random.Random(1).randbytes(8192))
    elif kind == "directory":
        registry.mkdir()
    elif kind == "empty":
        registry.write_bytes(b"")
    else:
        registry.symlink_to(os.devnull)
    db = tmp_path / "center.db"
    done = picket("center", "run", "--db", str(db), "--registry", str(registry), cwd=tmp_path)
    assert done.returncode == 2, _err(done)
    assert b"ready" not in done.stdout
    assert "is not a device registry" in _err(done) and "provision init" in _err(done)
    assert "Traceback" not in _err(done)


def test_demo_refuses_a_workdir_that_is_a_file(tmp_path: Path) -> None:
    plain = tmp_path / "notes.txt"
    plain.write_text("mine\n")
    r = run("demo", "--devices", "1", "--minutes", "1", "--workdir", plain, cwd=tmp_path)
    assert r.code == 2 and "is not a folder" in r.err, r.err
    assert plain.read_text() == "mine\n"


def test_demo_refuses_more_devices_than_the_open_file_limit_holds(tmp_path: Path) -> None:
    done = picket("demo", "--devices", "400", "--minutes", "1", cwd=tmp_path, nofile=1024)
    assert done.returncode == 2, _err(done)
    assert "ulimit -n" in _err(done) and "1,024" in _err(done)
    assert "Traceback" not in _err(done)
    many = run("demo", "--devices", "5000", cwd=tmp_path)
    assert many.code == 2 and "2,747" in many.err


def test_demo_raises_its_own_soft_limit_when_the_hard_one_allows(tmp_path: Path) -> None:
    from simulators.demo import ensure_open_files, open_files_needed

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = open_files_needed(100)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"hard limit {hard} below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
    try:
        ensure_open_files(100)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("what", ["file", "typo"])
def test_center_key_refuses_a_folder_that_is_no_fleet(tmp_path: Path, what: str) -> None:
    target = tmp_path / "fleet.txt" if what == "file" else tmp_path / "flete"
    if what == "file":
        target.write_text("x")
    r = run("center", "key", "--fleet", target, cwd=tmp_path)
    assert r.code == 2, r.err
    assert "not a fleet folder" in r.err and "picket provision init --fleet" in r.err
    assert what == "file" or not target.exists()  # no new key for a typo


def test_center_key_of_a_fleet_prints_its_public_key(tmp_path: Path, fleet: Path) -> None:
    r = run("center", "key", "--fleet", fleet, cwd=tmp_path)
    assert r.code == 0 and r.out.strip() == str(fleet / "center.pub")


@pytest.mark.parametrize("ttl", [str(10**23), "7776001", "0", "-5", "1e3"])
def test_a_ttl_out_of_bounds_is_refused(tmp_path: Path, fleet: Path, ttl: str) -> None:
    base = ["--fleet", fleet, "--db", tmp_path / "center.db", "--device", "h0001"]
    r = run("center", "roll-call", *base, "--ttl", ttl, cwd=tmp_path)
    assert r.code == 2 and "--ttl" in r.err, r.err
    r = run("provision", "rotate", *base[:4], "--id", "h0001", "--ttl", ttl, cwd=tmp_path)
    assert r.code == 2 and "--ttl" in r.err, r.err


def _numbers(db: Path) -> list[tuple[str, int]]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as con:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        if "command_numbers" not in names:
            return []
        return con.execute("SELECT device, last FROM command_numbers").fetchall()


@pytest.mark.parametrize(
    ("members", "needle"),
    [("h0001,,h0002", "empty id"), ("h0001,", "empty id"), ("h0001,h9999", "no device 'h9999'")],
)
def test_roll_call_refuses_empty_and_unknown_members_before_numbering(
    tmp_path: Path, fleet: Path, members: str, needle: str
) -> None:
    db = tmp_path / "center.db"
    r = run(
        "center", "roll-call", "--fleet", fleet, "--db", db, "--broker", "127.0.0.1:9",
        "--team", "T1", "--members", members, "--wait", "0", cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 2 and needle in r.err, r.err
    assert _numbers(db) == []


def test_a_second_revoke_prints_the_time_kept(tmp_path: Path, fleet: Path) -> None:
    first = run("provision", "revoke", "--fleet", fleet, "--id", "h0001", cwd=tmp_path)
    assert first.code == 0, first.err
    said = [line for line in first.out.splitlines() if "refuses records" in line]
    with Registry(fleet / "registry.db", readonly=True) as reg:
        entry = reg.entry("h0001")
    assert entry is not None and entry.revoked_ms is not None
    import time

    time.sleep(1.1)  # the second run's clock is a second later: it must not be printed
    second = run("provision", "revoke", "--fleet", fleet, "--id", "h0001", cwd=tmp_path)
    assert second.code == 0, second.err
    assert "already revoked" in second.out
    assert [line for line in second.out.splitlines() if "refuses records" in line] == said
    assert utc(entry.revoked_ms, "%Y-%m-%d %H:%M:%S") in said[0]


def test_approve_with_a_label_it_cannot_write_registers_nothing(
    tmp_path: Path, fleet: Path
) -> None:
    request = tmp_path / "request.cbor"
    r = run("agent", "enroll", "--dir", tmp_path / "dev", "--out", request, cwd=tmp_path)
    assert r.code == 0, r.err
    label = tmp_path / "label.png"
    label.write_bytes(b"not a folder")
    r = run(
        "provision", "approve", request, "--fleet", fleet, "--id", "h0002",
        "--out", tmp_path / "bundle.cbor", "--label", label, cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 2 and "--label" in r.err, r.err
    with Registry(fleet / "registry.db", readonly=True) as reg:
        assert reg.entry("h0002") is None
    assert not (tmp_path / "bundle.cbor").exists()


def test_outputs_that_are_devices_are_refused_not_replaced(tmp_path: Path, fleet: Path) -> None:
    link = tmp_path / "null"
    link.symlink_to(os.devnull)
    r = run("center", "export", "--db", tmp_path / "center.db", "--out", link, cwd=tmp_path)
    assert r.code == 2 and "not a regular file" in r.err, r.err
    r = run("agent", "enroll", "--dir", tmp_path / "dev", "--out", link, cwd=tmp_path)
    assert r.code == 2 and "not a regular file" in r.err, r.err
    assert link.is_symlink()
