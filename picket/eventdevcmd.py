"""`picket event report|list --dir DEVICE`: field events on the device, by hand.

`report` stores one event as the member's screen does (agent/events/report.py): photos from
files, re-encoded without their metadata, a note, a place picked by `--lat`/`--lon` (none
given: unknown, the command has no fix), the time from the system clock (or the last time
the agent wrote down, if the clock is behind it). It prints the record's sequence number
and each attachment's digest; the agent uploads them when it runs. `list` prints the
device's own events and where each stands, as status commands from the center said.

DEVICE is a device folder (its config.toml names the key and the outbox; attachments.db is
beside the outbox). Not while `picket agent run` holds the same folder: the outbox is one
writer's. Exit codes: 0 done, 1 the work failed (photo storage full, a disk), 2 bad input
(not an image, an unknown category, a note too long, a folder that is not a device's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from picket.errors import EXIT_OK, CliFailure, CliInputError, Handler, cli_handler

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.config import AgentConfig
    from agent.events.attachstore import AttachmentStore
    from agent.events.mine import MyEvent, MyEvents
    from agent.store.outbox import Outbox

__all__ = ["HANDLERS", "add_parsers"]

KINDS = {1: "photo", 2: "note", 3: "voice"}


def _category(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a category code (a number)") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"category {value}: a code 1..65535")
    return value


def _degrees(limit: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of degrees") from None
        if not -limit <= value <= limit:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"{text}: degrees from -{limit:g} to {limit:g}")
        return value

    return parse


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("event", help="field events on the device").add_subparsers(
        dest="event_command", required=True, metavar="COMMAND"
    )
    p = group.add_parser("report", help="report an event with photos and a note")
    p.add_argument("--dir", type=Path, required=True, metavar="DEVICE", help="device folder")
    p.add_argument("--category", type=_category, required=True, help="category code")
    p.add_argument("--note", help="the member's note (at most 500 characters)")
    p.add_argument("--photo", type=Path, action="append", default=[], metavar="FILE", help="repeat")
    p.add_argument("--lat", type=_degrees(90), help="the place picked, degrees")
    p.add_argument("--lon", type=_degrees(180), help="the place picked, degrees")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = group.add_parser("list", help="this device's events and their status")
    p.add_argument("--dir", type=Path, required=True, metavar="DEVICE", help="device folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")


@dataclass(slots=True)
class _Device:
    cfg: AgentConfig
    key: Ed25519PrivateKey
    outbox: Outbox
    store: AttachmentStore
    mine: MyEvents


@contextmanager
def _opened(folder: Path) -> Iterator[_Device]:
    from agent.config import ConfigError, load_config
    from agent.errors import StorageError
    from agent.events.attachstore import AttachmentStore
    from agent.events.mine import MyEvents, attachments_path
    from agent.store.outbox import Outbox

    config = folder / "config.toml"
    if not config.is_file():
        raise CliInputError(
            f"{folder} is not a device folder (no config.toml): give the folder "
            "`picket agent install` wrote"
        )
    try:
        cfg = load_config(config)
        key = cfg.load_key()
    except ConfigError as exc:
        raise CliInputError(str(exc)) from None
    opened: list[Outbox | AttachmentStore | MyEvents] = []
    try:
        outbox = Outbox(cfg.outbox_path, cfg.device, keys=[key.public_key()])
        opened.append(outbox)
        store = AttachmentStore(attachments_path(cfg.outbox_path), cfg.events.quota_bytes)
        opened.append(store)
        mine = MyEvents(store.path, cfg.device)
        opened.append(mine)
        yield _Device(cfg, key, outbox, store, mine)
    except StorageError as exc:
        raise CliFailure(str(exc)) from None
    finally:
        for db in reversed(opened):
            db.close()


def _read_photo(path: Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes: reencode refuses a larger photo by its length."""
    try:
        with path.open("rb") as f:
            return f.read(limit + 1)
    except OSError as exc:
        raise CliInputError(
            f"photo {path}: {exc.strerror or exc}: give a JPEG or PNG file"
        ) from None


@cli_handler
def report(args: argparse.Namespace) -> int:
    from agent.events.attachstore import QuotaFull
    from agent.events.photos import PhotoError
    from agent.events.report import Picked, ReportError, reconcile, report_event
    from agent.gnss.timekeeper import TimeKeeper
    from contract.fix import TimeSource

    if (args.lat is None) != (args.lon is None):
        raise CliInputError("--lat and --lon come together: give both, or neither")
    with _opened(args.dir) as d:
        settings = d.cfg.events
        photos = [_read_photo(p, settings.max_input_bytes) for p in args.photo]
        mono = int(time.monotonic() * 1000)
        keeper = TimeKeeper(persisted_ms=d.outbox.stored_time(), mono_ms=mono)
        stamp = keeper.observe_clock(int(time.time() * 1000), TimeSource.NTP, mono)
        reconcile(d.outbox, d.store, stamp.time_ms or 0, d.mine)
        try:
            done = report_event(
                d.outbox,
                d.store,
                d.key,
                d.cfg.device,
                category=args.category,
                stamp=stamp,
                settings=settings,
                catalogue=d.mine.catalogue(),
                note=args.note,
                photos=photos,
                photo_names=[str(p) for p in args.photo],
                place=None if args.lat is None else Picked(args.lat, args.lon),
                mine=d.mine,
            )
        except (ReportError, PhotoError) as exc:
            raise CliInputError(str(exc)) from None
        except QuotaFull as exc:
            raise CliFailure(str(exc)) from None
        if stamp.time_ms is not None:
            d.outbox.store_time(stamp.time_ms)
    out = {
        "device": d.cfg.device,
        "seq": done.seq,
        "category": args.category,
        "time_ms": done.time_ms,
        "time_source": done.time_source.name.lower(),
        "place": "unknown" if args.lat is None else "picked",
        "attachments": [
            {"kind": KINDS.get(a.kind, str(a.kind)), "sha256": a.sha256.hex(), "size": a.size}
            for a in done.attachments
        ],
    }
    if args.json:
        print(json.dumps(out))
        return EXIT_OK
    print(f"saved: event record {done.seq} of {d.cfg.device}, category {args.category}")
    for a in done.attachments:
        print(f"  {KINDS.get(a.kind, '?'):5} {a.size:>9} bytes  sha256 {a.sha256.hex()}")
    print("the agent uploads them when it is connected")
    return EXIT_OK


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _as_json(e: MyEvent) -> dict[str, object]:
    return {
        "seq": e.seq,
        "number": e.number,
        "reporter": e.reporter,
        "category": e.category,
        "time_ms": e.time_ms,
        "note": e.note,
        "photos": e.photos,
        "status": e.status.name.lower(),
        "assignee": e.assignee,
        "deadline_ms": e.deadline_ms,
        "text": e.text,
        "merged_into": e.merged_into,
        "changed_ms": e.changed_ms,
    }


@cli_handler
def list_events(args: argparse.Namespace) -> int:
    with _opened(args.dir) as d:
        events = d.mine.listed()
        catalogue = d.mine.catalogue()
        device = d.cfg.device
    if args.json:
        print(json.dumps({"device": device, "catalogue": catalogue and catalogue.version,
                          "events": [_as_json(e) for e in events]}))  # fmt: skip
        return EXIT_OK
    names = {c.code: c.name_en for c in catalogue.categories} if catalogue else {}
    if not events:
        print(f"{device}: no events yet")
        return EXIT_OK
    head = f"{'seq':>6} {'number':>7} {'reported (UTC)':16} {'status':12} {'assignee':16} "
    print(head + f"{'deadline (UTC)':16} category")
    for e in events:
        status = e.status.name.lower().replace("_", " ")
        category = f"{e.category} {names.get(e.category, '')}".strip()
        print(
            f"{e.seq or '-':>6} {e.number or '-':>7} {_when(e.time_ms):16} {status:12} "
            f"{(e.assignee or '-')[:16]:16} {_when(e.deadline_ms):16} {category}"
        )
        if e.text:
            print(f"{'':>15}{e.text}")
    return EXIT_OK


HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("event", "report"): report,
    ("event", "list"): list_events,
}
