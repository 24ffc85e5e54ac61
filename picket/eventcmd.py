"""`picket center events …` and `picket center api`: the event loop at the center, by hand.

`events list | show | accept | reject | dispatch | start | resolve | close | reopen | merge`
read and act on the center's events (center/events/): each action is one transaction that
the pure lifecycle judges, and prints the change and the devices to tell; with `--fleet`
(the center's signing key) it then tells them: one signed EVENT_STATUS command each,
published once the action has committed (center/events/notify.py). `events catalogue`
prints the catalogue, and with `--send` signs and publishes it as a CATALOGUE command.
`show --export DIR` writes the event's photos and notes as files. `api` serves Open311 GeoReport v2
(center/events/api.py) until stopped. This module only parses, opens and prints.

Exit codes as everywhere in `picket`: 0 done, 1 the work failed (the database), 2 bad
input (an event that does not exist, an action its status does not allow, a missing file).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from center.commands import CommandSigner, Signed, publish_all
from center.database import is_postgres
from center.errors import CenterDbError, DispatchError, StoreError
from center.events import duplicates, lifecycle, notify
from center.events import store as events
from center.events.catalogue import DEFAULT, Catalogue, CatalogueError, find, load
from center.events.lifecycle import Refused, label
from center.events.store import EventDb, EventQuery, EventRow
from contract.bounds import CATEGORY_MAX, SEQ_MAX
from contract.errors import LocalError
from contract.eventcommands import EventStatusCode
from contract.protocol import DEVICE_ID
from picket.argtypes import center_tls, host_port, positive_int, tls_dir
from picket.errors import EXIT_OK, CliFailure, CliInputError, Handler, cli_handler
from provisioning.center import load_center_key
from provisioning.registry import ProvisioningError, Registry, RegistryError

__all__ = ["HANDLERS", "add_parsers"]

STATUS_WORDS = {label(s).replace(" ", "-"): s for s in EventStatusCode}
SUFFIX = {1: "jpg", 2: "txt", 3: "voice"}
MAX_HOURS = 24 * 365


def _bounded(most: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = positive_int(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"{value} is above the largest {what} ({most:,})")
        return value

    return parse


_number = _bounded(SEQ_MAX, "event number")
_category = _bounded(CATEGORY_MAX, "category code")
_limit = _bounded(100_000, "listing")


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours") from None
    if not 0 < value <= MAX_HOURS:
        raise argparse.ArgumentTypeError(f"{text} hours: give more than 0, at most a year")
    return value


def listen_address(text: str) -> tuple[str, int]:
    """HOST:PORT to listen on; port 0 lets the system choose (the port is printed)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:8311)")
    return host, int(port)


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("give a few words")
    return text


def _device(text: str) -> str:
    if not DEVICE_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device id")
    return text


def _sending(p: argparse.ArgumentParser, fleet_help: str) -> None:
    p.add_argument("--fleet", type=Path, help=fleet_help)
    p.add_argument("--broker", type=host_port, default=("127.0.0.1", 1883), help="HOST:PORT")
    p.add_argument(
        "--tls", type=tls_dir, metavar="DIR", help="TLS with the center's certificate in DIR"
    )


def add_parsers(center: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `events` and `api` to the `center` command's sub-commands."""
    ev = center.add_parser("events", help="field events: list, show and act on them")
    sub = ev.add_subparsers(dest="events_command", required=True, metavar="COMMAND")

    def cmd(name: str, help_: str, *, number: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        if number:
            p.add_argument("number", type=_number, help="the event's number")
        p.add_argument(
            "--db", required=True, help="center database: a SQLite path or a postgresql:// URL"
        )
        p.add_argument("--json", action="store_true", help="print one JSON object")
        if number and name != "show":
            p.add_argument("--by", type=_text, default="center", help="who acts (center)")
            _sending(p, "tell the devices: sign with the key in this fleet folder and publish")
        return p

    ls = cmd("list", "list events, newest first", number=False)
    ls.add_argument("--status", choices=sorted(STATUS_WORDS), action="append", help="only these")
    ls.add_argument("--category", type=_category, action="append", help="only these codes")
    ls.add_argument("--limit", type=_limit, default=100, help="at most this many (100)")
    show = cmd("show", "one event: its changes, attachments and likely duplicates")
    show.add_argument("--export", type=Path, metavar="DIR", help="write its photos here")
    cmd("accept", "accept a reported event")
    cmd("reject", "reject a reported event").add_argument(
        "--reason", type=_text, required=True, help="why (the reporter reads it)"
    )
    dispatch = cmd("dispatch", "send a device or a team to handle an event")
    who = dispatch.add_mutually_exclusive_group(required=True)
    who.add_argument("--to", help="the device to send")
    who.add_argument("--team", help="the team to send")
    dispatch.add_argument("--within", type=_hours, default=24.0, help="hours to handle it (24)")
    cmd("start", "note that the handler has started")
    resolve = cmd("resolve", "note an event handled, with the result")
    resolve.add_argument("--result", type=_text, required=True, help="what was done")
    resolve.add_argument("--report", type=_number, help="the handler's result report")
    cmd("close", "close a resolved event")
    cmd("reopen", "reopen a resolved or closed event").add_argument(
        "--reason", type=_text, required=True, help="why (the reporter reads it)"
    )
    cmd("merge", "merge a duplicate into another event").add_argument(
        "--into", type=_number, required=True, help="the event it duplicates"
    )

    cat = cmd("catalogue", "print the catalogue; --send: sign it for devices", number=False)
    cat.add_argument("--catalogue", type=Path, help="categories (JSON); the district's default")
    cat.add_argument("--send", action="store_true", help="sign and publish it (needs --fleet)")
    cat.add_argument(
        "--device", type=_device, action="append", help="to this device (repeat); default: all"
    )
    cat.add_argument("--team", type=_device, help="name the team the --device list is")
    _sending(cat, "the fleet folder: its center.key signs, its registry lists the devices")

    api = center.add_parser("api", help="serve Open311 GeoReport v2 over HTTP until stopped")
    api.add_argument(
        "--db", required=True, help="center database: a SQLite path or a postgresql:// URL"
    )
    api.add_argument("--listen", type=listen_address, required=True, help="HOST:PORT to listen on")
    api.add_argument("--keys", type=Path, required=True, help="API keys file: NAME KEY a line")
    api.add_argument("--catalogue", type=Path, help="categories (JSON); the district's default")
    api.add_argument("--media-base", help="the URL media_url starts with (the request's host)")


# --- shared --------------------------------------------------------------------------------------


@contextmanager
def _opened(db: str, *, readonly: bool) -> Iterator[EventDb]:
    try:
        opened = EventDb(db, readonly=readonly)
    except CenterDbError as exc:
        raise CliInputError(str(exc)) from exc
    try:
        yield opened
    except StoreError as exc:
        raise CliFailure(str(exc)) from exc
    finally:
        opened.close()


def _catalogue(path: Path | None) -> Catalogue:
    try:
        return load(path or DEFAULT)
    except CatalogueError as exc:
        raise CliInputError(str(exc)) from exc


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _place(row: EventRow) -> str:
    if row.lat is None or row.lon is None:
        return row.address or "unknown"
    acc = f" ±{row.accuracy_dm / 10:g} m" if row.accuracy_dm is not None else ""
    return f"{row.lat:.6f},{row.lon:.6f}{acc}"


def _event_json(row: EventRow, cat: Catalogue) -> dict[str, Any]:
    c = find(cat, row.category)
    return {
        "number": row.number,
        "status": label(row.status),
        "category": row.category,
        "category_en": c.name_en if c else None,
        "category_zh": c.name_zh if c else None,
        "device": row.device,
        "seq": row.seq,
        "reporters": list(row.reporters),
        "reported": _when(row.reported_ms),
        "reported_ms": row.reported_ms,
        "place": row.place,
        "lat": row.lat,
        "lon": row.lon,
        "accuracy_m": None if row.accuracy_dm is None else row.accuracy_dm / 10,
        "address": row.address,
        "note": row.note,
        "assignee": row.assignee,
        "deadline_ms": row.deadline_ms,
        "merged_into": row.merged_into,
        "answers": row.answers,
        "reason": row.reason,
        "result": row.result,
        "result_report": row.result_report,
        "updated_ms": row.updated_ms,
    }


def _name(cat: Catalogue, code: int) -> str:
    c = find(cat, code)
    return f"{code} {c.name_en}" if c else f"{code} (not in the catalogue)"


# --- list and show -------------------------------------------------------------------------------


def _list(args: argparse.Namespace, out: TextIO) -> int:
    cat = _catalogue(None)
    q = EventQuery(
        statuses=tuple(STATUS_WORDS[s] for s in args.status) if args.status else None,
        categories=tuple(args.category) if args.category else None,
        limit=args.limit,
    )
    with _opened(args.db, readonly=True) as db, db.read() as sql:
        rows = events.list_events(sql, q)
    if args.json:
        out.write(json.dumps({"events": [_event_json(r, cat) for r in rows]}) + "\n")
        return EXIT_OK
    out.write(f"{'EVENT':>6}  {'STATUS':<11}  {'REPORTED':<20}  {'DEVICE':<8}  CATEGORY\n")
    for r in rows:
        out.write(
            f"{r.number:>6}  {label(r.status):<11}  {_when(r.reported_ms):<20}  "
            f"{r.device:<8}  {_name(cat, r.category)}\n"
        )
    print(f"{len(rows)} event{'s' if len(rows) != 1 else ''}", file=sys.stderr)
    return EXIT_OK


def _export(db: EventDb, atts: list[events.AttachmentRow], number: int, folder: Path) -> list[str]:
    if not folder.is_dir():
        raise CliInputError(f"--export: {folder} is not a folder")
    written: list[str] = []
    for a in atts:
        if not a.complete:
            continue
        with db.read() as sql:
            body = events.attachment_bytes(sql, number, a.sha256)
        if body is None:
            raise CliFailure(f"event {number}: attachment {a.sha256.hex()} is missing its bytes")
        target = folder / f"event-{number}-{a.sha256.hex()[:16]}.{SUFFIX.get(a.kind, 'bin')}"
        try:
            target.write_bytes(body)
        except OSError as exc:
            raise CliFailure(f"cannot export to {folder}: {exc.strerror or exc}") from exc
        written.append(str(target))
    return written


def _change_json(c: lifecycle.Change) -> dict[str, Any]:
    return {
        "from": label(c.from_),
        "to": label(c.to),
        "by": c.by,
        "at_ms": c.at_ms,
        "detail": c.detail,
    }


def _attachment_json(a: events.AttachmentRow) -> dict[str, Any]:
    return {
        "sha256": a.sha256.hex(),
        "kind": a.kind,
        "size": a.size,
        "held": a.held,
        "complete": a.complete,
    }


def _show(args: argparse.Namespace, out: TextIO) -> int:
    cat = _catalogue(None)
    with _opened(args.db, readonly=args.export is None) as db:
        with db.read() as sql:
            row = events.get_event(sql, args.number)
            if row is None:
                raise CliInputError(f"there is no event {args.number}")
            history = events.changes(sql, row.number)
            atts = events.attachments(sql, row.number)
            dups = duplicates.find(sql, row)
        files = _export(db, atts, row.number, args.export) if args.export else []
    if args.json:
        doc = _event_json(row, cat)
        doc["changes"] = [_change_json(c) for c in history]
        doc["attachments"] = [_attachment_json(a) for a in atts]
        doc["duplicates"] = [{"number": d.number, "distance_m": round(m, 1)} for d, m in dups]
        doc["exported"] = files
        out.write(json.dumps(doc) + "\n")
        return EXIT_OK
    out.write(f"event {row.number}: {_name(cat, row.category)} — {label(row.status)}\n")
    out.write(f"  reported by {', '.join(row.reporters)} at {_when(row.reported_ms)}\n")
    out.write(f"  place {_place(row)}\n")
    if row.note:
        out.write(f"  note: {row.note}\n")
    if row.assignee:
        out.write(f"  assigned to {row.assignee}, due {_when(row.deadline_ms)}\n")
    for c in history:
        out.write(f"  {_when(c.at_ms)}  {label(c.from_)} → {label(c.to)} by {c.by} {c.detail}\n")
    for a in atts:
        state = "held" if a.complete else f"{a.held} of {a.size} bytes"
        out.write(f"  attachment {a.sha256.hex()[:16]} kind {a.kind}, {a.size} bytes, {state}\n")
    for d, m in dups:
        out.write(f"  likely duplicate of event {d.number} ({m:.0f} m away): merge it?\n")
    for f in files:
        out.write(f"  exported {f}\n")
    return EXIT_OK


# --- actions -------------------------------------------------------------------------------------


def _action(args: argparse.Namespace, now_ms: int) -> lifecycle.Action:
    c = args.events_command
    if c == "accept":
        return lifecycle.Accept()
    if c == "reject":
        return lifecycle.Reject(args.reason)
    if c == "dispatch":
        who = args.to if args.to is not None else f"{lifecycle.TEAM_PREFIX}{args.team}"
        return lifecycle.Dispatch(who, now_ms + round(args.within * 3_600_000))
    if c == "start":
        return lifecycle.Start()
    if c == "resolve":
        return lifecycle.Resolve(args.result, args.report)
    if c == "close":
        return lifecycle.Close()
    if c == "reopen":
        return lifecycle.Reopen(args.reason)
    return lifecycle.Merge(args.into)


def _act(args: argparse.Namespace, out: TextIO) -> int:
    now = int(time.time() * 1000)
    action = _action(args, now)
    with _opened(args.db, readonly=False) as db, db.write() as sql:
        report = getattr(args, "report", None)
        if report is not None and events.get_event(sql, report) is None:
            raise CliInputError(f"--report: there is no event {report}")
        try:
            done = events.act(sql, args.number, action, by=args.by, at_ms=now)
        except Refused as exc:
            raise CliInputError(str(exc)) from exc
        row = events.get_event(sql, args.number)
        assert row is not None  # `act` refuses an event that does not exist
    change = done.changes[0]
    # after the COMMIT: a device is never told of a change the center does not hold
    sent = _send(args, lambda s: notify.sign_statuses(s, row, change, done.notify, now_ms=now))
    if args.json:
        doc = {
            "event": change.event,
            "from": label(change.from_),
            "to": label(change.to),
            "by": change.by,
            "at_ms": change.at_ms,
            "detail": change.detail,
            "notify": list(done.notify),
            "sent": [{"device": c.device, "number": c.number} for c in sent],
        }
        out.write(json.dumps(doc) + "\n")
        return EXIT_OK
    tell = ", ".join(done.notify) or "no device"
    detail = f" ({change.detail})" if change.detail else ""
    told = "told" if sent else "to tell"
    out.write(
        f"event {change.event}: {label(change.from_)} → {label(change.to)}{detail} by "
        f"{change.by}; {told}: {tell}\n"
    )
    return EXIT_OK


def _send(args: argparse.Namespace, sign: Callable[[CommandSigner], list[Signed]]) -> list[Signed]:
    """With --fleet: number and sign the commands `sign` makes, and publish them; [] else.
    The numbers live in the SQLite center database (center/commands.py)."""
    if args.fleet is None:
        return []
    if is_postgres(args.db):
        raise CliInputError(
            "--fleet: telling devices needs the center's SQLite database (command numbers "
            "are kept there); act without --fleet and send from the SQLite center"
        )
    try:
        key = load_center_key(args.fleet)
        tls = center_tls(args.tls)
        with CommandSigner(key, Path(args.db)) as signer:
            signed = sign(signer)
    except (ProvisioningError, CenterDbError, LocalError) as exc:
        raise CliInputError(str(exc)) from exc
    if signed:
        host, port = args.broker
        try:
            asyncio.run(publish_all(host, port, signed, tls=tls))
        except DispatchError as exc:
            raise CliFailure(f"{exc} (signed, not delivered: send again)") from exc
    return signed


def _fleet_devices(fleet: Path) -> list[str]:
    path = fleet / "registry.db"
    try:
        with Registry(path, readonly=True) as registry:
            return registry.devices()
    except (RegistryError, ProvisioningError, OSError) as exc:
        raise CliInputError(f"--fleet: {path} is not a readable device registry ({exc})") from exc


def _catalogue_command(args: argparse.Namespace, out: TextIO) -> int:
    cat = _catalogue(args.catalogue)
    sent: list[Signed] = []
    if args.send:
        if args.fleet is None:
            raise CliInputError("--send needs --fleet (the center's signing key)")
        if args.team is not None and not args.device:
            raise CliInputError("--team names the devices given with --device")
        devices = args.device or _fleet_devices(args.fleet)
        if not devices:
            raise CliInputError(f"no device in fleet {args.fleet} to send the catalogue to")
        now = int(time.time() * 1000)
        sent = _send(
            args, lambda s: notify.sign_catalogue(s, cat, devices, now_ms=now, team=args.team)
        )
    if args.json:
        doc = {
            "version": cat.version,
            "categories": [
                {"code": c.code, "name_zh": c.name_zh, "name_en": c.name_en, "group": c.group,
                 "team": c.team}
                for c in cat.categories
            ],
            "sent": [{"device": c.device, "number": c.number} for c in sent],
        }  # fmt: skip
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return EXIT_OK
    out.write(f"catalogue version {cat.version}, {len(cat.categories)} categories\n")
    for c in cat.categories:
        out.write(f"{c.code:>6}  {c.name_en} / {c.name_zh}  ({c.group}; {c.team})\n")
    if sent:
        out.write(f"sent to {len(sent)} device(s): {', '.join(c.device for c in sent)}\n")
    return EXIT_OK


@cli_handler
def events_command(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.events_command == "list":
        return _list(args, out)
    if args.events_command == "show":
        return _show(args, out)
    if args.events_command == "catalogue":
        return _catalogue_command(args, out)
    return _act(args, out)


# --- the API -------------------------------------------------------------------------------------


async def serve_api(
    db: EventDb,
    keys_file: Path,
    listen: tuple[str, int],
    stop: asyncio.Event,
    *,
    catalogue: Path | None = None,
    media_base: str | None = None,
) -> None:
    """Serve the Open311 API over `db` on `listen` until `stop` is set; prints the address
    once listening. `picket center api` and `picket center run --api` both run this."""
    from center.events.api import Api, KeysError, load_keys, serve

    try:
        keys = load_keys(keys_file)
    except KeysError as exc:
        raise CliInputError(f"--keys: {exc}") from exc
    api = Api(db, _catalogue(catalogue), keys, lambda: int(time.time() * 1000),
              media_base=media_base)  # fmt: skip
    host, port = listen

    def ready(bound: int) -> None:
        print(f"listening on http://{host}:{bound}", flush=True)

    try:
        await serve(api, host, port, stop, ready)
    except OSError as exc:
        raise CliInputError(f"{host}:{port}: {exc.strerror or exc}") from exc


@cli_handler
def api_command(args: argparse.Namespace) -> int:
    with _opened(args.db, readonly=False) as db:

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await serve_api(db, args.keys, args.listen, stop, catalogue=args.catalogue,
                            media_base=args.media_base)  # fmt: skip

        asyncio.run(run())
    return EXIT_OK


HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("center", "events"): events_command,
    ("center", "api"): api_command,
}
