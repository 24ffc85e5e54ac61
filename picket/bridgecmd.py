"""`picket bridge ping|soak|bundle|update`: the radio MCU's serial bridge, and its firmware.

Both run the real host driver (firmware_bridge/host.py) against a port, or with `--sim`
against the simulated MCU (simulators/mcusim.py, the real firmware logic behind a
pseudo-terminal), so a bench result and a field result are the same measurement.

`ping` prints the MCU's firmware and the round-trip times. `soak` sends N echo requests
of random bytes and compares every echo with what was sent; on the simulator it also sets
a bit error rate on both directions of the line and reads back how many frames the
errors touched, so the report can say: of `frames_corrupted`, how many the host took
for good (`corrupted_accepted`, which must be 0), and whether every lost frame was a
corrupted one (`frames_lost` against `frames_corrupted`: the framing resynchronises
within one frame). Exit 0 when no corrupted echo was accepted and every request got its
answer, 1 otherwise. The lead wires `add_parsers` and `HANDLERS` into picket/cli.py.

`bundle` is the technician's side of a firmware update: it signs an image (boot.py's
format) as a version for a board with the fleet's center key (FLEET/center.key), making
fwbundle.py's bundle. `update` is the device's side: it verifies the bundle against the
center's public key the device trusts (a tampered bundle, one from another fleet or for
another board is refused, exit 2, before the port is opened), sends it with progress on
stderr, and reports the outcome: the version the MCU then says it runs (exit 0), or why
not, such as "rolled back to 1.0.0" (exit 1). On `--sim` the simulator confirms a new image
after SIM_CONFIRM_MS, so the host waits SIM_CONFIRM_S rather than a board's 12 s;
`--sim-no-confirm` makes every image an update installs hang before it confirms itself, so
the watchdog resets the MCU and the boot decision rolls back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from picket import bridgeargs as arg
from picket.bridgeargs import Version
from picket.errors import CliInputError
from picket.report import print_report

if TYPE_CHECKING:
    from firmware_bridge.host import BridgeStats
    from simulators.mcusim import McuSim

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
SOAK_TIMEOUT_S = 0.01  # one attempt on the simulator's pty: answers come in ~0.2 ms
SOAK_RETRIES = 10
BOARD = "rp2-sx1262"  # fwbundle.BOARD (tests check), named here to keep start-up light
# `update --sim`: the simulated MCU confirms a new image after SIM_CONFIRM_MS (a board: 10 s)
# and its watchdog bites after SIM_WATCHDOG_MS, so a hung image rolls back within ~1.3 s;
# the host calls an image that stayed up SIM_CONFIRM_S a success (a board: 12 s).
SIM_CONFIRM_MS = 1000
SIM_WATCHDOG_MS = 1000
SIM_CONFIRM_S = 3.0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bridge = sub.add_parser("bridge", help="the serial bridge to the radio MCU")
    cmds = bridge.add_subparsers(dest="bridge_command", required=True, metavar="COMMAND")
    ping = cmds.add_parser("ping", help="firmware version and round-trip times")
    _port_args(ping)
    ping.add_argument("--count", type=arg.count(arg.MAX_PINGS), default=10, help="pings (10)")
    ping.add_argument("--json", action="store_true", help="print one JSON object")
    soak = cmds.add_parser(
        "soak",
        help="echo many frames, check none was accepted corrupted",
        description="Echo --frames random payloads; with --sim, inject bit errors at --ber "
        "on both directions. Exit 0 when no corrupted frame was accepted and every request "
        "was answered.",
    )
    _port_args(soak)
    soak.add_argument("--ber", type=arg.rate, default=0.0, help="bit error rate, --sim only (0)")
    soak.add_argument(
        "--frames", type=arg.count(arg.MAX_FRAMES), default=1000, help="echo requests (1000)"
    )
    soak.add_argument("--seed", type=int, default=1, help="seed of payloads and errors (1)")
    soak.add_argument(
        "--timeout",
        type=arg.seconds,
        default=None,
        help=f"one attempt's timeout, s ({SOAK_TIMEOUT_S:g} with --sim, 0.5 on a port)",
    )
    soak.add_argument("--json", action="store_true", help="print one JSON object")
    bundle = cmds.add_parser(
        "bundle",
        help="sign a firmware image with the fleet's center key",
        description="Sign --image (boot.py's image format) as firmware --version for --board "
        "with FLEET/center.key and write the bundle to --out; devices install it with "
        "`picket bridge update`, verifying it against the center.pub their config names.",
    )
    bundle.add_argument("--fleet", type=Path, required=True, help="fleet folder (center.key)")
    bundle.add_argument("--image", type=Path, required=True, help="the firmware image")
    bundle.add_argument(
        "--version", type=arg.version, required=True, metavar="X.Y.Z", help="its version"
    )
    bundle.add_argument("--board", type=arg.board, default=BOARD, help=f"the board ({BOARD})")
    bundle.add_argument("--out", type=Path, required=True, help="the bundle to write")
    update = cmds.add_parser(
        "update",
        help="verify a firmware bundle and install it on the MCU",
        description="Verify --bundle against the fleet's --center-key (refused: exit 2, "
        "nothing sent), send it to the MCU with progress on stderr, and wait for the new "
        "image to come up and stay up. Exit 0 when the MCU runs the new version, 1 when the "
        "update failed or the MCU rolled back.",
    )
    _port_args(update)
    update.add_argument("--bundle", type=Path, required=True, help="from `picket bridge bundle`")
    update.add_argument(
        "--center-key",
        type=Path,
        required=True,
        metavar="CENTER_PUB",
        help="the fleet's center.pub, as the device's config names it (PEM or 32 bytes)",
    )
    update.add_argument(
        "--sim-no-confirm",
        action="store_true",
        help="--sim only: the new image hangs before it confirms itself (shows a rollback)",
    )
    update.add_argument("--json", action="store_true", help="print one JSON object")


def _port_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "port", nargs="?", help="serial port: /dev/ttyACM0 or serial:///dev/ttyACM0?baud=N"
    )
    where.add_argument("--sim", action="store_true", help="the simulated MCU on a pty")


class BridgeInputError(CliInputError):
    """Bad input for a bridge command (exit code 2)."""


def _guarded(run: Callable[[argparse.Namespace, TextIO], int]) -> Callable[..., int]:
    """A handler that words its own failures: bad input exits 2, a failed bridge 1."""

    def handler(args: argparse.Namespace, out: TextIO | None = None) -> int:
        from firmware_bridge.host import BridgeError

        try:
            return run(args, out or sys.stdout)
        except BridgeInputError as exc:
            print(f"picket: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except BridgeError as exc:
            print(f"picket: error: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return handler


def _check_serial_port(path: str) -> None:
    """Refuse at once a missing port or one that is no terminal (a file, /dev/null), rather
    than after the driver's wait for an MCU that cannot answer there."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        why = exc.strerror or exc
        raise BridgeInputError(
            f"cannot open serial port {path}: {why} (is the MCU plugged in?)"
        ) from None
    tty = os.isatty(fd)
    os.close(fd)
    if not tty:
        raise BridgeInputError(f"{path} is not a serial port (name the MCU's /dev/tty…)")


@contextlib.asynccontextmanager
async def _target(
    args: argparse.Namespace,
    ber: float,
    seed: int,
    make_sim: Callable[[Path], McuSim] | None = None,
) -> AsyncIterator[tuple[str, McuSim | None]]:
    """The port to open, and the simulator behind it for the command's duration (--sim)."""
    from firmware_bridge.host import parse_port

    if not args.sim:
        try:
            path, _ = parse_port(args.port)
        except ValueError as exc:
            raise BridgeInputError(str(exc)) from exc
        _check_serial_port(path)
        yield args.port, None
        return
    from simulators.mcusim import McuSim

    with tempfile.TemporaryDirectory(prefix="picket-mcusim-") as folder:
        if make_sim is None:
            sim = McuSim(Path(folder), ber=ber, seed=seed)
        else:
            sim = make_sim(Path(folder))
        sim.start()
        try:
            yield str(sim.link), sim
        finally:
            sim.stop()


def _ping(args: argparse.Namespace, out: TextIO) -> int:
    return asyncio.run(_ping_async(args, out))


async def _ping_async(args: argparse.Namespace, out: TextIO) -> int:
    from firmware_bridge.host import Bridge, BridgeError, version_text

    async with _target(args, 0.0, 1) as (port, sim), Bridge(port) as bridge:
        info = bridge.info
        assert info is not None
        rtts: list[float] = []
        errors: list[str] = []
        for i in range(args.count):
            try:
                rtts.append(await bridge.ping(i.to_bytes(4, "little")))
            except BridgeError as exc:
                errors.append(str(exc))
        stats = bridge.stats
    ms = sorted(r * 1000 for r in rtts)
    where = "sim" if sim is not None else port
    report: dict[str, object] = {
        "port": where,
        "firmware": version_text(info.version),
        "protocol": info.protocol,
        "boot_count": info.boot_count,
        "reset_cause": info.reset_cause_name,
        "pings": args.count,
        "answered": len(rtts),
        "rtt_ms_min": round(ms[0], 3) if ms else None,
        "rtt_ms_median": round(statistics.median(ms), 3) if ms else None,
        "rtt_ms_max": round(ms[-1], 3) if ms else None,
        "retries": stats.retries,
        "bad_frames": stats.bad_frames,
        "errors": errors[:5],
    }
    if args.json:
        print(json.dumps(report, sort_keys=True), file=out)
    else:
        print(
            f"MCU firmware {report['firmware']} (protocol {info.protocol}, boot "
            f"{info.boot_count}, {info.reset_cause_name}) on {where}",
            file=out,
        )
        if ms:
            print(
                f"{len(rtts)}/{args.count} answered; round trip min {ms[0]:.3f} ms, median "
                f"{statistics.median(ms):.3f} ms, max {ms[-1]:.3f} ms",
                file=out,
            )
        for e in errors[:5]:
            print(f"error: {e}", file=out)
    return EXIT_OK if len(rtts) == args.count else EXIT_FAILED


def _soak(args: argparse.Namespace, out: TextIO) -> int:
    if args.ber and not args.sim:
        raise BridgeInputError("--ber injects errors in the simulator: it needs --sim")
    report = asyncio.run(soak_report(args))
    print_report(report, args.json, out)
    ok = report["corrupted_accepted"] == 0 and report["requests_failed"] == 0
    return EXIT_OK if ok else EXIT_FAILED


async def soak_report(args: argparse.Namespace) -> dict[str, object]:
    """Run the soak described by `args` (port or sim, ber, frames, seed, timeout)."""
    from firmware_bridge.host import Bridge, BridgeError, BridgeOptions

    rng = random.Random(args.seed)
    timeout = args.timeout or (SOAK_TIMEOUT_S if args.sim else 0.5)
    options = BridgeOptions(timeout_s=timeout, retries=SOAK_RETRIES, ready_wait_s=10.0)
    accepted_bad = failed = 0
    async with (
        _target(args, args.ber, args.seed) as (port, sim),
        Bridge(port, options=options) as bridge,
    ):
        # count from here: what the handshake exchanged (and the BOOT) is not the soak's
        host0, line0 = dataclasses.replace(bridge.stats), _line_counts(sim)
        started = time.monotonic()
        for _ in range(args.frames):
            payload = rng.randbytes(rng.randint(0, 32))
            try:
                echo = await bridge.echo(payload)
            except BridgeError:
                failed += 1
                continue
            if echo != payload:  # a corrupted frame taken for good, either way
                accepted_bad += 1
        wall = time.monotonic() - started
        await asyncio.sleep(max(0.1, 2 * timeout))  # answers to the last retries land
        host, line = _delta(bridge.stats, host0), _line_counts(sim)
    report: dict[str, object] = {
        "port": "sim" if sim is not None else port,
        "ber": args.ber,
        "seed": args.seed,
        "requests": args.frames,
        "requests_failed": failed,
        "frames_sent": host["frames_sent"],
        "frames_received": host["frames_received"],
        "corrupted_accepted": accepted_bad,
        "bad_frames": host["bad_frames"],
        "resyncs": host["resyncs"],
        "retries": host["retries"],
        "timeouts": host["timeouts"],
        "stale_responses": host["stale_responses"],
        "wall_seconds": round(wall, 2),
    }
    if sim is None:  # a real line: what was lost is what the host could not decode
        report["frames_lost"] = host["bad_frames"]
        return report
    d = {k: line[k] - line0[k] for k in line}
    report.update(
        {
            "frames_from_mcu": d["to_host"],
            "frames_corrupted": d["to_mcu_corrupted"] + d["to_host_corrupted"],
            "frames_corrupted_to_mcu": d["to_mcu_corrupted"],
            "frames_corrupted_to_host": d["to_host_corrupted"],
            # frames that did not arrive whole, both ways; equal to frames_corrupted when
            # every error cost only the frame it hit (resynchronised within one frame)
            "frames_lost": (d["to_mcu"] - d["mcu_decoded"])
            + (d["to_host"] - host["frames_received"]),
            "bits_flipped": d["bits_flipped"],
        }
    )
    return report


def _delta(now: BridgeStats, then: BridgeStats) -> dict[str, int]:
    a, b = now.as_dict(), then.as_dict()
    return {k: a[k] - b[k] for k in a}


def _line_counts(sim: McuSim | None) -> dict[str, int]:
    if sim is None:
        return {}
    mcu = sim.mcu
    return {
        "to_mcu": sim.to_mcu.frames,
        "to_mcu_corrupted": sim.to_mcu.corrupted,
        "to_host": sim.to_host.frames,
        "to_host_corrupted": sim.to_host.corrupted,
        "mcu_decoded": 0 if mcu is None else mcu.decoder.frames,
        "bits_flipped": sim.to_mcu.bits_flipped + sim.to_host.bits_flipped,
    }


# --- firmware: the technician's bundle, the device's update ----------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BridgeInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _bundle(args: argparse.Namespace, out: TextIO) -> int:
    import hashlib
    import os

    from firmware_bridge.firmware import boot
    from firmware_bridge.fwbundle import MAX_IMAGE, make_bundle, version_text
    from provisioning.center import load_center_key
    from provisioning.registry import ProvisioningError

    try:
        key = load_center_key(args.fleet)
    except ProvisioningError as exc:
        raise BridgeInputError(str(exc)) from exc
    image = _read(args.image, "firmware image")
    if not 0 < len(image) <= MAX_IMAGE:
        raise BridgeInputError(
            f"{args.image}: a firmware image is 1 to {MAX_IMAGE} bytes, not {len(image)}"
        )
    try:  # what the MCU's boot stage will unpack: refuse here what it would refuse there
        files = boot.image_entries(lambda at, n: image[at : at + n], len(image))
    except ValueError as exc:
        raise BridgeInputError(
            f"{args.image}: not a firmware image in the MCU's format (boot.pack_image): {exc}"
        ) from exc
    raw = make_bundle(image, args.version, key, board=args.board)
    partial = args.out.with_name(args.out.name + ".partial")
    from contract.keyfiles import check_replaceable

    try:
        check_replaceable(args.out)
        partial.write_bytes(raw)
        os.replace(partial, args.out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BridgeInputError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(
        f"signed firmware {version_text(args.version)} for {args.board} with "
        f"{args.fleet / 'center.key'}: {len(image)} bytes in {len(files)} file(s), SHA-256 "
        f"{hashlib.sha256(image).hexdigest()[:16]}…; bundle {args.out} ({len(raw)} bytes)",
        file=out,
    )
    return EXIT_OK


def _open_verified(args: argparse.Namespace) -> tuple[Version, bytes]:
    """(version, image) of the bundle, or BridgeInputError: checked before any port opens."""
    from agent.config import ConfigError, read_center_key
    from firmware_bridge.fwbundle import BundleError, open_bundle

    try:
        center = read_center_key(args.center_key)
    except ConfigError as exc:
        raise BridgeInputError(str(exc)) from exc
    raw = _read(args.bundle, "firmware bundle")
    try:
        return open_bundle(raw, center)
    except BundleError as exc:
        raise BridgeInputError(f"{args.bundle} refused, nothing sent: {exc}") from exc


def _update(args: argparse.Namespace, out: TextIO) -> int:
    if args.sim_no_confirm and not args.sim:
        raise BridgeInputError("--sim-no-confirm changes the simulator: it needs --sim")
    version, image = _open_verified(args)
    report = asyncio.run(update_report(args, version, image, sys.stderr))
    if args.json:
        print(json.dumps(report, sort_keys=True), file=out)
    else:
        running = report["running"]
        now = f"MCU firmware {running} running" if running else "MCU firmware unknown"
        if report["outcome"] == "updated":
            print(
                f"{now} (was {report['previous']}): {report['size']} bytes in "
                f"{report['chunks']} chunks, {report['seconds']} s, boot {report['boot_count']}",
                file=out,
            )
        else:
            print(f"update to {report['version']} failed: {report['error']}; {now}", file=out)
        sim = report.get("sim")
        if isinstance(sim, dict):
            state = "confirmed" if sim["confirmed"] else "not confirmed"
            print(
                f"simulator: firmware {sim['version']} ({state}), boot {sim['boot_count']}, "
                f"{sim['watchdog_resets']} watchdog reset(s)",
                file=out,
            )
    ok = report["outcome"] == "updated" and report["running"] == report["version"]
    return EXIT_OK if ok else EXIT_FAILED


def _update_sim(no_confirm: bool) -> Callable[[Path], McuSim]:
    """The simulator for `update --sim`: quick to confirm; with `no_confirm`, every image
    an update installs hangs before it confirms itself, whatever its sim.json says."""
    from firmware_bridge.firmware import boot
    from simulators.mcuboard import ImageBehaviour
    from simulators.mcusim import McuSim

    class NoConfirmSim(McuSim):
        def _behaviour(self, slot: str) -> ImageBehaviour:
            got = super()._behaviour(slot)
            return got if slot == boot.FACTORY_SLOT else dataclasses.replace(got, confirms=False)

    kind = NoConfirmSim if no_confirm else McuSim

    def make(folder: Path) -> McuSim:
        return kind(folder, confirm_after_ms=SIM_CONFIRM_MS, watchdog_ms=SIM_WATCHDOG_MS)

    return make


def _progress(version: str, err: TextIO, confirm_s: float) -> Callable[[int, int], None]:
    """A line on `err` every tenth of the image sent, and one when the switch begins."""
    shown = -1

    def show(done: int, total: int) -> None:
        nonlocal shown
        tenth = done * 10 // max(total, 1)
        if tenth > shown:
            shown = tenth
            print(f"sending firmware {version}: {done}/{total} bytes ({tenth * 10} %)", file=err)
        if done >= total:
            print(
                f"switching to firmware {version}: waiting for it to start and stay up "
                f"{confirm_s:g} s",
                file=err,
            )
        err.flush()

    return show


async def update_report(
    args: argparse.Namespace, version: Version, image: bytes, err: TextIO
) -> dict[str, object]:
    """Install a verified image (port or --sim) and say what the MCU runs afterwards."""
    from firmware_bridge.host import Bridge, BridgeError, BridgeOptions, UpdateFailed
    from firmware_bridge.host import version_text as vt

    options = BridgeOptions(confirm_s=SIM_CONFIRM_S) if args.sim else BridgeOptions()
    make_sim = _update_sim(args.sim_no_confirm) if args.sim else None
    async with (
        _target(args, 0.0, 1, make_sim) as (port, sim),
        Bridge(port, options=options) as bridge,
    ):
        info = bridge.info
        assert info is not None
        where = "sim" if sim is not None else port
        report: dict[str, object] = {
            "port": where,
            "bundle": str(args.bundle),
            "version": vt(version),
            "previous": vt(info.version),
            "size": len(image),
        }
        print(
            f"{args.bundle}: firmware {vt(version)}, {len(image)} bytes, signed by the fleet's "
            f"center key; MCU on {where} runs {vt(info.version)}",
            file=err,
        )
        show = _progress(vt(version), err, options.confirm_s)
        try:
            result = await bridge.update_firmware(image, version, progress=show)
        except UpdateFailed as exc:
            back = exc.rolled_back_to
            report["outcome"] = "failed" if back is None else "rolled-back"
            report["rolled_back_to"] = None if back is None else vt(back)
            report["error"] = str(exc)
        else:
            report.update(
                outcome="updated",
                boot_count=result.boot_count,
                chunks=result.chunks,
                seconds=round(result.seconds, 2),
            )
        try:  # what the MCU itself says it runs now
            report["running"] = vt((await bridge.status()).version)
        except BridgeError as exc:
            report["running"] = None
            report.setdefault("error", f"no STATUS after the update: {exc}")
        if sim is not None:
            state = sim.boot_state
            report["sim"] = {
                "version": vt(sim.version),
                "boot_count": sim.boot_count,
                "confirmed": state.confirmed and not state.tried,
                "watchdog_resets": sim.stats.watchdog_resets,
            }
    return report


ping = _guarded(_ping)
soak = _guarded(_soak)
bundle = _guarded(_bundle)
update = _guarded(_update)
HANDLERS: dict[tuple[str, str | None], Callable[[argparse.Namespace], int]] = {
    ("bridge", "ping"): ping,
    ("bridge", "soak"): soak,
    ("bridge", "bundle"): bundle,
    ("bridge", "update"): update,
}
