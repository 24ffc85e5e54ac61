"""`picket provision init | approve | device | batch`: the technician's side of enrollment.

`init` makes the fleet folder (CA, center key, registry) and prints the fleet fingerprint
devices pin. `approve` is the one step that answers a real device: it prints what the
request says (key fingerprint, facts) for the technician to compare with the device's
screen, refuses a key the fleet revoked, and writes the bundle to carry back. `device` and
`batch` play both machines at once, enrolling, approving and installing into local folders,
for benches, CI and a crate of handsets; a batch carries on past a failed device and ends
with exit 1, so one bad id does not cost the rest. The steps themselves live in
provisioning/ (fleet, device, label); what is printed is what the technician needs next.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agent.identity.enroll import CERT, enroll, install
from contract.enrollment import decode_request
from contract.errors import PicketError
from picket.errors import EXIT_FAILED, EXIT_OK, cli_handler
from picket.progress import Progress
from picket.provisionargs import DEFAULT_BROKER
from picket.provisionsteps import (
    Refused,
    check_label_folder,
    check_writable,
    checked_plan,
    now_ms,
    open_fleet,
    plural,
    read_input,
    utc,
    write_device_label,
    write_output,
)
from provisioning.fleet import Fleet, check_device_id
from provisioning.label import LabelError, write_label
from provisioning.registry import RegistryError, fingerprint

__all__ = ["approve", "batch", "device", "init"]


# --- provision init -------------------------------------------------------------------------


@cli_handler
def init(args: argparse.Namespace) -> int:
    folder: Path = args.fleet
    existed = (folder / "ca.crt").exists()
    host, port = args.broker or DEFAULT_BROKER
    try:
        fleet = Fleet.init(folder, now_ms(), name=args.name, broker_host=host, broker_port=port)
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


# --- provision approve | device -------------------------------------------------------------


def _refuse_revoked(fleet: Fleet, device_id: str, key: bytes, *, replace: bool) -> None:
    """Revocation must not be undone by approving again: Fleet.approve would clear the
    device's revocation and issue a certificate the CRL does not list, while the center
    keeps refusing the revoked key's records."""
    for known in fleet.registry.trust(device_id):
        if known.revoked_ms is not None and known.key.public_bytes_raw() == key:
            raise Refused(
                f"this request's key {fingerprint(key)} was revoked at {utc(known.revoked_ms)}: "
                "the device must enroll again with new keys (picket agent enroll --force)"
            )
    entry = fleet.registry.entry(device_id)
    if entry is not None and entry.revoked_ms is not None and not replace:
        raise Refused(
            f"{device_id} was revoked at {utc(entry.revoked_ms)}; pass --replace to give its id "
            "to this device"
        )


@cli_handler
def approve(args: argparse.Namespace) -> int:
    raw = read_input(args.request, "enrollment request")
    try:
        req = decode_request(raw)
    except PicketError as exc:
        raise Refused(f"enrollment request {args.request} refused: {exc}") from exc
    plan = checked_plan(args.plan)
    check_writable(args.out)
    check_label_folder(args.label)
    key_fp = fingerprint(req.signing_key)
    print(f"request {args.request}, made {utc(req.created_ms)} (the device's clock)")
    print(f"  device key fingerprint: {key_fp}  (compare with what the device printed)")
    width = max((len(k) for k in req.facts), default=0)
    for k, v in sorted(req.facts.items()):
        print(f"  {k:<{width}}  {v}")
    with open_fleet(args.fleet) as fleet:
        _refuse_revoked(fleet, args.id, req.signing_key, replace=args.replace)
        try:
            approved = fleet.approve(
                raw,
                args.id,
                now_ms(),
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
    write_output(args.out, approved.bundle)
    print(f"approved {approved.device}: bundle {args.out} (certificate {approved.cert_serial:x})")
    print(f"  broker {broker[0]}:{broker[1]}, fleet fingerprint {fleet_fp}")
    if args.label is not None:
        png, svg = write_device_label(approved.device, approved.fingerprint, args.label)
        print(f"  label {png}, {svg}")
    print(f"next, on the device: picket agent install {args.out.name}")
    return EXIT_OK


@cli_handler
def device(args: argparse.Namespace) -> int:
    from provisioning.device import provision_device

    plan = checked_plan(args.plan)
    check_label_folder(args.label)
    made = not (args.fleet / "ca.crt").exists()
    now = now_ms()
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
        png, svg = write_device_label(files.device, files.fingerprint, args.label)
        print(f"label {png}, {svg}", file=sys.stderr)
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
    now = now_ms()
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
    except (PicketError, RegistryError, LabelError) as exc:
        return _Outcome(device_id, "failed", str(exc))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _Outcome(device_id, "failed", f"cannot write{where}: {exc.strerror or exc}")
    return _Outcome(device_id, "enrolled", approved.fingerprint)


@cli_handler
def batch(args: argparse.Namespace) -> int:
    ids = _batch_ids(args)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Refused(f"cannot make {args.out}: {exc.strerror or exc}") from exc
    progress = Progress()
    outcomes: list[_Outcome] = []
    start = time.monotonic()
    with open_fleet(args.fleet) as fleet:
        fleet_fp = fleet.fingerprint
        for n, device_id in enumerate(ids):
            progress.update(f"enrolling {device_id}: {n} of {len(ids)} done")
            outcomes.append(_batch_one(fleet, device_id, args))
    seconds = time.monotonic() - start
    count = {s: sum(o.status == s for o in outcomes) for s in ("enrolled", "skipped", "failed")}
    rate = count["enrolled"] / seconds if seconds > 0 else 0.0
    summary = (
        f"enrolled {count['enrolled']}, skipped {count['skipped']}, failed {count['failed']} "
        f"of {plural(len(ids), 'device')} in {seconds:.1f} s ({rate:.1f} per second)"
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
