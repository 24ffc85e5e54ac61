"""`picket provision center | broker-config | revoke | list | verify | label`: looking after a
fleet once its devices are enrolled.

Each command opens the fleet folder, asks provisioning/ one thing (a certificate for the
center or the broker, a revocation, the registry's rows, a check of a bundle or a device
folder, a device's QR label) and prints the outcome for a person, or one JSON object with
`--json`. What these print is what the next person in the chain must act on: the broker
certificate's host names and the account Mosquitto runs as, which CRL files were rewritten
and that the broker must reload them, which check of a bundle failed. `verify` exits 1 when
a check fails, so a script can stop on it.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
from pathlib import Path

from picket.errors import EXIT_FAILED, EXIT_OK, cli_handler
from picket.provisionsteps import (
    Failed,
    Refused,
    check_label_folder,
    now_ms,
    open_fleet,
    plural,
    read_input,
    utc,
    write_device_label,
)
from provisioning.registry import RegistryError

__all__ = ["broker_config", "center", "label", "list_devices", "revoke", "verify"]


# --- provision center | broker-config | revoke ----------------------------------------------


@cli_handler
def center(args: argparse.Namespace) -> int:
    with open_fleet(args.fleet) as fleet:
        try:
            out = fleet.issue_center(args.out, now_ms())
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


@cli_handler
def broker_config(args: argparse.Namespace) -> int:
    from provisioning.brokerconf import default_service_port, write_broker_config

    user = args.user if args.user is not None else _default_broker_user()
    with open_fleet(args.fleet) as fleet:
        fleet_host, fleet_port = fleet.broker()
        hosts = tuple(dict.fromkeys(args.host or (fleet_host, "127.0.0.1", "localhost")))
        try:
            conf = write_broker_config(
                fleet, args.out, args.port, now_ms(), hosts=hosts, bind=args.bind, user=user
            )
        except RegistryError as exc:
            raise Refused(str(exc)) from exc
        except OSError as exc:
            raise Failed(f"writing into {args.out} failed: {exc.strerror or exc}") from exc
    print(
        f"wrote {args.out}: mosquitto.conf, acl, ca.crt, services-ca.crt, clients-ca.crt, "
        "server.crt, server.key, crl.pem"
    )
    print(f"  the broker's certificate names {', '.join(hosts)}")
    print(
        f"  devices connect to port {args.port}; the center and gateways to port "
        f"{default_service_port(args.port)} (the services' listener)"
    )
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


@cli_handler
def revoke(args: argparse.Namespace) -> int:
    now = now_ms()
    with open_fleet(args.fleet) as fleet:
        entry = fleet.registry.entry(args.id)
        if entry is None:
            raise Refused(f"no device {args.id!r} in fleet {args.fleet}")
        try:
            count = fleet.revoke(args.id, now)
        except RegistryError as exc:
            raise Refused(str(exc)) from exc
        except OSError as exc:
            raise Failed(f"rewriting the CRL failed: {exc.strerror or exc}") from exc
        kept = fleet.registry.entry(args.id)
        brokers = json.loads(fleet.registry.setting("broker_dirs") or "[]")
        crls = [fleet.crl_path] + [Path(d) / "crl.pem" for d in brokers if Path(d).is_dir()]
    # A second revoke changes no time: say the one the registry keeps, not this run's clock.
    since = now if kept is None or kept.revoked_ms is None else kept.revoked_ms
    if entry.revoked_ms is not None:
        print(f"{args.id} was already revoked at {utc(entry.revoked_ms)}")
    print(f"revoked {args.id}: {plural(count, 'certificate')} revoked")
    print(f"the center refuses records {args.id} signed after {utc(since, '%Y-%m-%d %H:%M:%S')}")
    for path in crls:
        print(f"CRL rewritten: {path}")
    print(
        "the broker reads the CRL when it starts or reloads: `kill -HUP` it (or restart it; "
        "a restart also drops a connection the device already holds)"
    )
    return EXIT_OK


# --- provision list | verify ----------------------------------------------------------------


@cli_handler
def list_devices(args: argparse.Namespace) -> int:
    with open_fleet(args.fleet) as fleet:
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
            utc(e.cert_not_after_ms, "%Y-%m-%d"),
            utc(e.revoked_ms, "%Y-%m-%d %H:%M"),
        )
        for e in entries
    ]
    head = ("DEVICE", "TIER", "TEAM", "KEY FINGERPRINT", "CERT EXPIRES", "REVOKED")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=True)).rstrip())
    revoked = sum(e.revoked_ms is not None for e in entries)
    print(f"fleet {name} ({fleet_fp}): {plural(len(entries), 'device')}, {revoked} revoked")
    return EXIT_OK


@cli_handler
def verify(args: argparse.Namespace) -> int:
    from provisioning.verify import all_ok, verify_bundle, verify_device_dir

    if (args.bundle is None) == (args.dir is None):
        raise Refused("name a bundle file or --dir DEVICE_DIR (one of them)")
    with open_fleet(args.fleet) as fleet:
        if args.bundle is not None:
            source = str(args.bundle)
            checks = verify_bundle(fleet, read_input(args.bundle, "bundle"), now_ms(), where=source)
        else:
            source = str(args.dir)
            checks = verify_device_dir(fleet, args.dir, now_ms())
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
        print(f"{source}: {failed} of {plural(len(checks), 'check')} FAILED")
    return EXIT_OK if ok else EXIT_FAILED


# --- provision label ------------------------------------------------------------------------


@cli_handler
def label(args: argparse.Namespace) -> int:
    with open_fleet(args.fleet) as fleet:
        entry = fleet.registry.entry(args.id)
    if entry is None:
        raise Refused(f"no device {args.id!r} in fleet {args.fleet}")
    check_label_folder(args.out, "--out")
    if entry.revoked_ms is not None:
        print(
            f"picket: warning: {args.id} was revoked at {utc(entry.revoked_ms)}",
            file=sys.stderr,
        )
    png, svg = write_device_label(entry.id, entry.fingerprint, args.out)
    print(f"label of {entry.id} (key {entry.fingerprint}): {png}, {svg}")
    return EXIT_OK
