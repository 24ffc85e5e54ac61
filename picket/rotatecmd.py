"""`picket provision rotate`: a new record key and TLS certificate, by a signed command.

The work is center/rotation.py (certificate for the device's pre-committed key,
registry, numbered command) and center/commands.py (publishing); this module parses,
publishes with the center's TLS identity and prints. A device that has not answered its
last rotation is told so, with what to do (publish again, or `--resend` when it expired).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from center.commands import publish
from center.errors import CenterDbError, DispatchError
from center.rotation import (
    DEFAULT_TTL_S,
    collect_commitments,
    prepare_rotation,
    resend_rotation,
)
from contract.errors import LocalError
from picket.argtypes import center_tls, host_port, positive_int, tls_dir
from picket.provisionargs import device_id
from provisioning.fleet import Fleet
from provisioning.registry import RegistryError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
MAX_TTL_S = 90 * 86_400  # a rotation waits for a device that is away, not for ever


def _ttl(text: str) -> int:
    value = positive_int(text)
    if value > MAX_TTL_S:
        raise argparse.ArgumentTypeError(f"{value} s is more than {MAX_TTL_S:,} (90 days)")
    return value


__all__ = ["add_parser", "rotate"]


def add_parser(prov: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = prov.add_parser(
        "rotate", help="new record key and TLS certificate for a device, by signed command"
    )
    p.add_argument("--fleet", type=Path, required=True, help="fleet folder (provision init)")
    p.add_argument("--id", type=device_id, required=True, help="device id")
    p.add_argument("--db", type=Path, required=True, help="center SQLite database")
    p.add_argument("--broker", type=host_port, default=("127.0.0.1", 8883), help="HOST:PORT")
    p.add_argument(
        "--tls", type=tls_dir, metavar="DIR", help="TLS with the center's certificate in DIR"
    )
    p.add_argument(
        "--ttl", type=_ttl, default=DEFAULT_TTL_S, help="command valid for seconds (7 d)"
    )
    p.add_argument("--resend", action="store_true", help="sign the last, unanswered rotation anew")
    p.add_argument(
        "--collect",
        action="store_true",
        help="only read the device's rotation receipt: register its next key pair and put "
        "the certificate it replaced on the CRL",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object last")


def _error(message: str) -> None:
    print(f"picket: error: {message}", flush=True, file=sys.stderr)


def rotate(args: argparse.Namespace) -> int:
    now = int(time.time() * 1000)
    try:
        tls = center_tls(args.tls)
        with Fleet(args.fleet) as fleet:
            if args.collect:
                found = collect_commitments(fleet, args.db, args.id, now_ms=now)
                print(
                    f"{args.id}: {found} confirmed rotation(s) collected; superseded "
                    "certificates are on the CRL"
                )
                return EXIT_OK
            step = resend_rotation if args.resend else prepare_rotation
            rotation = step(fleet, args.id, args.db, now, ttl_s=args.ttl)
    except (RegistryError, CenterDbError, LocalError) as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    host, port = args.broker
    try:
        asyncio.run(publish(host, port, args.id, rotation.command, tls=tls))
    except DispatchError as exc:
        _error(f"{exc}; the rotation is prepared: publish it again with --resend")
        return EXIT_FAILED
    if args.json:
        print(
            json.dumps(
                {
                    "device": rotation.device,
                    "command": rotation.number,
                    "cert_serial": f"{rotation.cert_serial:x}",
                    "fingerprint": rotation.new_fingerprint,
                },
                sort_keys=True,
            )
        )
    else:
        print(
            f"rotation command {rotation.number} published to {rotation.device}: new key "
            f"{rotation.new_fingerprint}, certificate {rotation.cert_serial:x}\n"
            "the old certificate stays valid until the device's receipt arrives; then run "
            f"`picket provision rotate --collect --id {rotation.device}` (or the next rotate) "
            "to put it on the CRL"
        )
    return EXIT_OK
