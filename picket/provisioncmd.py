"""`picket provision …` (the technician's machine) and `picket agent enroll | install` (the
device): enrolling devices into a fleet, from a terminal.

Enrollment crosses two machines, and only two files cross between them: the device makes
its keys and a request (`agent enroll`), the technician checks what the request says and
answers it with a signed bundle (`provision approve`), and the device installs the bundle
(`agent install`). No private key is ever copied. The steps themselves live in
agent/enroll.py and provisioning/ (fleet, brokerconf, label, verify); this module parses
arguments, turns the steps' refusals into messages that name the file or field at fault,
and prints what a technician needs next: the fingerprints to compare, the next command.

Each handler takes the parsed arguments and returns the exit code, so picket/cli.py merges
`HANDLERS` into its own table. Refusals are raised inside as `Refused` and printed here
(`picket: error: …`, exit 2) because picket/cli.py imports this module, not the reverse.
Exit codes as everywhere in `picket`: 0 done, 1 the work failed (a batch with a failed
device, a verification with a failed check, a disk that refused a write), 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import pwd
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from agent.enroll import CENTER, CERT, PIN, EnrollError, enroll, install, write_public
from agent.enrollment import decode_request
from agent.errors import AgentError
from agent.planfile import check_file
from picket.argtypes import positive_int
from picket.progress import Progress
from provisioning.fleet import DEFAULT_BROKER_PORT, TIERS, Fleet, check_device_id
from provisioning.label import LabelError, write_label
from provisioning.registry import RegistryError, fingerprint

__all__ = ["HANDLERS", "add_agent_parsers", "add_provision_parsers", "default_device_dir"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2  # as in picket.cli
DEFAULT_BROKER = ("127.0.0.1", DEFAULT_BROKER_PORT)
MAX_FACT = 200  # agent/enrollment.py refuses longer fact values
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_\[\]-]{0,252}")
FLEET_FP = re.compile(r"[0-9a-f]{32}")

Handler = Callable[[argparse.Namespace], int]
if TYPE_CHECKING:  # not subscriptable at run time
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


class Refused(Exception):
    """Input refused: printed as `picket: error: …`, exit code 2."""


class Failed(Exception):
    """The work failed (a write to disk): printed as `picket: error: …`, exit code 1."""


# --- argument types -------------------------------------------------------------------------


def _host(text: str) -> str:
    # Hosts end up in config.toml and certificates: letters, digits and . : _ - [ ] only.
    if not HOST.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name or address")
    return text


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:8883)")
    return _host(host), int(port)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def _device_id(text: str) -> str:
    try:
        check_device_id(text)
    except RegistryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _name(text: str) -> str:
    """A team's or fleet's name: written into config.toml and certificates, so id-like."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return text


def _ids(text: str) -> list[str]:
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("name at least one id, separated by commas")
    for device in ids:
        _device_id(device)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise argparse.ArgumentTypeError(f"id {dup!r} is named twice")
    return ids


def _fact(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (for example site=depot-3)")
    if len(key) > MAX_FACT or len(value) > MAX_FACT:
        raise argparse.ArgumentTypeError(f"fact {key[:40]!r}: at most {MAX_FACT} characters")
    return key, value


def _fleet_fingerprint(text: str) -> str:
    """As `provision init` prints it; spaces, case and dashes are forgiven when typed."""
    digits = re.sub(r"[\s-]", "", text).lower()
    if not FLEET_FP.fullmatch(digits):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fleet fingerprint (32 hex digits, as `picket provision init` "
            "prints it: xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx)"
        )
    return "-".join(digits[i : i + 4] for i in range(0, 32, 4))


# --- parsers --------------------------------------------------------------------------------


def _fleet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", type=Path, required=True, help="fleet folder (provision init)")


def _assignment_args(p: argparse.ArgumentParser, *, plan: bool = True) -> None:
    p.add_argument("--tier", choices=TIERS, help="the device's patrol tier")
    p.add_argument("--team", type=_name, help="the device's team")
    if plan:
        p.add_argument("--plan", type=Path, help="initial patrol plan (GeoJSON, docs/plans.md)")
    p.add_argument(
        "--broker", type=_host_port, help="HOST:PORT the device connects to (the fleet's)"
    )


def add_provision_parsers(prov: SubParsers) -> None:
    """Add init, approve, device, batch, center, broker-config, revoke, list, verify and
    label to the `provision` command's sub-commands."""
    _enrolling_parsers(prov)
    _fleet_parsers(prov)


def _enrolling_parsers(prov: SubParsers) -> None:
    p = prov.add_parser("init", help="make a fleet folder: CA, center key, registry")
    _fleet_arg(p)
    p.add_argument("--name", type=_name, help="the fleet's name (default: the folder's)")
    p.add_argument(
        "--broker",
        type=_host_port,
        help=f"HOST:PORT devices connect to ({DEFAULT_BROKER[0]}:{DEFAULT_BROKER[1]})",
    )

    p = prov.add_parser("approve", help="answer a device's enrollment request with a bundle")
    p.add_argument("request", type=Path, metavar="REQUEST", help="the device's request file")
    _fleet_arg(p)
    p.add_argument("--id", type=_device_id, required=True, help="device id to give, e.g. h0001")
    _assignment_args(p)
    p.add_argument("--replace", action="store_true", help="give an enrolled id to this device")
    p.add_argument("--label", type=Path, metavar="DIR", help="also write its QR label here")
    p.add_argument("--out", type=Path, required=True, metavar="BUNDLE", help="bundle to write")

    p = prov.add_parser("device", help="enroll, approve and install in one step (benches, CI)")
    _fleet_arg(p)
    p.add_argument("--id", type=_device_id, required=True, help="device id, e.g. h0001")
    p.add_argument("--out", type=Path, required=True, help="device folder to write")
    _assignment_args(p)
    p.add_argument("--label", type=Path, metavar="DIR", help="also write its QR label here")

    p = prov.add_parser("batch", help="enroll many devices in one step, one folder each")
    _fleet_arg(p)
    p.add_argument("--out", type=Path, required=True, help="folder for the device folders")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", type=_ids, help="device ids: h0001,h0002")
    which.add_argument("--count", type=positive_int, help="this many ids: PREFIX + number")
    p.add_argument("--prefix", type=_name, default="h", help="with --count: id prefix (h)")
    p.add_argument("--start", type=positive_int, default=1, help="with --count: first number")
    p.add_argument("--width", type=positive_int, default=4, help="with --count: digits (4)")
    _assignment_args(p, plan=False)
    p.add_argument("--replace", action="store_true", help="re-enroll ids already enrolled")
    p.add_argument("--labels", action="store_true", help="write each device's QR label")
    p.add_argument("--json", action="store_true", help="print one JSON object last")


def _fleet_parsers(prov: SubParsers) -> None:
    p = prov.add_parser("center", help="the center's broker certificate and key")
    _fleet_arg(p)
    p.add_argument("--out", type=Path, required=True, help="folder to write")

    p = prov.add_parser("broker-config", help="a Mosquitto configuration: TLS, ACL, CRL")
    _fleet_arg(p)
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--port", type=_port, required=True, help="port to listen on")
    p.add_argument(
        "--host",
        type=_host,
        action="append",
        help="a name or address devices reach the broker by (repeat; default: the fleet's "
        "broker host, 127.0.0.1, localhost)",
    )
    p.add_argument("--bind", type=_host, help="listen on this address only (default: all)")
    p.add_argument(
        "--user", help="account Mosquitto runs as (default: mosquitto, when root and it exists)"
    )

    p = prov.add_parser("revoke", help="revoke a device's keys and certificates")
    _fleet_arg(p)
    p.add_argument("--id", type=_device_id, required=True, help="device id")

    p = prov.add_parser("list", help="the fleet's devices")
    _fleet_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = prov.add_parser("verify", help="check a bundle or a device folder against the fleet")
    p.add_argument("bundle", type=Path, nargs="?", metavar="BUNDLE", help="a bundle file")
    p.add_argument("--dir", type=Path, metavar="DEVICE_DIR", help="an installed device folder")
    _fleet_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = prov.add_parser("label", help="write a registered device's QR label (PNG and SVG)")
    _fleet_arg(p)
    p.add_argument("--id", type=_device_id, required=True, help="device id")
    p.add_argument("--out", type=Path, required=True, help="folder to write")


def default_device_dir() -> Path:
    return Path("/var/lib/picket") if os.geteuid() == 0 else Path.home() / ".local/share/picket"


def add_agent_parsers(agent: SubParsers) -> None:
    """Add `enroll` and `install` to the `agent` command's sub-commands."""
    where = "device folder (/var/lib/picket as root, else ~/.local/share/picket)"
    p = agent.add_parser("enroll", help="make this device's keys and an enrollment request")
    p.add_argument("--out", type=Path, required=True, metavar="REQUEST", help="request to write")
    p.add_argument("--dir", type=Path, metavar="DEVICE_DIR", help=where)
    p.add_argument(
        "--fleet-fingerprint",
        type=_fleet_fingerprint,
        metavar="FP",
        help="accept bundles of this fleet only (as `picket provision init` printed it)",
    )
    p.add_argument(
        "--fact",
        type=_fact,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="shown to the technician at approval (repeat), e.g. site=depot-3",
    )
    p.add_argument("--force", action="store_true", help="replace an installed identity")

    p = agent.add_parser("install", help="install the bundle the technician made")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle file")
    p.add_argument("--dir", type=Path, metavar="DEVICE_DIR", help=where)


# --- shared steps ---------------------------------------------------------------------------


def _handler(fn: Handler) -> Handler:
    """Print a refusal or failure raised inside `fn` and return its exit code."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except Refused as exc:
            print(f"picket: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except Failed as exc:
            print(f"picket: error: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return run


def _now_ms() -> int:
    return int(time.time() * 1000)


def _utc(ms: int | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return "-" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime(fmt)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@contextmanager
def _fleet(folder: Path) -> Iterator[Fleet]:
    try:
        fleet = Fleet(folder)
    except RegistryError as exc:
        raise Refused(str(exc)) from exc
    try:
        yield fleet
    finally:
        fleet.close()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise Refused(f"no {what} at {path}") from None
    except OSError as exc:
        raise Refused(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _writable(path: Path) -> None:
    """Refuse an output file whose folder is missing before any work is done."""
    if not path.parent.is_dir():
        raise Refused(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise Refused(f"cannot write {path}: it is a folder")


def _write(path: Path, data: bytes) -> None:
    try:
        write_public(path, data)
    except OSError as exc:
        raise Failed(f"writing {path} failed: {exc.strerror or exc}") from exc


def _plan(path: Path | None) -> bytes | None:
    """The plan file's bytes, after the agent's own checks (a device must not get a plan it
    would refuse)."""
    if path is None:
        return None
    report = check_file(path)
    if report.plan is None:
        raise Refused(f"plan {path}: " + "; ".join(report.problems))
    return _read(path, "plan")


def _label(device: str, key_fingerprint: str, out: Path) -> tuple[Path, Path]:
    try:
        return write_label(device, key_fingerprint, out, stem=device)
    except LabelError as exc:
        raise Refused(str(exc)) from exc
    except OSError as exc:
        raise Failed(f"writing the label into {out} failed: {exc.strerror or exc}") from exc


# --- provision init -------------------------------------------------------------------------


@_handler
def init(args: argparse.Namespace) -> int:
    folder: Path = args.fleet
    existed = (folder / "ca.crt").exists()
    host, port = args.broker or DEFAULT_BROKER
    try:
        fleet = Fleet.init(folder, _now_ms(), name=args.name, broker_host=host, broker_port=port)
    except RegistryError as exc:
        raise Refused(str(exc)) from exc
    except OSError as exc:
        raise Refused(f"cannot make fleet folder {folder}: {exc.strerror or exc}") from exc
    with fleet:
        if existed:
            print(f"fleet {fleet.name!r} already exists in {folder}: nothing changed")
            fleet_host, fleet_port = fleet.broker()
            if args.broker is not None and args.broker != (fleet_host, fleet_port):
                print(
                    f"picket: note: --broker {host}:{port} not applied; devices of this fleet "
                    f"connect to {fleet_host}:{fleet_port} (give another per device with "
                    "`provision approve --broker`)",
                    file=sys.stderr,
                )
            if args.name is not None and args.name != fleet.name:
                print(f"picket: note: --name {args.name} not applied", file=sys.stderr)
        else:
            print(f"made fleet {fleet.name!r} in {folder}:")
            print("  ca.key, ca.crt         broker TLS certificate authority (key 0600)")
            print("  center.key, center.pub the center's command and bundle key (key 0600)")
            print("  registry.db            devices, keys and certificates")
            print("  crl.pem                revoked certificates")
            print(f"  devices connect to {host}:{port}")
        print(f"fleet fingerprint: {fleet.fingerprint}")
        print(
            "technicians compare it when enrolling a device: "
            f"picket agent enroll --fleet-fingerprint {fleet.fingerprint} --out request.cbor"
        )
    return EXIT_OK


# --- agent enroll | install -----------------------------------------------------------------


@_handler
def agent_enroll(args: argparse.Namespace) -> int:
    folder: Path = args.dir or default_device_dir()
    out: Path = args.out
    _writable(out)
    facts = dict(args.fact)
    try:
        raw = enroll(
            folder, _now_ms(), facts=facts, fleet_pin=args.fleet_fingerprint, force=args.force
        )
    except EnrollError as exc:
        raise Refused(str(exc)) from exc
    except OSError as exc:
        raise Refused(
            f"cannot make keys in {folder}: {exc.strerror or exc} (run as root, or pass --dir)"
        ) from exc
    _write(out, raw)
    key_fp = fingerprint(decode_request(raw).signing_key)
    print(f"made this device's keys in {folder} (private, never copied) and request {out}")
    print(f"device key fingerprint: {key_fp}")
    if args.fleet_fingerprint is not None:
        print(f"only bundles of fleet {args.fleet_fingerprint} will be installed")
    else:
        print(
            "picket: warning: no --fleet-fingerprint: the first bundle answering this request "
            "will be trusted, whichever fleet signed it; compare the fleet fingerprint "
            "`agent install` prints with the one `provision init` printed",
            file=sys.stderr,
        )
    print("next:")
    print(f"  1. take {out.name} to the technician's machine; there, check that")
    print(f"       picket provision approve {out.name} --fleet FLEET --id ID --out bundle.cbor")
    print(f"     shows key fingerprint {key_fp}")
    print("  2. bring bundle.cbor back and run here:")
    print(f"       picket agent install bundle.cbor --dir {folder}")
    return EXIT_OK


@_handler
def agent_install(args: argparse.Namespace) -> int:
    folder: Path = args.dir or default_device_dir()
    raw = _read(args.bundle, "bundle")
    trusted_before = (folder / PIN).exists() or (folder / CENTER).exists()
    try:
        done = install(folder, raw)
    except AgentError as exc:
        raise Refused(f"bundle {args.bundle} refused: {exc}") from exc
    except OSError as exc:
        raise Failed(f"installing into {folder} failed: {exc.strerror or exc}") from exc
    b = done.bundle
    until = b.certificate().not_valid_after_utc
    print(f"installed {b.device} from fleet {b.fleet!r} into {folder}")
    print(f"fleet fingerprint: {b.fingerprint}")
    print(
        f"broker: {b.broker_host}:{b.broker_port} (TLS, certificate valid until {until:%Y-%m-%d})"
    )
    if not trusted_before:
        print(
            "picket: warning: this device was not told which fleet to trust: check that the "
            f"fleet fingerprint above ({b.fingerprint}) is the one `provision init` printed",
            file=sys.stderr,
        )
    print(f"start it with: picket agent run --config {done.config}")
    return EXIT_OK


# --- provision approve | device | label -----------------------------------------------------


def _refuse_revoked(fleet: Fleet, device_id: str, key: bytes, *, replace: bool) -> None:
    """Revocation must not be undone by approving again: Fleet.approve would clear the
    device's revocation and issue a certificate the CRL does not list, while the center
    keeps refusing the revoked key's records."""
    for known in fleet.registry.trust(device_id):
        if known.revoked_ms is not None and known.key.public_bytes_raw() == key:
            raise Refused(
                f"this request's key {fingerprint(key)} was revoked at {_utc(known.revoked_ms)}: "
                "the device must enroll again with new keys (picket agent enroll --force)"
            )
    entry = fleet.registry.entry(device_id)
    if entry is not None and entry.revoked_ms is not None and not replace:
        raise Refused(
            f"{device_id} was revoked at {_utc(entry.revoked_ms)}; pass --replace to give its id "
            "to this device"
        )


@_handler
def approve(args: argparse.Namespace) -> int:
    raw = _read(args.request, "enrollment request")
    try:
        req = decode_request(raw)
    except AgentError as exc:
        raise Refused(f"enrollment request {args.request} refused: {exc}") from exc
    plan = _plan(args.plan)
    _writable(args.out)
    key_fp = fingerprint(req.signing_key)
    print(f"request {args.request}, made {_utc(req.created_ms)} (the device's clock)")
    print(f"  device key fingerprint: {key_fp}  (compare with what the device printed)")
    width = max((len(k) for k in req.facts), default=0)
    for k, v in sorted(req.facts.items()):
        print(f"  {k:<{width}}  {v}")
    with _fleet(args.fleet) as fleet:
        _refuse_revoked(fleet, args.id, req.signing_key, replace=args.replace)
        try:
            approved = fleet.approve(
                raw,
                args.id,
                _now_ms(),
                tier=args.tier,
                team=args.team,
                plan=plan,
                broker=args.broker,
                replace=args.replace,
            )
        except RegistryError as exc:
            raise Refused(str(exc)) from exc
        broker = args.broker or fleet.broker()
        fleet_fp = fleet.fingerprint
    _write(args.out, approved.bundle)
    print(f"approved {approved.device}: bundle {args.out} (certificate {approved.cert_serial:x})")
    print(f"  broker {broker[0]}:{broker[1]}, fleet fingerprint {fleet_fp}")
    if args.label is not None:
        png, svg = _label(approved.device, approved.fingerprint, args.label)
        print(f"  label {png}, {svg}")
    print(f"next, on the device: picket agent install {args.out.name}")
    return EXIT_OK


@_handler
def device(args: argparse.Namespace) -> int:
    from provisioning.device import provision_device

    plan = _plan(args.plan)
    made = not (args.fleet / "ca.crt").exists()
    now = _now_ms()
    try:
        # As before enrollment split in two, a missing fleet is made on the way.
        with Fleet.init(args.fleet, now) as fleet:
            host, port = args.broker or fleet.broker()
            files = provision_device(
                fleet,
                args.id,
                args.out,
                broker_host=host,
                broker_port=port,
                now_ms=now,
                tier=args.tier,
                team=args.team,
                plan=plan,
            )
            fleet_fp = fleet.fingerprint
    except RegistryError as exc:
        raise Refused(str(exc)) from exc
    except OSError as exc:
        raise Refused(f"cannot make fleet folder {args.fleet}: {exc.strerror or exc}") from exc
    print(f"provisioned {files.device}: {files.config} (key {files.key})")
    if made:
        print(f"made fleet {args.fleet}, fingerprint {fleet_fp}", file=sys.stderr)
    print(f"device key fingerprint {files.fingerprint}", file=sys.stderr)
    if args.label is not None:
        png, svg = _label(files.device, files.fingerprint, args.label)
        print(f"label {png}, {svg}", file=sys.stderr)
    return EXIT_OK


@_handler
def label(args: argparse.Namespace) -> int:
    with _fleet(args.fleet) as fleet:
        entry = fleet.registry.entry(args.id)
    if entry is None:
        raise Refused(f"no device {args.id!r} in fleet {args.fleet}")
    if entry.revoked_ms is not None:
        print(
            f"picket: warning: {args.id} was revoked at {_utc(entry.revoked_ms)}",
            file=sys.stderr,
        )
    png, svg = _label(entry.id, entry.fingerprint, args.out)
    print(f"label of {entry.id} (key {entry.fingerprint}): {png}, {svg}")
    return EXIT_OK


# --- provision batch ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    device: str
    status: str  # enrolled | skipped | failed
    detail: str


def _batch_ids(args: argparse.Namespace) -> list[str]:
    if args.ids is not None:
        ids: list[str] = args.ids
        return ids
    last = args.start + args.count - 1
    if len(str(last)) > args.width:
        raise Refused(
            f"--start {args.start} --count {args.count} reaches {last}, more than "
            f"--width {args.width} digits"
        )
    ids = [f"{args.prefix}{n:0{args.width}d}" for n in range(args.start, last + 1)]
    for device_id in (ids[0], ids[-1]):
        try:
            check_device_id(device_id)
        except RegistryError as exc:
            raise Refused(f"--prefix {args.prefix!r}: {exc}") from exc
    return ids


def _batch_one(fleet: Fleet, device_id: str, args: argparse.Namespace) -> _Outcome:
    folder: Path = args.out / device_id
    replace: bool = args.replace
    if not replace and fleet.registry.entry(device_id) is not None:
        return _Outcome(device_id, "skipped", "already enrolled (--replace re-enrolls it)")
    if not replace and (folder / CERT).exists():
        return _Outcome(
            device_id,
            "failed",
            f"{folder} already holds an installed identity ({CERT}) that this fleet does not "
            "know; pass --replace to make new keys there",
        )
    now = _now_ms()
    try:
        request = enroll(folder, now, fleet_pin=fleet.fingerprint, force=replace)
        approved = fleet.approve(
            request,
            device_id,
            now,
            tier=args.tier,
            team=args.team,
            broker=args.broker,
            replace=replace,
        )
        install(folder, approved.bundle)
        if args.labels:
            write_label(device_id, approved.fingerprint, folder, stem=device_id)
    except (AgentError, RegistryError, LabelError) as exc:
        return _Outcome(device_id, "failed", str(exc))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _Outcome(device_id, "failed", f"cannot write{where}: {exc.strerror or exc}")
    return _Outcome(device_id, "enrolled", approved.fingerprint)


@_handler
def batch(args: argparse.Namespace) -> int:
    ids = _batch_ids(args)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Refused(f"cannot make {args.out}: {exc.strerror or exc}") from exc
    progress = Progress()
    outcomes: list[_Outcome] = []
    start = time.monotonic()
    with _fleet(args.fleet) as fleet:
        fleet_fp = fleet.fingerprint
        for n, device_id in enumerate(ids):
            progress.update(f"enrolling {device_id}: {n} of {len(ids)} done")
            outcomes.append(_batch_one(fleet, device_id, args))
    seconds = time.monotonic() - start
    count = {s: sum(o.status == s for o in outcomes) for s in ("enrolled", "skipped", "failed")}
    rate = count["enrolled"] / seconds if seconds > 0 else 0.0
    summary = (
        f"enrolled {count['enrolled']}, skipped {count['skipped']}, failed {count['failed']} "
        f"of {_plural(len(ids), 'device')} in {seconds:.1f} s ({rate:.1f} per second)"
    )
    progress.done(summary)
    failures = [o for o in outcomes if o.status == "failed"]
    if args.json:
        doc = {
            **count,
            "devices": len(ids),
            "seconds": round(seconds, 3),
            "per_second": round(rate, 2),
            "fleet_fingerprint": fleet_fp,
            "out": str(args.out),
            "skipped_ids": [o.device for o in outcomes if o.status == "skipped"],
            "failures": [{"id": o.device, "error": o.detail} for o in failures],
        }
        print(json.dumps(doc, sort_keys=True))
    else:
        for o in failures:
            print(f"FAILED {o.device}: {o.detail}")
        skipped = [o.device for o in outcomes if o.status == "skipped"]
        if skipped:
            print(f"skipped (already enrolled): {', '.join(skipped)}")
        print(f"{summary}; device folders in {args.out}")
    return EXIT_FAILED if failures else EXIT_OK


# --- provision center | broker-config | revoke ----------------------------------------------


@_handler
def center(args: argparse.Namespace) -> int:
    with _fleet(args.fleet) as fleet:
        try:
            out = fleet.issue_center(args.out, _now_ms())
        except RegistryError as exc:
            raise Refused(str(exc)) from exc
        except OSError as exc:
            raise Failed(f"writing into {args.out} failed: {exc.strerror or exc}") from exc
    print(f"wrote {out}: center.crt, center.key (0600), ca.crt")
    print("the center connects to the broker with them as user picket-center")
    return EXIT_OK


def _default_broker_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return "mosquitto"


@_handler
def broker_config(args: argparse.Namespace) -> int:
    from provisioning.brokerconf import write_broker_config

    user = args.user if args.user is not None else _default_broker_user()
    with _fleet(args.fleet) as fleet:
        fleet_host, fleet_port = fleet.broker()
        hosts = tuple(dict.fromkeys(args.host or (fleet_host, "127.0.0.1", "localhost")))
        try:
            conf = write_broker_config(
                fleet, args.out, args.port, _now_ms(), hosts=hosts, bind=args.bind, user=user
            )
        except RegistryError as exc:
            raise Refused(str(exc)) from exc
        except OSError as exc:
            raise Failed(f"writing into {args.out} failed: {exc.strerror or exc}") from exc
    print(f"wrote {args.out}: mosquitto.conf, acl, ca.crt, server.crt, server.key, crl.pem")
    print(f"  the broker's certificate names {', '.join(hosts)}")
    if user is not None:
        print(f"  Mosquitto runs as {user}")
    if fleet_host not in hosts:
        print(
            f"picket: warning: devices of this fleet connect to {fleet_host}, which the "
            "certificate does not name: they will refuse the broker (add --host "
            f"{fleet_host})",
            file=sys.stderr,
        )
    if args.port != fleet_port:
        print(
            f"picket: note: devices of this fleet connect to port {fleet_port}, not "
            f"{args.port}, unless approved with --broker",
            file=sys.stderr,
        )
    print(f"mosquitto -c {conf.resolve()}")
    return EXIT_OK


@_handler
def revoke(args: argparse.Namespace) -> int:
    now = _now_ms()
    with _fleet(args.fleet) as fleet:
        entry = fleet.registry.entry(args.id)
        if entry is None:
            raise Refused(f"no device {args.id!r} in fleet {args.fleet}")
        try:
            count = fleet.revoke(args.id, now)
        except RegistryError as exc:
            raise Refused(str(exc)) from exc
        except OSError as exc:
            raise Failed(f"rewriting the CRL failed: {exc.strerror or exc}") from exc
        brokers = json.loads(fleet.registry.setting("broker_dirs") or "[]")
        crls = [fleet.crl_path] + [Path(d) / "crl.pem" for d in brokers if Path(d).is_dir()]
    if entry.revoked_ms is not None:
        print(f"{args.id} was already revoked at {_utc(entry.revoked_ms)}")
    print(f"revoked {args.id}: {_plural(count, 'certificate')} revoked")
    print(f"the center refuses records {args.id} signed after {_utc(now, '%Y-%m-%d %H:%M:%S')}")
    for path in crls:
        print(f"CRL rewritten: {path}")
    print(
        "the broker reads the CRL when it starts or reloads: `kill -HUP` it (or restart it; "
        "a restart also drops a connection the device already holds)"
    )
    return EXIT_OK


# --- provision list | verify ----------------------------------------------------------------


@_handler
def list_devices(args: argparse.Namespace) -> int:
    with _fleet(args.fleet) as fleet:
        entries = fleet.registry.entries()
        name, fleet_fp = fleet.name, fleet.fingerprint
    if args.json:
        doc = {"fleet": name, "fingerprint": fleet_fp, "devices": [e.as_dict() for e in entries]}
        print(json.dumps(doc, sort_keys=True))
        return EXIT_OK
    rows = [
        (
            e.id,
            e.tier or "-",
            e.team or "-",
            e.fingerprint,
            _utc(e.cert_not_after_ms, "%Y-%m-%d"),
            _utc(e.revoked_ms, "%Y-%m-%d %H:%M"),
        )
        for e in entries
    ]
    head = ("DEVICE", "TIER", "TEAM", "KEY FINGERPRINT", "CERT EXPIRES", "REVOKED")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=True)).rstrip())
    revoked = sum(e.revoked_ms is not None for e in entries)
    print(f"fleet {name} ({fleet_fp}): {_plural(len(entries), 'device')}, {revoked} revoked")
    return EXIT_OK


@_handler
def verify(args: argparse.Namespace) -> int:
    from provisioning.verify import all_ok, verify_bundle, verify_device_dir

    if (args.bundle is None) == (args.dir is None):
        raise Refused("name a bundle file or --dir DEVICE_DIR (one of them)")
    with _fleet(args.fleet) as fleet:
        if args.bundle is not None:
            source = str(args.bundle)
            checks = verify_bundle(fleet, _read(args.bundle, "bundle"), _now_ms(), where=source)
        else:
            source = str(args.dir)
            checks = verify_device_dir(fleet, args.dir, _now_ms())
    ok = all_ok(checks)
    if args.json:
        rows = [{"check": c.name, "ok": c.ok, "detail": c.detail} for c in checks]
        print(json.dumps({"source": source, "ok": ok, "checks": rows}, sort_keys=True))
        return EXIT_OK if ok else EXIT_FAILED
    for c in checks:
        print(f"{'ok' if c.ok else 'FAILED':<6}  {c.name}: {c.detail}")
    failed = sum(not c.ok for c in checks)
    if ok:
        print(f"{source}: all {len(checks)} checks passed")
    else:
        print(f"{source}: {failed} of {_plural(len(checks), 'check')} FAILED")
    return EXIT_OK if ok else EXIT_FAILED


HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("provision", "init"): init,
    ("provision", "approve"): approve,
    ("provision", "device"): device,
    ("provision", "batch"): batch,
    ("provision", "center"): center,
    ("provision", "broker-config"): broker_config,
    ("provision", "revoke"): revoke,
    ("provision", "list"): list_devices,
    ("provision", "verify"): verify,
    ("provision", "label"): label,
    ("agent", "enroll"): agent_enroll,
    ("agent", "install"): agent_install,
}
