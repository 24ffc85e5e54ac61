"""The `picket` command: a thin dispatcher, one sub-command group per package.

Exit codes: 0 success, 1 the work failed (a peer, the disk, a broken invariant),
2 bad input (arguments, files, configuration), 130 interrupted. With `--json` the last
line on stdout is one JSON object; people get tables, and progress goes to stderr. A handler
refuses input by raising a picket.errors.CliError, which main() prints as
`picket: error: …` and turns into the error's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from picket import (
    benchcmd,
    bridgecmd,
    centercmd,
    centerstatus,
    checkincmd,
    commandcmd,
    eventcmd,
    eventdevcmd,
    fleetcmd,
    gps,
    plancmd,
    provisioncmd,
    rotatecmd,
    simcmd,
)
from picket.argtypes import center_tls, host_port, positive_int, tls_dir
from picket.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CliError, CliInputError
from picket.report import print_report

if TYPE_CHECKING:
    from center.service import CenterService
    from simulators.faults import FaultKind


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number above 0")
    return value


DEMO_MAX_DEVICES = 2_747  # simulators.demo.MAX_DEVICES (not imported: `picket --help` stays fast)
DEMO_MAX_MINUTES = 24 * 60


def _demo_devices(text: str) -> int:
    value = positive_int(text)
    if value > DEMO_MAX_DEVICES:
        raise argparse.ArgumentTypeError(
            f"{value} is more than the demo runs ({DEMO_MAX_DEVICES:,}, the district's "
            "members); `picket sim fleet` runs the whole district"
        )
    return value


def _demo_minutes(text: str) -> float:
    value = _positive_float(text)
    if value > DEMO_MAX_MINUTES:
        raise argparse.ArgumentTypeError(f"{text} minutes: a shift is at most a day (1440)")
    return value


def _faults(text: str) -> tuple[FaultKind, ...]:
    from simulators.faults import FaultError, parse_faults

    try:
        return parse_faults(text)
    except FaultError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="picket", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a simulated shift end to end and report")
    demo.add_argument("--devices", type=_demo_devices, default=20, help="simulated handsets (20)")
    demo.add_argument("--minutes", type=_demo_minutes, default=60.0, help="shift length (60)")
    demo.add_argument("--seed", type=int, default=7, help="seed of district and walkers (7)")
    demo.add_argument("--workdir", type=Path, help="keep device state and center.db here")
    demo.add_argument("--json", action="store_true", help="print one JSON object last")
    demo.add_argument(
        "--faults",
        type=_faults,
        default=(),
        metavar="KIND[,KIND…]",
        help="inject faults at moments drawn from the seed: "
        "broker-kill, broker-outage, agent-kill, center-kill, link-flap, half-open",
    )
    fleetcmd.add_events_argument(demo)

    center = sub.add_parser("center", help="the receiving end").add_subparsers(
        dest="center_command", required=True, metavar="COMMAND"
    )
    run = center.add_parser("run", help="verify, de-duplicate, store and acknowledge records")
    run.add_argument(
        "--db", required=True, help="center database: a SQLite path or a postgresql:// URL"
    )
    run.add_argument("--registry", type=Path, required=True, help="device registry (SQLite)")
    run.add_argument("--broker", type=host_port, default=("127.0.0.1", 1883), help="HOST:PORT")
    run.add_argument(
        "--tls", type=tls_dir, metavar="DIR", help="TLS with the center's certificate in DIR"
    )
    run.add_argument(
        "--group",
        default="picket-center",
        help="MQTT 5 shared-subscription group: workers in one group share the load",
    )
    run.add_argument(
        "--api",
        type=eventcmd.listen_address,
        metavar="HOST:PORT",
        help="also serve Open311 here",
    )
    run.add_argument("--api-keys", type=Path, metavar="FILE", help="the API's keys (with --api)")
    centercmd.add_center_parsers(center)
    centerstatus.add_parser(center)
    commandcmd.add_center_parsers(center)

    agent = sub.add_parser("agent", help="the daemon on the device").add_subparsers(
        dest="agent_command", required=True, metavar="COMMAND"
    )
    arun = agent.add_parser("run", help="read GNSS, check in, sign, store and sync until stopped")
    arun.add_argument("--config", type=Path, required=True, help="the device's config.toml")
    provisioncmd.add_agent_parsers(agent)

    gps.add_parsers(sub)
    checkincmd.add_parsers(sub)
    plancmd.add_parsers(sub)
    simcmd.add_parsers(sub)
    benchcmd.add_parsers(sub)
    bridgecmd.add_parsers(sub)
    eventdevcmd.add_parsers(sub)  # `picket event …` on the device

    prov = sub.add_parser("provision", help="technician's tools").add_subparsers(
        dest="provision_command", required=True, metavar="COMMAND"
    )
    provisioncmd.add_provision_parsers(prov)
    rotatecmd.add_parser(prov)
    return p


def _cmd_demo(args: argparse.Namespace) -> int:
    from picket.progress import Progress
    from simulators.demo import DemoError, DemoOptions, run_demo

    opts = DemoOptions(
        args.devices, args.minutes, args.seed, args.workdir, args.faults, args.events_per_hour
    )
    try:
        report = asyncio.run(run_demo(opts, Progress()))
    except DemoError as exc:
        raise CliInputError(str(exc)) from exc
    print_report(report, args.json)
    ok = report["records_lost"] == 0 and report["records_duplicated"] == 0 and report["drained"]
    ok = ok and report["attachments_lost"] == 0
    return EXIT_OK if ok else EXIT_FAILED


def _cmd_center_run(args: argparse.Namespace) -> int:
    from center.errors import CenterDbError
    from center.service import CenterService
    from contract.errors import LocalError

    centercmd.check_registry(args.registry)
    host, port = args.broker

    async def serve() -> dict[str, object]:
        try:
            service = CenterService(
                args.db, args.registry, host, port, group=args.group, tls=center_tls(args.tls)
            )
        except (ValueError, CenterDbError, LocalError) as exc:
            raise CliInputError(str(exc)) from exc
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)

        async def announce() -> None:
            await service.ready.wait()
            print("ready", flush=True)

        announcer = asyncio.create_task(announce(), name="center-announce")
        if args.api is None:
            await service.run()
        else:
            await _with_api(service, args)
        announcer.cancel()
        return {**service.ingest.stats.as_dict()}

    print(json.dumps(asyncio.run(serve()), sort_keys=True), flush=True)
    return EXIT_OK


async def _with_api(service: CenterService, args: argparse.Namespace) -> None:
    """The center's service and its Open311 API in one process: either ending ends both."""
    from center.events.connection import EventDb

    if args.api_keys is None:
        raise CliInputError("--api needs --api-keys FILE (lines of NAME KEY)")
    stop = asyncio.Event()
    db = EventDb(args.db)
    try:
        async with asyncio.TaskGroup() as tg:
            api = tg.create_task(eventcmd.serve_api(db, args.api_keys, args.api, stop))
            await service.run()
            stop.set()
            await api
    except* CliInputError as group:  # the API could not listen: say why, once
        raise group.exceptions[0] from None
    finally:
        db.close()


def _cmd_agent_run(args: argparse.Namespace) -> int:
    from agent.checkin.planfile import PlanError
    from agent.config import ConfigError, load_config
    from agent.daemon import run_until_signalled
    from agent.gnss.sources import SourceError

    try:
        cfg = load_config(args.config)
        asyncio.run(run_until_signalled(cfg))
    except (ConfigError, SourceError, PlanError) as exc:
        raise CliInputError(str(exc)) from exc
    return EXIT_OK


def _cmd_gps(args: argparse.Namespace) -> int:
    return gps.replay(args) if args.gps_command == "replay" else gps.watch(args)


def _cmd_checkin_detect(args: argparse.Namespace) -> int:
    from agent.checkin.planfile import PlanError

    try:
        return checkincmd.detect(args)
    except PlanError as exc:
        raise CliInputError(str(exc)) from exc


def _too_long(args: argparse.Namespace) -> str | None:
    """A file argument the system cannot name (a part over NAME_MAX or the whole over
    PATH_MAX): refused here once, instead of an OSError wherever a command first touches it."""
    for name, value in vars(args).items():
        if isinstance(value, str) and name == "db" and "://" not in value:
            path: object = Path(value)  # a center database: a SQLite path, or a URL
        else:
            path = value
        if not isinstance(path, Path):
            continue
        raw = os.fsencode(path)
        if len(raw) >= 4096 or any(len(part) > 255 for part in raw.split(b"/")):
            return f"{name}: the path {str(path)[:40]}… is too long to be a file name"
    return None


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    nul = next((a for a in given if "\x00" in a), None)
    if nul is not None:  # a shell cannot pass one; os calls would raise ValueError on it
        print(f"picket: error: argument {nul!r} contains a NUL character", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        args = build_parser().parse_args(argv)
    except OSError as exc:  # an argument's type that looks at a file (a folder of keys)
        where = str(exc.filename or "")[:60]
        print(f"picket: error: cannot use {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    problem = _too_long(args)
    if problem is not None:
        print(f"picket: error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handlers: dict[tuple[str, str | None], Callable[[argparse.Namespace], int]] = {
        ("demo", None): _cmd_demo,
        ("center", "run"): _cmd_center_run,
        ("agent", "run"): _cmd_agent_run,
        ("gps", "replay"): _cmd_gps,
        ("gps", "watch"): _cmd_gps,
        ("checkin", "detect"): _cmd_checkin_detect,
        ("plan", "check"): plancmd.check,
        ("bench", "checkins"): benchcmd.checkins,
        ("center", "export"): centercmd.export,
        ("center", "status"): centerstatus.status,
        ("center", "key"): commandcmd.key,
        ("center", "dispatch"): commandcmd.dispatch,
        ("center", "roll-call"): commandcmd.roll_call,
        ("center", "reminder"): commandcmd.reminder,
        ("center", "devices"): centercmd.devices,
        **provisioncmd.HANDLERS,
        **bridgecmd.HANDLERS,
        **simcmd.HANDLERS,
        **eventcmd.HANDLERS,
        **eventdevcmd.HANDLERS,
        ("provision", "rotate"): rotatecmd.rotate,
    }
    sub = getattr(args, f"{args.command}_command", None)
    try:
        return handlers[(args.command, sub)](args)
    except CliError as exc:  # gps.GpsInputError, and what the handlers above raise
        print(f"picket: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
