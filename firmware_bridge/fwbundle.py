"""Firmware bundles for the radio MCU, signed by the fleet's center key.

    COSE_Sign1(EdDSA, center key) over the CBOR map
      {"kind": "picket-firmware", "v": 1, "version": [1, 2, 0],
       "board": "rp2-sx1262", "image": bytes, "sha256": bytes}

The signature is the center's Ed25519 key (FLEET/center.key, `provisioning.center`), the
same key that signs commands, so a device trusts exactly one authority for both and needs
no new key material: its config already names `center_key`.

**Trust boundary.** The agent on the Pi verifies the fleet signature, the kind, the board
and the digest (`open_bundle`), then sends the image over the serial line with its SHA-256
in FW_BEGIN. The MCU checks only that digest before it switches images: the serial line
runs inside the device case, between two chips the same owner controls, so the digest
guards against a damaged transfer (a bit error the frame CRC missed, a lost chunk), not
against an attacker. Someone who can write to that line can already drive the radio and
the SOS button; the MCU holds no key, so a stolen MCU reveals none, and an MCU image
cannot sign records. Should the MCU ever sit outside the case, it must verify the
signature itself; the bundle carries everything it would need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract.bounds import shown
from contract.cose import decode_sign1, sign1, strict_loads, verify1
from contract.errors import RecordError, RemoteError
from firmware_bridge.errors import BridgeError

KIND = "picket-firmware"
FORMAT = 1
BOARD = "rp2-sx1262"
MAX_IMAGE = 1 << 20  # the RP2040 module's flash holds two images of at most this much

Version = tuple[int, int, int]


class BundleError(BridgeError, RemoteError):
    """A firmware bundle that must not be installed (bytes from outside); the text says why."""


def version_text(version: Sequence[int]) -> str:
    return ".".join(str(v) for v in version)


def make_bundle(
    image: bytes, version: Version, center_key: Ed25519PrivateKey, *, board: str = BOARD
) -> bytes:
    """Sign `image` as firmware `version` for `board` with the fleet's center key."""
    _check_version(version)
    if not image or len(image) > MAX_IMAGE:
        raise ValueError(f"a firmware image is 1 to {MAX_IMAGE} bytes, not {len(image)}")
    payload = cbor2.dumps(
        {
            "kind": KIND,
            "v": FORMAT,
            "version": list(version),
            "board": board,
            "image": bytes(image),
            "sha256": hashlib.sha256(image).digest(),
        }
    )
    return sign1(payload, center_key)


def open_bundle(
    raw: bytes, center_public: Ed25519PublicKey, *, board: str = BOARD
) -> tuple[Version, bytes]:
    """(version, image) of a bundle signed by this fleet for this board; BundleError if not."""
    try:
        decode_sign1(raw)
    except RecordError as exc:
        raise BundleError(f"not a firmware bundle: {exc}") from exc
    try:
        payload = verify1(raw, center_public)
    except RecordError as exc:
        raise BundleError(
            "firmware bundle is not signed by this fleet's center key (tampered with, or "
            "from another fleet)"
        ) from exc
    try:
        doc = strict_loads(payload)
    except RecordError as exc:
        raise BundleError(f"firmware bundle payload: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise BundleError("firmware bundle payload is not a CBOR map")
    if doc.get("kind") != KIND:
        raise BundleError(
            f"not a firmware bundle: kind {shown(doc.get('kind'))}, expected {KIND!r}"
        )
    if doc.get("v") != FORMAT or isinstance(doc.get("v"), bool):
        raise BundleError(
            f"firmware bundle format {shown(doc.get('v'))}; this agent reads {FORMAT}"
        )
    unknown = sorted(
        k if isinstance(k, str) else shown(k)
        for k in set(doc) - {"kind", "v", "version", "board", "image", "sha256"}
    )
    if unknown:
        names = ", ".join(shown(k, 40) if len(k) > 40 else k for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise BundleError(f"firmware bundle has unknown field(s) {names}{more}")
    got_board = doc.get("board")
    if got_board != board:
        raise BundleError(
            f"firmware bundle is for board {shown(got_board)}; this device is {board!r}"
        )
    version = doc.get("version")
    if (
        not isinstance(version, Sequence)
        or isinstance(version, str | bytes)
        or len(version) != 3
        or not all(type(v) is int and 0 <= v <= 255 for v in version)
    ):
        raise BundleError(f"firmware bundle version {shown(version)} is not three numbers 0-255")
    image = doc.get("image")
    digest = doc.get("sha256")
    if not isinstance(image, bytes) or not image or len(image) > MAX_IMAGE:
        raise BundleError(f"firmware bundle image must be 1 to {MAX_IMAGE} bytes")
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise BundleError("firmware bundle sha256 must be 32 bytes")
    if hashlib.sha256(image).digest() != digest:
        raise BundleError("firmware bundle image does not match its SHA-256")
    return (version[0], version[1], version[2]), image


def _check_version(version: Sequence[int]) -> None:
    if len(version) != 3 or not all(type(v) is int and 0 <= v <= 255 for v in version):
        raise ValueError(f"version {tuple(version)!r} is not three numbers 0-255")
