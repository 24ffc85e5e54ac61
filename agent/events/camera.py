"""Camera sources by URL (agent/events/cameraurl.py): one call, one photo's bytes.

A thin driver around what the system already has: a folder (`file:DIR`), the Pi camera's
`rpicam-still` (`libcamera-still` on older images) and `ffmpeg` for a USB camera, each run
as a subprocess that writes one JPEG to its standard output. Every run has a deadline and a
bound on what it may write: a camera that hangs or a tool that streams forever is killed and
reported, never waited on. What comes back is the camera's JPEG as it is, with all its
metadata: agent/events/photos.py re-encodes it before anything is stored.

Every failure is one line naming the URL, what went wrong and the fix (a missing tool says
which package to install). `Camera.capture` blocks for up to its deadline: the daemon calls
it in a thread (`asyncio.to_thread`), the command line directly.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import stat
import subprocess
import time
from pathlib import Path

from agent.events.cameraurl import CameraError, CameraKind, CameraSpec, parse_camera_url
from agent.events.photos import MB, PhotoError

__all__ = ["CAPTURE_TIMEOUT_S", "Camera", "CameraError", "open_camera"]

CAPTURE_TIMEOUT_S = 15.0  # a Pi camera needs a second or two to settle its exposure
JPEG_SUFFIXES = (".jpg", ".jpeg")
LIBCAMERA_TOOLS = ("rpicam-still", "libcamera-still")
STDERR_KEPT = 4096  # the tail of a tool's complaints, for the error message


class Camera:
    """One camera source; `capture()` returns one JPEG's bytes or raises CameraError."""

    def __init__(
        self, spec: CameraSpec, *, max_bytes: int, timeout_s: float = CAPTURE_TIMEOUT_S
    ) -> None:
        self.spec = spec
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._taken: set[tuple[str, int]] = set()  # file: (name, mtime_ns) already returned

    def capture(self) -> bytes:
        if self.spec.kind is CameraKind.FILE:
            return self._from_folder(Path(self.spec.path))
        if self.spec.kind is CameraKind.LIBCAMERA:
            tool = next(filter(None, map(shutil.which, LIBCAMERA_TOOLS)), None)
            if tool is None:
                raise CameraError(
                    f"camera {self.spec}: neither rpicam-still nor libcamera-still is "
                    "installed: install rpicam-apps (apt-get install rpicam-apps)"
                )
            argv = [tool, "-o", "-", "-n", "-t", "1"]
            if self.spec.index is not None:
                argv += ["--camera", str(self.spec.index)]
            return self._run(argv)
        device = self.spec.path
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise CameraError(
                f"camera {self.spec}: ffmpeg is not installed, and a USB camera is read "
                "through it: install it (apt-get install ffmpeg)"
            )
        try:
            mode = os.stat(device).st_mode
        except OSError as exc:
            raise CameraError(
                f"camera {self.spec}: {exc.strerror or exc}: plug the camera in, or fix the "
                "device in [events] camera (ls /dev/video*)"
            ) from None
        if not stat.S_ISCHR(mode):
            raise CameraError(f"camera {self.spec}: {device} is not a video device")
        grab = ("-f", "v4l2", "-i", device, "-frames:v", "1", "-f", "mjpeg", "-")
        return self._run([ffmpeg, "-nostdin", "-loglevel", "error", *grab])

    def _from_folder(self, folder: Path) -> bytes:
        """The newest JPEG in the folder not returned before (a file written again counts as
        new); CameraError when there is none."""
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise CameraError(
                f"camera {self.spec}: {exc.strerror or exc}: create the folder or fix "
                "[events] camera"
            ) from None
        fresh: list[tuple[int, str, int]] = []
        for entry in entries:
            if not entry.name.lower().endswith(JPEG_SUFFIXES):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat()
                if stat.S_ISREG(info.st_mode) and (entry.name, info.st_mtime_ns) not in self._taken:
                    fresh.append((info.st_mtime_ns, entry.name, info.st_size))
        if not fresh:
            raise CameraError(
                f"camera {self.spec}: no new JPEG in {folder} since the last photo: "
                "put one there (*.jpg)"
            )
        mtime, name, size = max(fresh)
        path = folder / name
        if size > self.max_bytes:
            self._taken.add((name, mtime))
            raise PhotoError(
                f"{path}: {size / MB:.1f} MB, larger than the {self.max_bytes / MB:g} MB a "
                "photo may be (photo_max_input_mb): take it again at a lower resolution"
            )
        try:
            with path.open("rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except OSError as exc:
            raise CameraError(f"camera {self.spec}: {path}: {exc.strerror or exc}") from None
        self._taken.add((name, mtime))
        return data

    def _run(self, argv: list[str]) -> bytes:
        """The tool's standard output, bounded in time and size; CameraError otherwise."""
        name = Path(argv[0]).name
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise CameraError(f"camera {self.spec}: cannot run {name}: {exc}") from None
        deadline = time.monotonic() + self.timeout_s
        try:
            out, err, problem = self._collect(proc, name, deadline)
            if problem is None:
                try:
                    code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    problem = f"{name} did not exit within {self.timeout_s:g} s"
                else:
                    if code != 0:
                        tail = err.decode(errors="replace").strip().splitlines()
                        why = tail[-1] if tail else "no message"
                        problem = f"{name} failed (exit {code}): {why}"
                    elif not out:
                        problem = f"{name} wrote no photo"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
        if problem is not None:
            raise CameraError(
                f"camera {self.spec}: {problem}: check that the camera is connected, enabled "
                "and not in use by another program"
            )
        return out

    def _collect(
        self, proc: subprocess.Popen[bytes], name: str, deadline: float
    ) -> tuple[bytes, bytes, str | None]:
        """Both pipes read until they close, the deadline or more than max_bytes of photo:
        (photo, the tail of stderr, the problem or None)."""
        assert proc.stdout is not None and proc.stderr is not None
        out, err = bytearray(), bytearray()
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    return (
                        bytes(out),
                        bytes(err),
                        (f"{name} gave no photo within {self.timeout_s:g} s"),
                    )
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    buf: bytearray = key.data
                    buf += chunk
                    if buf is err and len(err) > STDERR_KEPT:
                        del err[:-STDERR_KEPT]
                    if len(out) > self.max_bytes:
                        return (
                            bytes(out),
                            bytes(err),
                            (f"{name} wrote more than {self.max_bytes / MB:g} MB"),
                        )
        return bytes(out), bytes(err), None


def open_camera(url: str, *, max_bytes: int, timeout_s: float = CAPTURE_TIMEOUT_S) -> Camera:
    """A camera for `url` (agent/events/cameraurl.py); CameraError for a wrong URL."""
    return Camera(parse_camera_url(url), max_bytes=max_bytes, timeout_s=timeout_s)
