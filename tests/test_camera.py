"""Camera sources by URL (agent/events/cameraurl.py, agent/events/camera.py).

`file:DIR` is read from a real folder the simulated camera writes into. `libcamera:` and
`v4l2:` run their real subprocess path: a stand-in `rpicam-still`, `libcamera-still` or
`ffmpeg` placed first on PATH writes a real JPEG to its standard output and records the
arguments it was given, so the test sees the command a Pi would run. What a technician
would check: the photo that comes back is the camera's, the right tool is run with the
right arguments, a missing tool or device, a tool that fails, hangs or never stops writing
is one clear line naming the URL and the fix, and a hung tool is killed, not left behind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent.events.camera import Camera, open_camera
from agent.events.cameraurl import CameraError, CameraKind, CameraSpec, parse_camera_url
from agent.events.photos import PhotoError, reencode
from simulators.camera import GPS, SimCamera

MB = 1_000_000


def tool(bindir: Path, name: str, body: str) -> Path:
    """An executable `name` in `bindir` running the Python `body` (sys, pathlib imported)."""
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text(f"#!{sys.executable}\nimport os, sys, pathlib, time\n{body}\n")
    path.chmod(0o755)
    return path


def writes_jpeg(bindir: Path, name: str, jpeg: Path, log: Path) -> Path:
    return tool(
        bindir,
        name,
        f"pathlib.Path({str(log)!r}).write_text(' '.join(sys.argv[1:]))\n"
        f"sys.stdout.buffer.write(pathlib.Path({str(jpeg)!r}).read_bytes())",
    )


@pytest.fixture
def shot(tmp_path: Path) -> tuple[Path, bytes]:
    data = SimCamera(seed=21, width=640, height=480).jpeg(0, gps=GPS, orientation=6)
    path = tmp_path / "shot.jpg"
    path.write_bytes(data)
    return path, data


# -- URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "spec"),
    [
        ("libcamera:", CameraSpec(CameraKind.LIBCAMERA)),
        ("libcamera:1", CameraSpec(CameraKind.LIBCAMERA, index=1)),
        ("v4l2:/dev/video0", CameraSpec(CameraKind.V4L2, path="/dev/video0")),
        ("v4l2:///dev/video2", CameraSpec(CameraKind.V4L2, path="/dev/video2")),
        ("file:/srv/photos", CameraSpec(CameraKind.FILE, path="/srv/photos")),
        ("file:photos", CameraSpec(CameraKind.FILE, path="/etc/picket/photos")),
        (" FILE:///srv/p ", CameraSpec(CameraKind.FILE, path="/srv/p")),
    ],
)
def test_camera_urls_are_read(url: str, spec: CameraSpec) -> None:
    assert parse_camera_url(url, Path("/etc/picket")) == spec


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty camera URL"),
        ("webcam:0", "unknown kind 'webcam': give file:DIR, libcamera:"),
        ("/dev/video0", "unknown kind '/dev/video0'"),
        ("libcamera:front", "after 'libcamera:' give nothing or 0..15"),
        ("v4l2:", r"no path after 'v4l2:' \(as v4l2:/dev/video0\)"),
        ("v4l2:video0", "a v4l2 camera is a device, as v4l2:/dev/video0"),
        ("file:", "no path after 'file:'"),
        ("file:a\x00b", "control character"),
    ],
)
def test_a_wrong_camera_url_is_refused_saying_what_to_write(url: str, message: str) -> None:
    with pytest.raises(CameraError, match=message):
        parse_camera_url(url)


# -- file:DIR -------------------------------------------------------------------------


def test_a_folder_camera_gives_the_newest_photo_not_taken_yet(tmp_path: Path) -> None:
    folder = tmp_path / "dcim"
    sim = SimCamera(seed=4, width=320, height=240)
    first = sim.write_into(folder, 0)
    (folder / "notes.txt").write_text("not a photo")
    camera = open_camera(f"file:{folder}", max_bytes=MB)
    assert camera.capture() == first.read_bytes()
    sim.write_into(folder, 1)
    third = sim.write_into(folder, 2)
    assert camera.capture() == third.read_bytes()
    assert camera.capture() == sim.jpeg(1)
    with pytest.raises(CameraError, match=r"no new JPEG in .*dcim since the last photo"):
        camera.capture()
    again = sim.write_into(folder, 0)  # the same name written again is a new photo
    assert camera.capture() == again.read_bytes()


def test_a_folder_camera_without_its_folder_says_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match=r"^camera file:.*/nowhere: .*create the folder"):
        open_camera(f"file:{tmp_path / 'nowhere'}", max_bytes=MB).capture()


def test_a_folder_photo_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    folder = tmp_path / "dcim"
    folder.mkdir()
    (folder / "huge.jpg").write_bytes(SimCamera(seed=1, width=64, height=48).jpeg() + bytes(MB))
    with pytest.raises(PhotoError, match=r"huge\.jpg: 1\.0 MB, larger than the 0\.5 MB"):
        open_camera(f"file:{folder}", max_bytes=MB // 2).capture()


# -- libcamera: -----------------------------------------------------------------------


def test_a_pi_camera_is_read_through_rpicam_still(
    tmp_path: Path, shot: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    jpeg, data = shot
    log = tmp_path / "argv"
    writes_jpeg(tmp_path / "bin", "rpicam-still", jpeg, log)
    writes_jpeg(tmp_path / "bin", "libcamera-still", jpeg, tmp_path / "other")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert open_camera("libcamera:", max_bytes=MB).capture() == data
    assert log.read_text() == "-o - -n -t 1"
    assert not (tmp_path / "other").exists()  # the newer tool wins
    photo = reencode(
        open_camera("libcamera:1", max_bytes=MB).capture(),
        max_side=400,
        quality=80,
        max_input_bytes=MB,
    )
    assert log.read_text() == "-o - -n -t 1 --camera 1"
    assert (photo.width, photo.height) == (300, 400)  # orientation 6 applied


def test_an_older_pi_falls_back_to_libcamera_still(
    tmp_path: Path, shot: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    jpeg, data = shot
    writes_jpeg(tmp_path / "bin", "libcamera-still", jpeg, tmp_path / "argv")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert open_camera("libcamera:", max_bytes=MB).capture() == data
    assert (tmp_path / "argv").read_text() == "-o - -n -t 1"


def test_no_libcamera_tool_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(CameraError) as caught:
        open_camera("libcamera:", max_bytes=MB).capture()
    assert str(caught.value) == (
        "camera libcamera:: neither rpicam-still nor libcamera-still is installed: "
        "install rpicam-apps (apt-get install rpicam-apps)"
    )


def test_a_failing_tool_is_reported_with_its_last_complaint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool(
        tmp_path / "bin",
        "rpicam-still",
        "print('starting', file=sys.stderr)\n"
        "print('ERROR: *** no cameras available ***', file=sys.stderr)\nsys.exit(255)",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(
        CameraError,
        match=(
            r"^camera libcamera:: rpicam-still failed \(exit 255\): ERROR: \*\*\* no cameras "
            r"available \*\*\*: check that the camera is connected"
        ),
    ):
        open_camera("libcamera:", max_bytes=MB).capture()


def test_a_tool_that_writes_nothing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool(tmp_path / "bin", "rpicam-still", "pass")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(CameraError, match="rpicam-still wrote no photo"):
        open_camera("libcamera:", max_bytes=MB).capture()


def test_a_hung_tool_is_killed_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = tmp_path / "pid"
    tool(
        tmp_path / "bin",
        "rpicam-still",
        f"pathlib.Path({str(pidfile)!r}).write_text(str(os.getpid()))\n"
        "sys.stdout.buffer.write(b'\\xff\\xd8'); sys.stdout.flush()\ntime.sleep(3600)",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    camera = Camera(parse_camera_url("libcamera:"), max_bytes=MB, timeout_s=1.0)
    with pytest.raises(CameraError, match="rpicam-still gave no photo within 1 s"):
        camera.capture()
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)


def test_a_tool_that_never_stops_writing_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool(tmp_path / "bin", "rpicam-still", "while True:\n    sys.stdout.buffer.write(bytes(65536))")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(CameraError, match=r"rpicam-still wrote more than 1 MB"):
        open_camera("libcamera:", max_bytes=MB).capture()


# -- v4l2: ----------------------------------------------------------------------------


def test_a_usb_camera_is_read_through_ffmpeg(
    tmp_path: Path, shot: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    jpeg, data = shot
    log = tmp_path / "argv"
    writes_jpeg(tmp_path / "bin", "ffmpeg", jpeg, log)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    # /dev/null is a character device as /dev/video0 is; the stand-in ffmpeg ignores it
    assert open_camera("v4l2:/dev/null", max_bytes=MB).capture() == data
    assert log.read_text().endswith("-f v4l2 -i /dev/null -frames:v 1 -f mjpeg -")


def test_no_ffmpeg_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(
        CameraError,
        match=(r"^camera v4l2:/dev/video0: ffmpeg is not installed, .*\(apt-get install ffmpeg\)$"),
    ):
        open_camera("v4l2:/dev/video0", max_bytes=MB).capture()


def test_a_missing_or_wrong_video_device_is_named(
    tmp_path: Path, shot: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    writes_jpeg(tmp_path / "bin", "ffmpeg", shot[0], tmp_path / "argv")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(CameraError, match=r"^camera v4l2:/dev/video97: .*plug the camera in"):
        open_camera("v4l2:/dev/video97", max_bytes=MB).capture()
    with pytest.raises(CameraError, match=r"/dev/shm is not a video device"):
        open_camera("v4l2:/dev/shm", max_bytes=MB).capture()
    assert not (tmp_path / "argv").exists()  # ffmpeg was never run
