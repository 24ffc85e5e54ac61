"""`picket agent enroll | install`: the device's side of enrollment.

The device makes its own keys and never hands a private one over: `enroll` writes the keys
into the device folder and a request for the technician to carry away; `install` takes the
bundle the technician brought back, and agent/identity/enroll.py checks it against those
keys and the fleet this device trusts before anything is written. This module adds what the
person at the device must see: the key fingerprint the technician has to find at approval,
a warning when no fleet was pinned, the next command. It is kept apart from the fleet's
commands because it runs on the other machine, usually as root into /var/lib/picket, and
shares with them only the two files that cross over.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent.identity.enroll import CENTER, PIN, EnrollError, enroll, install
from contract.enrollment import decode_request
from contract.errors import PicketError
from picket.errors import EXIT_OK, cli_handler
from picket.provisionsteps import (
    Failed,
    Refused,
    check_writable,
    now_ms,
    read_input,
    write_output,
)
from provisioning.registry import fingerprint

__all__ = ["agent_enroll", "agent_install", "default_device_dir"]


def default_device_dir() -> Path:
    return Path("/var/lib/picket") if os.geteuid() == 0 else Path.home() / ".local/share/picket"


@cli_handler
def agent_enroll(args: argparse.Namespace) -> int:
    folder: Path = args.dir or default_device_dir()
    out: Path = args.out
    check_writable(out)
    facts = dict(args.fact)
    try:
        raw = enroll(
            folder, now_ms(), facts=facts, fleet_pin=args.fleet_fingerprint, force=args.force
        )
    except EnrollError as exc:
        raise Refused(str(exc)) from exc
    except OSError as exc:
        raise Refused(
            f"cannot make keys in {folder}: {exc.strerror or exc} (run as root, or pass --dir)"
        ) from exc
    write_output(out, raw)
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


@cli_handler
def agent_install(args: argparse.Namespace) -> int:
    folder: Path = args.dir or default_device_dir()
    raw = read_input(args.bundle, "bundle")
    trusted_before = (folder / PIN).exists() or (folder / CENTER).exists()
    try:
        done = install(folder, raw)
    except PicketError as exc:
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
