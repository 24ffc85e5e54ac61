"""`picket center export` and `picket center devices`: the center's evidence, for anyone.

An auditor who does not trust Picket's code takes two files from the center database —
every record byte for byte as received (a CBOR sequence) and each device's public key —
and verifies them with any COSE library (docs/records.md shows how). Both commands read
the database alone (no registry, no broker) and may run beside a live center. All the
work is `center.export`; this module only parses arguments and prints.

Exit codes as everywhere in `picket`: 0 done, 1 the work failed (the disk), 2 bad input
(a database that is missing or not a center's, an output path that cannot be written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from center import export as evidence
from center.errors import CenterDbError
from picket import eventcmd
from picket.errors import CliInputError
from provisioning.registry import RegistryError
from provisioning.registry import check_registry as _check_registry

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2  # as in picket.cli


def add_center_parsers(center: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `export` and `devices` to the `center` command's sub-commands."""
    exp = center.add_parser(
        "export", help="write every stored record, as received, to a CBOR sequence file"
    )
    exp.add_argument("--db", type=Path, required=True, help="center SQLite database")
    exp.add_argument("--out", type=Path, required=True, help="file to write (RFC 8742)")
    dev = center.add_parser("devices", help="list each device's Ed25519 public key (hex)")
    dev.add_argument("--db", type=Path, required=True, help="center SQLite database")
    dev.add_argument("--json", action="store_true", help="print one JSON object")
    eventcmd.add_parsers(center)  # `center events …` and `center api` (picket/eventcmd.py)


def check_registry(path: Path) -> None:
    """`center run`'s check before it starts: `path` must be a device registry (FLEET/
    registry.db), not a missing file, a folder or another kind of file; else exit 2."""
    try:
        _check_registry(path)
    except RegistryError as exc:
        raise CliInputError(
            f"--registry: {exc}; the registry is FLEET/registry.db, made by "
            "`picket provision init --fleet FLEET`"
        ) from exc


def _error(err: TextIO, message: str) -> None:
    err.write(f"picket: error: {message}\n")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def export(args: argparse.Namespace, err: TextIO | None = None) -> int:
    err = err or sys.stderr
    out: Path = args.out
    if not out.parent.is_dir():
        _error(err, f"cannot write {out}: folder {out.parent} does not exist")
        return EXIT_BAD_INPUT
    if out.exists() and not out.is_file():  # a folder, or /dev/null: a rename would replace it
        _error(err, f"cannot write {out}: it is not a regular file (name a file to write)")
        return EXIT_BAD_INPUT
    try:
        done = evidence.export(args.db, out)
    except CenterDbError as exc:
        _error(err, str(exc))
        return EXIT_BAD_INPUT
    except (IsADirectoryError, PermissionError) as exc:
        _error(err, f"cannot write {out}: {exc.strerror}")
        return EXIT_BAD_INPUT
    except OSError as exc:
        _error(err, f"writing {out} failed: {exc}")
        return EXIT_FAILED
    err.write(
        f"exported {_plural(done.records, 'record')} from "
        f"{_plural(done.devices, 'device')} to {out}\n"
    )
    return EXIT_OK


def devices(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        found = evidence.list_devices(args.db)
    except CenterDbError as exc:
        _error(err, str(exc))
        return EXIT_BAD_INPUT
    if args.json:
        out.write(json.dumps({"devices": found}) + "\n")
        return EXIT_OK
    width = max([len("DEVICE"), *(len(d["id"]) for d in found)])
    out.write(f"{'DEVICE':<{width}}  PUBLIC KEY (Ed25519, raw, hex)\n")
    for d in found:
        out.write(f"{d['id']:<{width}}  {d['public_key']}\n")
    ids = {d["id"] for d in found}
    err.write(f"{_plural(len(ids), 'device')}, {_plural(len(found), 'key')}\n")
    return EXIT_OK
