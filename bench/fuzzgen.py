"""The inputs of the fuzz campaign (bench/fuzz.py): how a case is made.

A case is `(mode, data)`: mode `raw` feeds the bytes as they are, `signed` signs them as the
payload first. Inputs come three ways: structured mutations of valid inputs (integers to 0,
-1, 2**31, 2**63, 2**64 and beyond, text to lone surrogates, NUL and 70,000 characters, types
swapped, keys dropped, added and duplicated, nesting 100,000 deep, CBOR tags), random byte
mutations (bit flips, truncation, insertion, splicing), and random bytes. `enc` writes CBOR
that cbor2 will not (duplicate keys, bignums, lone surrogates, raw items). A mutated tree is
weighed before it is written (`weight`): a mutation that repeats an item 5,000 times inside
an item already repeated 5,000 times would otherwise build gigabytes here, in the generator,
before the size check; such a case is made again from bytes instead.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2

Case = tuple[str, bytes]  # (mode, data): "raw" as is, "signed" signed as a payload first


@dataclass
class Target:
    name: str
    raw: list[bytes]  # valid inputs, as they arrive
    run: Callable[[str, bytes], object]  # one case; raises what it raises
    allowed: tuple[type[BaseException], ...]
    payloads: list[bytes] = field(default_factory=list)  # valid payloads ("signed" cases)
    kind: str = "cbor"  # how the structured mutator reads a seed: cbor, json or nmea


class TooLarge(Exception):
    """A mutated tree that would be written larger than MAX_INPUT."""


# --- CBOR values that cbor2 will not write: raw bytes, duplicate keys --------------------------


@dataclass(frozen=True, slots=True)
class Raw:
    data: bytes  # an already-encoded item (deep nesting, odd encodings)


@dataclass(frozen=True, slots=True)
class Pairs:
    items: tuple[tuple[object, object], ...]  # a map that may repeat a key


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes((major << 5 | info,)) + n.to_bytes(size, "big")
    raise ValueError("head too large")


def enc(v: object) -> bytes:
    """CBOR for any value the mutator makes: lone surrogates, bignums, NaN, duplicates."""
    if isinstance(v, Raw):
        return v.data
    if v is None or isinstance(v, bool):
        return {None: b"\xf6", True: b"\xf5", False: b"\xf4"}[v]
    if isinstance(v, int):
        if 0 <= v < 2**64:
            return _head(0, v)
        if -(2**64) <= v < 0:
            return _head(1, -1 - v)
        n = v if v >= 0 else -1 - v
        return _head(6, 2 if v >= 0 else 3) + enc(n.to_bytes((n.bit_length() + 7) // 8, "big"))
    if isinstance(v, float):
        return b"\xfb" + struct.pack(">d", v)
    if isinstance(v, bytes):
        return _head(2, len(v)) + v
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        return _head(3, len(b)) + b
    if isinstance(v, list | tuple):
        return _head(4, len(v)) + b"".join(enc(x) for x in v)
    if isinstance(v, dict | Pairs):
        items = list(v.items) if isinstance(v, Pairs) else list(v.items())
        return _head(5, len(items)) + b"".join(enc(k) + enc(x) for k, x in items)
    if isinstance(v, cbor2.CBORTag):
        return _head(6, v.tag) + enc(v.value)
    return cbor2.dumps(v)


# --- mutators -----------------------------------------------------------------------------------

BIG = 2**20000  # 6,021 digits: past Python's 4,300-digit limit for int <-> str
INTS = [0, 1, -1, 23, 24, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1,
        2**64 - 1, 2**64, -(2**64), 10**40, BIG, -BIG]  # fmt: skip
STRS = ["", "\x00", "\ud800", "a\udfffb", "x" * 70_000, "\u202e", "h0001\x00", "../x", "+/#"]
# Tuples, not lists, inside the tags: the mutator changes lists in place, and these values are
# shared by every case (a list here grew by 5,000 items a case, to gigabytes in a campaign).
OTHER: list[object] = [
    None, True, False, math.nan, math.inf, -0.0, 1e308, b"", bytes(16), b"\xff" * 100_000,
    cbor2.CBORTag(1, 2**70), cbor2.CBORTag(0, "not a date"), cbor2.CBORTag(1, math.nan),
    cbor2.CBORTag(4, (2**64, 1)), cbor2.CBORTag(5, (10**6, 3)), cbor2.CBORTag(30, (1, 0)),
    cbor2.CBORTag(35, "(a*)*$"), cbor2.CBORTag(2, b"\xff" * 4000), cbor2.CBORTag(36, "x"),
    cbor2.CBORTag(37, b"short"), cbor2.CBORTag(258, ((1,), (1,))), cbor2.CBORTag(2**64 - 1, 0),
    cbor2.CBORTag(28, 0), cbor2.CBORTag(29, 0), cbor2.CBORTag(24, b"\xff"), Raw(b"\xf7"),
    Raw(b"\xf8\xff"), Raw(b"\x1b" + bytes(7) + b"\x01"), Raw(b"\x9f\x01\x02\xff"),
    Raw(b"\x5f\x41a\x41b\xff"), Raw(b"\x7f\x61a\x61b\xff"),
]  # fmt: skip
DEPTHS = [100, 1000, 10_000, 100_000]
MAX_INPUT = 2**21  # 2 MiB: past every size limit a decoder has, short of the 4 MiB files
HEADS = [b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x3b\xff\xff\xff\xff\xff\xff\xff\xff",
         b"\x5b\x00\x00\x00\x01\x00\x00\x00\x00", b"\x7a\xff\xff\xff\xff", b"\x9b" + b"\xff" * 8,
         b"\xbb" + b"\xff" * 8, b"\x9f", b"\xbf", b"\xff", b"\xc2\x5a\x00\x10\x00\x00", b"\xd8\x12",
         b"\xed\xa0\x80", b"\x00", b"\r\n", b"$", b"*", b",", b"9" * 5000, b"NaN", b"1e999",
         b"[" * 5000, b'"\\ud800"', b"\xff\xfe"]  # fmt: skip


def _scalar(rng: random.Random) -> object:
    pool = rng.choice((INTS, STRS, OTHER))
    return rng.choice(pool)


def weight(v: object, budget: int = MAX_INPUT) -> int:
    """About how many bytes `v` writes to (a shared item counts each time it appears);
    TooLarge as soon as that passes `budget`, without building anything."""
    stack, total = [v], 0
    while stack:
        x = stack.pop()
        if isinstance(x, Raw):
            total += len(x.data)
        elif isinstance(x, str | bytes):
            total += len(x) + 1
        elif isinstance(x, int):
            total += x.bit_length() // 8 + 1
        elif isinstance(x, list | tuple):
            total += 1
            stack.extend(x)
        elif isinstance(x, dict):
            total += 1
            for k, y in x.items():
                stack.extend((k, y))
        elif isinstance(x, Pairs):
            total += 1
            for k, y in x.items:
                stack.extend((k, y))
        elif isinstance(x, cbor2.CBORTag):
            total += 1
            stack.append(x.value)
        else:
            total += 9
        if total > budget:
            raise TooLarge
    return total


def _deep(rng: random.Random, v: object, n: int) -> object:
    weight(v)
    return Raw(rng.choice((b"\x81", b"\xa1\x01", b"\xc6", b"\x9f")) * n + enc(v))


Slot = tuple[Any, Any]  # (a dict or list of a decoded tree, a key or index in it)


def _slots(v: object, out: list[Slot]) -> list[Slot]:
    """Every (container, key) in a decoded CBOR or JSON tree."""
    if isinstance(v, cbor2.CBORTag):  # immutable: its contents are mutated, not it
        _slots(v.value, out)
    elif isinstance(v, dict):
        for k in list(v):
            out.append((v, k))
            _slots(v[k], out)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out.append((v, i))
            _slots(x, out)
    return out


def _set(c: Any, k: Any, x: object) -> None:
    c[k] = x


def mutate_tree(rng: random.Random, root: object, deep: Callable[..., object]) -> object:
    """One structured mutation somewhere in `root` (changed in place where it can be)."""
    slots = _slots(root, [])
    if not slots or rng.random() < 0.05:
        return deep(rng, root, rng.choice(DEPTHS)) if rng.random() < 0.5 else _scalar(rng)
    c, k = rng.choice(slots)
    cur = c[k]
    op = rng.randrange(8)
    if op <= 2:  # a boundary value, or a value of another type
        _set(c, k, _scalar(rng))
    elif op == 3 and isinstance(c, dict):  # drop the key
        del c[k]
    elif op == 4 and isinstance(c, dict):  # add a key
        c[rng.choice([*range(1, 30), -1, 2**64 - 1, "kind", "x", 1.5])] = _scalar(rng)
    elif op == 5:  # nest deep
        _set(c, k, deep(rng, cur, rng.choice(DEPTHS)))
    elif op == 6 and isinstance(c, list):  # repeat an item, many times (up to ~1 MB)
        c.extend([cur] * min(rng.choice((1, 300, 5000)), MAX_INPUT // (weight(cur) + 1)))
    elif op == 7 and isinstance(cur, int) and not isinstance(cur, bool):  # nudge a number
        _set(c, k, cur + rng.choice((-1, 1, 2**32, 2**63, -(2**64))))
    else:
        _set(c, k, Pairs(((1, cur), (1, cur))) if rng.random() < 0.3 else _scalar(rng))
    return root


def mutate_bytes(rng: random.Random, data: bytes, other: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op, n = rng.randrange(8), len(b)
        i = rng.randrange(n + 1)
        if op == 0 and n:
            b[min(i, n - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[min(i, n - 1)] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x1B, 0x9F, 0xBF, 0xFF, 0x24))
        elif op == 2:
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            b[i:i] = rng.choice(HEADS)
        elif op == 4:
            del b[i : i + rng.randint(1, 16)]
        elif op == 5:
            del b[i:]
        elif op == 6:
            b[i:i] = b[i : i + rng.randint(1, 64)] * rng.randint(2, 50)
        else:
            b = b[:i] + other[rng.randrange(len(other) + 1) :]
    return bytes(b)


# --- NMEA and JSON ---------------------------------------------------------------------------


def nmea_line(body: str) -> str:
    x = 0
    for ch in body.encode("latin-1", "replace"):
        x ^= ch
    return f"${body}*{x:02X}\r\n"


NMEA_FIELDS = ["", "9" * 120, "-1", "nan", "inf", "1e309", "235960", "999999.999", "\x00", "é",
               "4807.038", "S", "W", "99", "0", "-0", "1" * 25, "310299", "00",
               "12.3.4"]  # fmt: skip


def mutate_nmea(rng: random.Random, seed: bytes) -> bytes:
    lines = seed.decode("latin-1").split("\r\n")[:-1]
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        body = lines[i][1:].rsplit("*", 1)[0]
        f = body.split(",")
        j, op = rng.randrange(len(f)), rng.randrange(5)
        if op <= 2:
            f[j] = rng.choice(NMEA_FIELDS)
        elif op == 3:
            del f[j]
        else:
            f.extend(rng.choice(NMEA_FIELDS) for _ in range(rng.choice((1, 40))))
        lines[i] = nmea_line(",".join(f))[:-2]
        if rng.random() < 0.2:
            lines.extend(lines[: i + 1] * rng.choice((1, 50)))
    return ("\r\n".join(lines) + "\r\n").encode("latin-1", "replace")


def _json_deep(rng: random.Random, v: object, n: int) -> object:
    return "\x00RAW" + "[" * n + "0" + "]" * rng.choice((n, n - 1, 0))  # some closed wrong


def _json_dump(v: object) -> bytes:
    text = json.dumps(v, default=lambda o: f"{o}"[:50])
    text = re.sub(r'"\\u0000RAW([^"]*)"', lambda m: m.group(1), text)
    return text.encode("utf-8", "surrogatepass")


def generate(t: Target, rng: random.Random) -> Case:
    try:
        mode, data = _generate(t, rng)
        if len(data) <= MAX_INPUT:
            return mode, data
    except Exception:  # noqa: S110 (the mutant cannot be written: json and big ints)
        pass
    return "raw", mutate_bytes(rng, rng.choice(t.raw), rng.choice(t.raw))  # instead


def _generate(t: Target, rng: random.Random) -> Case:
    r = rng.random()
    signed = bool(t.payloads) and rng.random() < 0.6
    pool = t.payloads if signed else t.raw
    mode = "signed" if signed else "raw"
    seed = rng.choice(pool)
    if r < 0.45:
        if t.kind == "nmea":
            return mode, mutate_nmea(rng, seed)
        if t.kind == "json":
            tree = mutate_tree(rng, json.loads(seed), _json_deep)
            weight(tree)
            tree = mutate_tree(rng, tree, _json_deep)
            weight(tree)
            return mode, _json_dump(tree)
        tree = cbor2.loads(seed)
        for _ in range(rng.randint(1, 3)):
            tree = mutate_tree(rng, tree, _deep)
            weight(tree)  # before the next walk of it, or its writing
        return mode, enc(tree)
    if r < 0.85:
        return mode, mutate_bytes(rng, seed, rng.choice(pool))
    n = rng.choice((0, 1, 4, 16, 64, 200, 1000, 70_000))
    return mode, rng.choice((b"", b"\xd2\x84", b"\xa2\x01", b"$GPGGA,", b"{")) + rng.randbytes(n)
