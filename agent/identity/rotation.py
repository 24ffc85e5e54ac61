"""Key rotation on the device: check the certificate, then swap the key files, crash-safe.

A rotation makes the pre-committed next pair (next/signing.key, next/device.key, whose
public halves the fleet registered at enrollment or at the previous rotation) the current
one, installs the certificate the center issued for next/device.key, and makes a fresh
next pair, whose public halves the receipt of the rotation carries to the center. No
private key leaves the device.

**The commit point is the receipt.** The receipt (signed with the old key) is written by
`Outbox.answer_command` in one SQLite transaction with the row that marks the command
answered (agent/commands/executor.py). The new pair it announces must therefore exist on disk
*before* that commit, and the swap must happen *after* it, even if the process dies in
between. So a rotation goes in three steps:

1. `stage`: the complete new state is written under `rotation.tmp/` (the new current keys
   as copies of next/, the certificate, a freshly generated next pair, the command number),
   each file fsynced, keys 0600, then the folder is renamed to `rotation/` in one atomic step
   and the device folder fsynced. Nothing the device uses has changed yet.
2. The receipt is committed (cmdexec). This is the point of no return.
3. `complete`: every file under `rotation/` is renamed over its place (signing.key,
   device.key, device.crt, next/signing.key, next/device.key), then `rotation/command` and
   the folder are removed. Each rename is atomic and a file already moved is skipped, so
   completing is idempotent: it can be interrupted and run again at any point.

**Restart** (`recover`, before the daemon loads its key): `rotation.tmp/` is an unfinished
stage and is removed. `rotation/` names its command: if the outbox holds that command
answered DONE, the receipt announced the staged pair, and the swap is completed; otherwise
the device died before the commit, the staged pair was never announced, and it is removed
(the command is carried out again when it is redelivered). `rotation/` without its
command file is a swap that finished all its renames: only the folder is left to remove.
Either way the device comes up with keys the registry knows: the old record key, which the
registry retired but still trusts for what it signed, or the new one; and with a
certificate for its TLS key, because nothing reads the TLS files between the renames.

A rotation whose certificate does not fit (another CA, another key, another device,
expired) is refused by `check` before anything is written. If the device's outbox is
lost (moved aside as damaged) between the commit and a restart, the rotation counts as
never carried out and the staged pair is discarded; if its receipt had reached the center
already, the pair it announced is gone, the next rotation is refused, and the device must
be enrolled again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from agent.errors import AgentError
from agent.identity.enroll import (
    CA,
    CERT,
    NEXT,
    SIGNING,
    TLS_KEY,
    EnrollError,
    _csr,
    _pkcs8,
    load_private,
)
from agent.store.outbox import Outbox
from agent.store.recovery import fsync_dir
from contract.commands import MAX_REASON, CommandType
from contract.keyfiles import write_private, write_public
from contract.records import Outcome

__all__ = [
    "PENDING",
    "STAGING",
    "RotationError",
    "Staged",
    "check",
    "committed",
    "complete",
    "discard",
    "identity_folder",
    "load_signing_key",
    "recover",
    "stage",
]

PENDING = "rotation"  # the staged state, complete: the "pending" mark, naming its command
STAGING = "rotation.tmp"  # being written; never trusted
COMMAND = "command"  # in rotation/: the number of the command, decimal
# What `complete` moves: path under rotation/ -> the same path in the device folder.
MOVES = (SIGNING, TLS_KEY, CERT, f"{NEXT}/{SIGNING}", f"{NEXT}/{TLS_KEY}")


class RotationError(AgentError):
    pass


@dataclass(frozen=True, slots=True)
class Staged:
    """A rotation written under rotation/, and the commitment its receipt carries."""

    number: int
    next_signing_key: bytes  # raw Ed25519 public key of the fresh next record key
    next_csr: bytes  # DER, a certificate request for the fresh next TLS key


def identity_folder(key_path: Path) -> Path | None:
    """The device folder whose keys a rotation swaps, when the config's record key is the
    folder's `signing.key` and the folder has a next pair (agent/identity/enroll.py); else None."""
    folder = key_path.parent
    if key_path.name != SIGNING or not (folder / NEXT).is_dir():
        return None
    return folder


def _short(text: str) -> str:
    return text[:MAX_REASON]


def check(folder: Path, cert_der: bytes, device: str, now_ms: int) -> str | None:
    """Why this device cannot rotate to `cert_der` (None: it can). Reads, never writes.

    The certificate must come from the device's CA, be for exactly the public key of
    next/device.key, name this device and not have expired.
    """
    if not (folder / CA).is_file():
        return f"key rotation: no {CA} on this device"
    if not (folder / NEXT / TLS_KEY).is_file() or not (folder / NEXT / SIGNING).is_file():
        return "key rotation: this device has no next key pair"
    try:
        tls_key = load_private(folder / NEXT / TLS_KEY)
        signing = load_private(folder / NEXT / SIGNING)
        ca = x509.load_pem_x509_certificate((folder / CA).read_bytes())
    except (EnrollError, OSError, ValueError) as exc:
        return _short(f"key rotation: {exc}")
    if not isinstance(tls_key, ec.EllipticCurvePrivateKey) or not isinstance(
        signing, Ed25519PrivateKey
    ):
        return "key rotation: the next key pair is not an EC TLS key and an Ed25519 key"
    try:
        return _misfit(x509.load_der_x509_certificate(cert_der), ca, tls_key, device, now_ms)
    except Exception as exc:  # its parts are parsed lazily: anything odd in it, a refusal
        return _short(f"certificate cannot be checked: {exc}")


def _misfit(
    cert: x509.Certificate,
    ca: x509.Certificate,
    tls_key: ec.EllipticCurvePrivateKey,
    device: str,
    now_ms: int,
) -> str | None:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "certificate was not issued by this device's CA"
    if cert.public_key() != tls_key.public_key():
        return "certificate is for another key, not this device's next TLS key"
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = names[0].value if names else None
    if name != device:
        return _short(f"certificate names {name!r}, not this device ({device})")
    if now_ms > int(cert.not_valid_after_utc.timestamp() * 1000):
        return f"certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
    return None


def stage(folder: Path, cert_der: bytes, number: int) -> Staged:
    """Write the whole new state under rotation/ (step 1); nothing in use changes.

    Call `check` first. Raises RotationError when a rotation is already pending.
    """
    pending, tmp = folder / PENDING, folder / STAGING
    if pending.exists():
        raise RotationError(f"{pending}: a key rotation is already pending")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    (tmp / NEXT).mkdir(mode=0o700)
    try:
        for name in (SIGNING, TLS_KEY):  # the next pair becomes the current one
            write_private(tmp / name, (folder / NEXT / name).read_bytes())
        cert = x509.load_der_x509_certificate(cert_der)
        write_public(tmp / CERT, cert.public_bytes(serialization.Encoding.PEM))
        signing, tls = Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
        write_private(tmp / NEXT / SIGNING, _pkcs8(signing))
        write_private(tmp / NEXT / TLS_KEY, _pkcs8(tls))
        write_public(tmp / COMMAND, f"{number}\n".encode())
        fsync_dir(tmp / NEXT)
        fsync_dir(tmp)
        os.rename(tmp, pending)
        fsync_dir(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Staged(number, signing.public_key().public_bytes_raw(), _csr(tls))


def pending_number(folder: Path) -> int | None:
    """The command of the rotation pending in `folder` (None: none, or all files moved)."""
    try:
        return int((folder / PENDING / COMMAND).read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RotationError(f"{folder / PENDING / COMMAND}: unreadable: {exc}") from exc


def complete(folder: Path) -> None:
    """Move the staged state into place (step 3). Idempotent: a file already moved is
    skipped, so an interrupted completion is finished by running this again."""
    pending = folder / PENDING
    if not pending.is_dir():
        return
    for name in MOVES:
        source = pending / name
        if source.exists():
            os.replace(source, folder / name)
    fsync_dir(folder / NEXT)
    fsync_dir(folder)
    (pending / COMMAND).unlink(missing_ok=True)  # from here on: nothing left to move
    fsync_dir(pending)
    shutil.rmtree(pending)
    fsync_dir(folder)


def discard(folder: Path) -> None:
    """Forget a rotation staged but never committed (its pair was never announced)."""
    shutil.rmtree(folder / STAGING, ignore_errors=True)
    if (folder / PENDING).exists():
        shutil.rmtree(folder / PENDING)
        fsync_dir(folder)


def recover(folder: Path, answered: Callable[[int], bool]) -> str | None:
    """At start-up: finish or undo a rotation a crash interrupted. `answered(n)`: the
    outbox holds command n answered DONE. Returns "completed", "discarded" or None."""
    shutil.rmtree(folder / STAGING, ignore_errors=True)
    if not (folder / PENDING).is_dir():
        return None
    number = pending_number(folder)
    if number is None or answered(number):
        complete(folder)
        return "completed"
    discard(folder)
    return "discarded"


def committed(outbox: Outbox) -> Callable[[int], bool]:
    """`recover`'s question, asked of the device's outbox."""

    def answered(number: int) -> bool:
        return any(
            row.number == number and row.outcome == Outcome.DONE
            for row in outbox.answered_commands(CommandType.ROTATE_KEYS)
        )

    return answered


def load_signing_key(folder: Path) -> Ed25519PrivateKey:
    """The record key now in place (after `complete`)."""
    try:
        key = load_private(folder / SIGNING)
    except EnrollError as exc:
        raise RotationError(str(exc)) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise RotationError(f"{folder / SIGNING}: not an Ed25519 private key")
    return key
