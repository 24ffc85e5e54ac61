"""Record bodies the mutation benchmark found untested (contract/records.py; bench/mutation.py,
docs/testing.md): a key rotation's receipt carries the device's next public key and its
certificate request, through signing and the center's reading.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.errors import RecordError
from contract.fix import TimeSource
from contract.records import (
    ChainPosition,
    Outcome,
    ReceiptKey,
    RecordType,
    build,
    open_record,
    receipt_body,
)
from contract.recordschema import validate_body

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(9, 41)))
NEXT = Ed25519PrivateKey.from_private_bytes(bytes(range(50, 82))).public_key().public_bytes_raw()
CSR = bytes.fromhex("3082") + bytes(range(1, 200))  # opaque DER bytes to the record layer


def test_a_rotation_receipt_carries_the_next_key_pair_to_the_center() -> None:
    body = receipt_body(12, 6, Outcome.DONE, next_signing_key=NEXT, next_csr=CSR)
    raw = build(
        KEY, device="h0003", chain=ChainPosition(2, 40, bytes(16)), rtype=RecordType.RECEIPT,
        time_ms=1_772_359_200_000, time_source=TimeSource.GNSS, body=body,
    )  # fmt: skip
    got = open_record(raw, KEY.public_key()).body
    assert got[ReceiptKey.NEXT_SIGNING_KEY] == NEXT
    assert got[ReceiptKey.NEXT_CSR] == CSR
    assert got[ReceiptKey.COMMAND] == 12


def test_a_receipt_without_a_rotation_carries_neither_half() -> None:
    body = receipt_body(12, 3, Outcome.REFUSED, "expired")
    assert ReceiptKey.NEXT_SIGNING_KEY not in body
    assert ReceiptKey.NEXT_CSR not in body
    validate_body(RecordType.RECEIPT, body)
    with pytest.raises(RecordError, match="together"):
        validate_body(RecordType.RECEIPT, {**body, ReceiptKey.NEXT_SIGNING_KEY: NEXT})
