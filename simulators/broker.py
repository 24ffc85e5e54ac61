"""A private Mosquitto on a free loopback port, with a generated configuration.

Demos and tests never touch a system broker: each starts its own, in its own folder, and
can stop and restart it on the same port to play a broker outage. The executable is looked
up on PATH and in /usr/sbin (where Debian installs it, off a normal user's PATH).

With `persistence=True` the broker keeps its state (retained messages, persistent sessions
and their queued messages, subscriptions) in workdir/mosquitto.db, saved every second and
at a clean stop, and reads it back when it starts again; a kill -9 loses what changed since
the last save, as on a real server.

With `tls_dir` (a folder from `picket provision broker-config`) the listener is the
fleet's: TLS with client certificates, the certificate name as user, its ACL and CRL. It
takes devices and services alike on one port, client ids as they come (every client here
is our own); with `service_port` as well it is the production layout instead
(provisioning/brokerconf.py): devices on `port`, each client id bound to its certificate's
name, and the services (center, gateways) on `service_port`. Either way the size limits
are production's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from provisioning.brokerconf import (
    device_lines,
    global_lines,
    limit_lines,
    service_lines,
    tls_lines,
)
from simulators.simerror import SimulatorError

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(SimulatorError):
    """Mosquitto is not installed, or did not start listening."""


def find_mosquitto() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    for c in CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    raise BrokerError(
        "mosquitto is not installed: run ./run (as root it installs it), "
        "or `sudo apt-get install mosquitto`"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistence: bool = False,
        tls_dir: Path | None = None,
        service_port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.persistence = persistence
        self.tls_dir = tls_dir  # a `picket provision broker-config` folder: TLS, ACL, CRL
        self.service_port = service_port  # with tls_dir: the services' own listener
        self.exe = find_mosquitto()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running broker's process id (None when stopped or killed)."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def start(self, timeout_s: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        persistence = (
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
            if self.persistence
            else "persistence false\n"
        )
        # Started as root, mosquitto switches to the `mosquitto` user, which cannot write the
        # log or the database in a folder root made: keep this private broker as who started it.
        user = "user root\n" if os.geteuid() == 0 else ""
        if self.tls_dir is None:
            security = f"{limit_lines()}listener {self.port} {self.host}\nallow_anonymous true\n"
        elif self.service_port is None:
            security = (
                f"{global_lines(self.tls_dir)}listener {self.port} {self.host}\n"
                f"{tls_lines(self.tls_dir)}"
            )
        else:
            security = (
                f"{global_lines(self.tls_dir)}listener {self.port} {self.host}\n"
                f"{device_lines(self.tls_dir)}listener {self.service_port} {self.host}\n"
                f"{service_lines(self.tls_dir)}"
            )
        self.config_path.write_text(
            f"{security}"
            f"{user}"
            f"{persistence}"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\n",
            encoding="utf-8",
        )
        self._proc = subprocess.Popen(
            [self.exe, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrokerError(
                    f"mosquitto exited at start (code {self._proc.returncode}): {err}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout_s} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its configuration again (ACL, and the CRL on reconnects)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        """kill -9: the broker vanishes without closing connections cleanly."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
