"""`picket center dispatch | roll-call | reminder | key`: commands to devices, from a terminal.

Each command is numbered and signed for every target device (one device, or each member of
a team) by `center.commands`, published once, and then, with `--wait`, followed in the
center database until every device has answered: a receipt for a task bundle or a reminder,
a signed roll-call answer for a roll call. This module only parses, waits and prints.

Exit codes as everywhere in `picket`: 0 done (with `--wait`: every device answered and
carried it out), 1 the work failed (the broker, the disk; with `--wait`: a device refused,
or did not answer in time), 2 bad input (arguments, a missing key or center database).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from center.commands import (
    CommandSigner,
    Receipt,
    RollcallAnswer,
    Signed,
    publish_all,
    receipts,
    rollcall_answers,
)
from center.errors import CenterDbError, DispatchError
from contract.commands import CHALLENGE_LEN, MAX_TEXT, Body, Reminder, RollCall, TaskBundle
from contract.errors import LocalError
from contract.protocol import DEVICE_ID
from contract.records import Outcome
from picket.argtypes import center_tls, host_port, tls_dir
from picket.errors import CliInputError
from provisioning.center import create_center_key, load_center_key
from provisioning.registry import ProvisioningError, Registry, RegistryError

__all__ = [
    "add_center_parsers",
    "dispatch",
    "dispatch_async",
    "key",
    "reminder",
    "reminder_async",
    "roll_call",
    "roll_call_async",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2  # as in picket.cli
POLL_S = 0.25
TTL_BUNDLE_S, TTL_ROLL_CALL_S, TTL_REMINDER_S = 86_400, 300, 3_600
MAX_TTL_S = 30 * 86_400  # a command that outlives a month is a typo
MAX_PLAN_VERSION = 2**31 - 1


class BadInput(CliInputError):
    """Input refused: exit code 2."""


# --- arguments ----------------------------------------------------------------------------------


def _ids(text: str) -> list[str]:
    ids = [t.strip() for t in text.split(",")]
    if not any(ids):
        raise argparse.ArgumentTypeError("name at least one, separated by commas")
    if not all(ids):
        raise argparse.ArgumentTypeError(f"{text!r} names an empty id (two commas in a row?)")
    bad = [i for i in ids if not DEVICE_ID.fullmatch(i)]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not an id (letters, digits, . _ -)")
    if len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError("an id is named twice")
    return ids


def _device(text: str) -> str:
    if not DEVICE_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device id")
    return text


def _date(text: str) -> dt.date:
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_PLAN_VERSION:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 0 to {MAX_PLAN_VERSION:,}"
        )
    return int(text)


def _seconds(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of seconds from 1 to {MAX_TTL_S:,} (30 days)"
        )
    return int(text)


def _wait(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text} must be 0..86400 seconds")
    return value


def _text(text: str) -> str:
    if not 1 <= len(text) <= MAX_TEXT:
        raise argparse.ArgumentTypeError(f"the text must be 1..{MAX_TEXT} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes the shell passed that are no UTF-8 text
        raise argparse.ArgumentTypeError("the text is not valid UTF-8") from None
    return text


def _common(p: argparse.ArgumentParser, ttl_s: int, wait_s: float) -> None:
    p.add_argument("--fleet", type=Path, required=True, help="fleet folder (holds center.key)")
    p.add_argument("--db", type=Path, required=True, help="center SQLite database")
    p.add_argument("--broker", type=host_port, default=("127.0.0.1", 1883), help="HOST:PORT")
    p.add_argument(
        "--tls", type=tls_dir, metavar="DIR", help="TLS with the center's certificate in DIR"
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", type=_device, help="one device id")
    who.add_argument("--team", type=_device, help="a team name (with --members)")
    p.add_argument("--members", type=_ids, help="the team's device ids: a,b,c")
    p.add_argument("--ttl", type=_seconds, default=ttl_s, help=f"valid for seconds ({ttl_s})")
    p.add_argument(
        "--wait", type=_wait, default=wait_s, help=f"seconds to wait for answers ({wait_s:g})"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object last")


def add_center_parsers(center: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `key`, `dispatch`, `roll-call` and `reminder` to the `center` sub-commands."""
    k = center.add_parser(
        "key", help="make the fleet's command-signing key (keeps an existing one)"
    )
    k.add_argument("--fleet", type=Path, required=True, help="fleet folder")
    d = center.add_parser("dispatch", help="send the day's task bundle to a device or a team")
    _common(d, TTL_BUNDLE_S, 0)
    d.add_argument("--date", type=_date, required=True, help="the patrol date, YYYY-MM-DD")
    d.add_argument("--lines", type=_ids, required=True, help="line ids to walk: L1,L2")
    d.add_argument("--plan-version", type=_count, required=True, help="the devices' plan version")
    r = center.add_parser("roll-call", help="challenge a device or team; list who answered, where")
    _common(r, TTL_ROLL_CALL_S, 30)
    m = center.add_parser("reminder", help="send a text to a member's device or a team")
    _common(m, TTL_REMINDER_S, 0)
    m.add_argument("--text", type=_text, required=True, help="what the member reads")


# --- shared steps -------------------------------------------------------------------------------


def _error(err: TextIO, message: str) -> None:
    err.write(f"picket: error: {message}\n")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _utc(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _targets(args: argparse.Namespace) -> tuple[list[str], str | None]:
    if args.device is not None:
        if args.members is not None:
            raise BadInput("--members goes with --team, not --device")
        return [args.device], None
    if args.members is None:
        raise BadInput(f"--team {args.team} needs --members (the team's device ids: a,b,c)")
    return list(args.members), args.team


def _is_fleet(folder: Path) -> bool:
    return (folder / "registry.db").is_file() or (folder / "ca.crt").is_file()


def _check_known(fleet: Path, devices: list[str]) -> None:
    """Refuse ids the fleet's registry does not know, before a number is taken for any: a
    typo would otherwise use up a number and wait for an answer that cannot come. A fleet
    without a registry, or with no device in it yet, is not asked."""
    path = fleet / "registry.db"
    if not path.is_file():
        return
    try:
        with Registry(path, readonly=True) as registry:
            known = set(registry.devices())
    except (RegistryError, sqlite3.Error) as exc:
        raise BadInput(f"{path} is not a readable device registry ({exc})") from exc
    unknown = [d for d in devices if d not in known]
    if known and unknown:
        raise BadInput(
            f"no device {unknown[0]!r} in fleet {fleet} (`picket provision list --fleet "
            f"{fleet}` lists them)"
        )


async def _send(args: argparse.Namespace, body: Body, now_ms: int) -> list[Signed]:
    """Number, sign and publish `body` for every target. BadInput, or DispatchError."""
    devices, team = _targets(args)
    _check_known(args.fleet, devices)
    try:
        key = load_center_key(args.fleet)
        with CommandSigner(key, args.db) as signer:
            signed = [
                signer.build(d, body, now_ms=now_ms, ttl_s=args.ttl, team=team) for d in devices
            ]
    except (ProvisioningError, CenterDbError) as exc:
        raise BadInput(str(exc)) from exc
    host, port = args.broker
    try:
        tls = center_tls(args.tls)
    except LocalError as exc:
        raise BadInput(str(exc)) from exc
    await publish_all(host, port, signed, tls=tls)
    return signed


@dataclass(slots=True)
class _Answers:
    receipts: dict[str, Receipt]  # device -> the receipt of the command sent to it
    rollcall: dict[str, RollcallAnswer]  # device -> its answer (roll calls only)


async def _collect(
    db: Path, sent: Sequence[Signed], wait_s: float, challenge: bytes | None
) -> _Answers:
    """Poll the center database until every device answered or `wait_s` passed."""
    numbers = {s.device: s.number for s in sent}
    devices = sorted(numbers)
    deadline = time.monotonic() + wait_s
    while True:
        found = await asyncio.to_thread(receipts, db, devices, numbers)
        got = {r.device: r for r in found}
        answers: dict[str, RollcallAnswer] = {}
        if challenge is None:
            done = all(d in got for d in devices)
        else:
            listed = await asyncio.to_thread(rollcall_answers, db, challenge, devices)
            answers = {a.device: a for a in listed}
            refused = {d for d, r in got.items() if r.outcome is not Outcome.DONE}
            done = all(d in answers or d in refused for d in devices)
        if done or time.monotonic() >= deadline:
            return _Answers(got, answers)
        await asyncio.sleep(POLL_S)


def _status(r: Receipt | None) -> str:
    if r is None:
        return "no answer"
    if r.outcome is Outcome.DONE:
        return "done"
    return f"{r.outcome.name.lower()}: {r.reason or '-'}"


async def _run(
    args: argparse.Namespace,
    body: Body,
    what: str,
    *,
    out: TextIO,
    err: TextIO,
    now_ms: int | None,
) -> int:
    """Send, wait, report a command that is answered by a receipt (bundle, reminder)."""
    try:
        sent = await _send(args, body, now_ms if now_ms is not None else int(time.time() * 1000))
        answers = await _collect(args.db, sent, args.wait, None) if args.wait > 0 else None
    except BadInput as exc:
        _error(err, str(exc))
        return EXIT_BAD_INPUT
    except (DispatchError, CenterDbError) as exc:
        _error(err, str(exc))
        return EXIT_FAILED
    got = answers.receipts if answers is not None else {}
    ok = answers is None or all(
        s.device in got and got[s.device].outcome is Outcome.DONE for s in sent
    )
    if args.json:
        rows = []
        for s in sent:
            r = got.get(s.device)
            rows.append(
                {
                    "device": s.device,
                    "number": s.number,
                    "expires_ms": s.expires_ms,
                    "outcome": None if r is None else r.outcome.name.lower(),
                    "reason": None if r is None else r.reason,
                }
            )
        out.write(json.dumps({"command": what, "sent": rows, "ok": ok}, sort_keys=True) + "\n")
        return EXIT_OK if ok else EXIT_FAILED
    width = max(len("DEVICE"), *(len(s.device) for s in sent))
    header = f"{'DEVICE':<{width}}  NUMBER  EXPIRES (UTC)      "
    out.write(header + ("  ANSWER\n" if answers is not None else "\n"))
    for s in sent:
        line = f"{s.device:<{width}}  {s.number:>6}  {_utc(s.expires_ms)}"
        if answers is not None:
            line += f"  {_status(got.get(s.device))}"
        out.write(line + "\n")
    err.write(f"sent {what} to {_plural(len(sent), 'device')}\n")
    return EXIT_OK if ok else EXIT_FAILED


# --- the sub-commands ---------------------------------------------------------------------------


def _not_a_fleet(folder: Path) -> str:
    return (
        f"{folder} is not a fleet folder (no registry.db or ca.crt): run "
        f"`picket provision init --fleet {folder}`"
    )


def key(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if not _is_fleet(args.fleet):  # a typo must not make a new key that no device trusts
        _error(err, _not_a_fleet(args.fleet))
        return EXIT_BAD_INPUT
    try:
        public = create_center_key(args.fleet)
    except ProvisioningError as exc:
        _error(err, str(exc))
        return EXIT_BAD_INPUT
    out.write(f"{public}\n")
    err.write(
        "devices accept commands signed with it once their folder holds a copy named in their "
        'config.toml: center_key = "center.pub" (docs/commands.md)\n'
    )
    return EXIT_OK


async def dispatch_async(
    args: argparse.Namespace, out: TextIO, err: TextIO, now_ms: int | None = None
) -> int:
    body = TaskBundle(args.plan_version, args.date, tuple(args.lines))
    what = f"task bundle for {args.date}"
    return await _run(args, body, what, out=out, err=err, now_ms=now_ms)


async def reminder_async(
    args: argparse.Namespace, out: TextIO, err: TextIO, now_ms: int | None = None
) -> int:
    return await _run(args, Reminder(args.text), "reminder", out=out, err=err, now_ms=now_ms)


async def roll_call_async(
    args: argparse.Namespace, out: TextIO, err: TextIO, now_ms: int | None = None
) -> int:
    challenge = os.urandom(CHALLENGE_LEN)
    try:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        sent = await _send(args, RollCall(challenge), now)
        answers = await _collect(args.db, sent, args.wait, challenge)
    except BadInput as exc:
        _error(err, str(exc))
        return EXIT_BAD_INPUT
    except (DispatchError, CenterDbError) as exc:
        _error(err, str(exc))
        return EXIT_FAILED
    answered = [answers.rollcall[s.device] for s in sent if s.device in answers.rollcall]
    refused = {
        s.device: r
        for s in sent
        if s.device not in answers.rollcall
        and (r := answers.receipts.get(s.device)) is not None
        and r.outcome is not Outcome.DONE
    }
    missing = [
        s.device for s in sent if s.device not in answers.rollcall and s.device not in refused
    ]
    ok = len(answered) == len(sent)
    if args.json:
        doc = {
            "challenge": challenge.hex(),
            "sent": [{"device": s.device, "number": s.number} for s in sent],
            "answered": [
                {
                    "device": a.device,
                    "lat": a.lat,
                    "lon": a.lon,
                    "accuracy_m": a.accuracy_m,
                    "fix_time_ms": a.fix_time_ms,
                    "answered_ms": a.answered_ms,
                }
                for a in answered
            ],
            "refused": [{"device": d, "reason": r.reason} for d, r in refused.items()],
            "missing": missing,
        }
        out.write(json.dumps(doc, sort_keys=True) + "\n")
        return EXIT_OK if ok else EXIT_FAILED
    width = max(len("DEVICE"), *(len(s.device) for s in sent))
    out.write(f"{'DEVICE':<{width}}  ANSWERED (UTC)       LATITUDE     LONGITUDE     ±M\n")
    for a in answered:
        if a.lat is None or a.lon is None:
            where = "no fix"
        else:
            acc = "-" if a.accuracy_m is None else f"{a.accuracy_m:.1f}"
            where = f"{a.lat:>11.7f}  {a.lon:>12.7f}  {acc}"
        out.write(f"{a.device:<{width}}  {_utc(a.answered_ms)}  {where}\n")
    for d, r in refused.items():
        out.write(f"{d:<{width}}  {_status(r)}\n")
    for d in missing:
        out.write(f"{d:<{width}}  no answer\n")
    err.write(f"roll call {challenge.hex()}: {len(answered)} of {len(sent)} answered\n")
    return EXIT_OK if ok else EXIT_FAILED


def dispatch(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    return asyncio.run(dispatch_async(args, out or sys.stdout, err or sys.stderr))


def reminder(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    return asyncio.run(reminder_async(args, out or sys.stdout, err or sys.stderr))


def roll_call(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    return asyncio.run(roll_call_async(args, out or sys.stdout, err or sys.stderr))
