"""`picket provision …` (the technician's machine) and `picket agent enroll | install` (the
device): enrolling devices into a fleet, from a terminal. This module is the wiring: which
commands there are, their flags, and the table of handlers picket/cli.py merges into its own.

Enrollment crosses two machines, and only two files cross between them: the device makes
its keys and a request (`agent enroll`), the technician checks what the request says and
answers it with a signed bundle (`provision approve`), and the device installs the bundle
(`agent install`). No private key is ever copied. The steps themselves live in
agent/identity/enroll.py and provisioning/ (fleet, brokerconf, label, verify); the handlers
turn the steps' refusals into messages that name the file or field at fault, and print what
a technician needs next: the fingerprints to compare, the next command. They are split by
who runs them and when:

    agentidentity.py    the device's side: agent enroll | install
    provisionenroll.py  enrolling: provision init | approve | device | batch
    provisionfleet.py   the enrolled fleet: provision center | broker-config | revoke |
                        list | verify | label
    provisionsteps.py   what the handlers share: reading, writing, opening the fleet
    provisionargs.py    what each flag's value may be (argparse types)

Each handler takes the parsed arguments and returns the exit code, printing its own refusal
(`picket: error: …`) through picket.errors.cli_handler, so tests can dispatch `HANDLERS`
without picket/cli.py. Exit codes as everywhere in `picket`: 0 done, 1 the work failed (a
batch with a failed device, a verification with a failed check, a disk that refused a
write), 2 bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from picket import provisionargs as arg
from picket.agentidentity import agent_enroll, agent_install, default_device_dir
from picket.argtypes import positive_int
from picket.errors import Handler
from picket.provisionenroll import approve, batch, device, init
from picket.provisionfleet import broker_config, center, label, list_devices, revoke, verify
from provisioning.fleet import TIERS

__all__ = ["HANDLERS", "add_agent_parsers", "add_provision_parsers", "default_device_dir"]

if TYPE_CHECKING:  # not subscriptable at run time
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def _fleet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", type=Path, required=True, help="fleet folder (provision init)")


def _assignment_args(p: argparse.ArgumentParser, *, plan: bool = True) -> None:
    p.add_argument("--tier", choices=TIERS, help="the device's patrol tier")
    p.add_argument("--team", type=arg.name, help="the device's team")
    if plan:
        p.add_argument("--plan", type=Path, help="initial patrol plan (GeoJSON, docs/plans.md)")
    p.add_argument(
        "--broker", type=arg.host_port, help="HOST:PORT the device connects to (the fleet's)"
    )


def add_provision_parsers(prov: SubParsers) -> None:
    """Add init, approve, device, batch, center, broker-config, revoke, list, verify and
    label to the `provision` command's sub-commands."""
    _enrolling_parsers(prov)
    _fleet_parsers(prov)


def _enrolling_parsers(prov: SubParsers) -> None:
    p = prov.add_parser("init", help="make a fleet folder: CA, center key, registry")
    _fleet_arg(p)
    p.add_argument("--name", type=arg.name, help="the fleet's name (default: the folder's)")
    p.add_argument(
        "--broker",
        type=arg.host_port,
        help=f"HOST:PORT devices connect to ({arg.DEFAULT_BROKER[0]}:{arg.DEFAULT_BROKER[1]})",
    )

    p = prov.add_parser("approve", help="answer a device's enrollment request with a bundle")
    p.add_argument("request", type=Path, metavar="REQUEST", help="the device's request file")
    _fleet_arg(p)
    p.add_argument("--id", type=arg.device_id, required=True, help="device id to give, e.g. h0001")
    _assignment_args(p)
    p.add_argument("--replace", action="store_true", help="give an enrolled id to this device")
    p.add_argument("--label", type=Path, metavar="DIR", help="also write its QR label here")
    p.add_argument("--out", type=Path, required=True, metavar="BUNDLE", help="bundle to write")

    p = prov.add_parser("device", help="enroll, approve and install in one step (benches, CI)")
    _fleet_arg(p)
    p.add_argument("--id", type=arg.device_id, required=True, help="device id, e.g. h0001")
    p.add_argument("--out", type=Path, required=True, help="device folder to write")
    _assignment_args(p)
    p.add_argument("--label", type=Path, metavar="DIR", help="also write its QR label here")

    p = prov.add_parser("batch", help="enroll many devices in one step, one folder each")
    _fleet_arg(p)
    p.add_argument("--out", type=Path, required=True, help="folder for the device folders")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", type=arg.ids, help="device ids: h0001,h0002")
    which.add_argument("--count", type=arg.batch_count, help="this many ids: PREFIX + number")
    p.add_argument("--prefix", type=arg.name, default="h", help="with --count: id prefix (h)")
    p.add_argument("--start", type=positive_int, default=1, help="with --count: first number")
    p.add_argument("--width", type=arg.width, default=4, help="with --count: digits (4)")
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
    p.add_argument("--port", type=arg.port, required=True, help="port to listen on")
    p.add_argument(
        "--host",
        type=arg.host,
        action="append",
        help="a name or address devices reach the broker by (repeat; default: the fleet's "
        "broker host, 127.0.0.1, localhost)",
    )
    p.add_argument("--bind", type=arg.host, help="listen on this address only (default: all)")
    p.add_argument(
        "--user", help="account Mosquitto runs as (default: mosquitto, when root and it exists)"
    )

    p = prov.add_parser("revoke", help="revoke a device's keys and certificates")
    _fleet_arg(p)
    p.add_argument("--id", type=arg.device_id, required=True, help="device id")

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
    p.add_argument("--id", type=arg.device_id, required=True, help="device id")
    p.add_argument("--out", type=Path, required=True, help="folder to write")


def add_agent_parsers(agent: SubParsers) -> None:
    """Add `enroll` and `install` to the `agent` command's sub-commands."""
    where = "device folder (/var/lib/picket as root, else ~/.local/share/picket)"
    p = agent.add_parser("enroll", help="make this device's keys and an enrollment request")
    p.add_argument("--out", type=Path, required=True, metavar="REQUEST", help="request to write")
    p.add_argument("--dir", type=Path, metavar="DEVICE_DIR", help=where)
    p.add_argument(
        "--fleet-fingerprint",
        type=arg.fleet_fingerprint,
        metavar="FP",
        help="accept bundles of this fleet only (as `picket provision init` printed it)",
    )
    p.add_argument(
        "--fact",
        type=arg.fact,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="shown to the technician at approval (repeat), e.g. site=depot-3",
    )
    p.add_argument("--force", action="store_true", help="replace an installed identity")

    p = agent.add_parser("install", help="install the bundle the technician made")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle file")
    p.add_argument("--dir", type=Path, metavar="DEVICE_DIR", help=where)


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
