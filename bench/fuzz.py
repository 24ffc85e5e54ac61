"""A fuzz campaign over every decoder that reads bytes from outside, as a benchmark.

Run: python bench/fuzz.py [--seconds N] [--seed S] [--target NAME] [--cases N] [--json] [--strict]
     python bench/fuzz.py --target records --replay 'signed:a70101…'   (one case, traceback)

One invariant per decoder, as h11's fuzz test holds: the input parses, or the decoder raises
its documented error (`RecordError`, `RemoteError`, `PlanError`, a `Refusal` value for the
command verifier, which never raises). Any other exception is a failure, and so is a case
taking more than 1 s of CPU time (a case is cut off after 5 s of wall time). What a decoder
accepts must also be usable downstream: a record the center would accept holds only integers
that fit an INTEGER column (int64), and goes through a real in-memory center store and
`picket center status --json` (allow_nan=False); an accepted command, ack or bundle holds
int64 numbers; a GNSS fix has finite coordinates in range and no negative accuracy or DOP; a
plan has finite numbers; the frame decoder gives the same frames fed whole or in pieces.

Inputs come three ways: structured mutations of valid inputs built with the project's own
builders and a test key (integers to 0, -1, 2**31, 2**63, 2**64 and beyond, text to lone
surrogates, NUL and 70,000 characters, types swapped, keys dropped, added and duplicated,
nesting 100,000 deep, CBOR tags), random byte mutations (bit flips, truncation, insertion,
splicing), and random bytes. A signed format is also fuzzed behind a valid signature: a device
holds its own key, so a hostile payload signed correctly is the realistic attack. A case is
`MODE:HEX`: mode `raw` feeds the bytes as they are, `signed` signs them as the payload first;
in HEX, `81*20000` is the byte 0x81 twenty thousand times. Every target runs in a process of
its own (a crash or a hang costs that target only, and its peak memory is its own), from a
seed, so the first N cases of a run are the same every time. It prints figures and exits 0
(unless --strict); a failure is a finding for the decoder, not for this file.

This module is the runner and its command line; the cases are made in bench/fuzzgen.py, the
decoders and their invariants are bench/fuzztargets.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fuzzgen import Case, Target, generate
from bench.fuzztargets import Invariant, targets

# A case taking more CPU time than this is a failure (a hang). CPU time, not wall time: the
# decoders are pure, and a campaign on cores shared with other work must judge them alike.
SLOW_S = 1.0
CUT_S = 5.0  # ... and is interrupted after this long


class CaseTimeout(BaseException):
    """A case ran past CUT_S (raised by SIGALRM)."""


def _alarm(_sig: int, _frame: object) -> None:
    raise CaseTimeout


def attempt(t: Target, case: Case) -> tuple[str | None, str, float]:
    """(failure signature or None, what happened, seconds)."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CUT_S)
    t0 = time.process_time()
    try:
        t.run(*case)
        sig, what = None, "accepted"
    except CaseTimeout:
        sig, what = "Hang", f"interrupted after {CUT_S:.0f} s"
    except t.allowed as exc:
        sig, what = None, type(exc).__name__
    except Invariant as exc:
        sig, what = f"Invariant: {str(exc).split(':')[0]}", str(exc)
    except BaseException as exc:
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if "bench/fuzz" not in f.filename
        ]
        at = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        sig, what = f"{type(exc).__name__} at {at}", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    took = time.process_time() - t0
    if sig is None and took > SLOW_S:
        sig, what = "Slow", f"{took:.2f} s of CPU (limit {SLOW_S:.0f} s)"
    return sig, what, took


def minimize(t: Target, case: Case, sig: str, budget_s: float = 4.0) -> Case:
    """Cut chunks out of the input while it still fails the same way (ddmin, bounded)."""
    mode, data = case
    end = time.monotonic() + budget_s
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and time.monotonic() < end:
        i, cut = 0, False
        while i < len(data) and time.monotonic() < end:
            trial = data[:i] + data[i + chunk :]
            if attempt(t, (mode, trial))[0] == sig:
                data, cut = trial, True
            else:
                i += chunk
        if not cut:
            chunk //= 2
    return mode, data


def show(data: bytes, limit: int = 400) -> str:
    """Hex with runs of 8 or more shown as XX*N; long output cut at `limit` characters."""
    total, data = len(data), data[: 2**20]  # long runs still show whole within the first MiB
    out, hexes, i = [], "", 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        if j - i >= 8:
            out.extend([hexes, f"{data[i]:02x}*{j - i}"] if hexes else [f"{data[i]:02x}*{j - i}"])
            hexes = ""
        else:
            hexes += data[i:j].hex()
        i = j
    text = " ".join([*out, hexes] if hexes else out)
    return text if len(text) <= limit and total == len(data) else f"{text[:limit]}… ({total} bytes)"


def unshow(text: str) -> bytes:
    out = b""
    for tok in text.split():
        byte, _, n = tok.partition("*")
        out += bytes.fromhex(byte) * int(n) if n else bytes.fromhex(tok)
    return out


@dataclass
class Bucket:
    """The failures of one kind: the first case that showed it, and how many did."""

    what: str
    case: Case
    count: int = 0


def campaign(
    name: str, seconds: float, seed: int, max_cases: int, case_file: Path
) -> dict[str, object]:
    t = targets()[name]()
    rng = random.Random(f"{seed}:{name}")
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    buckets: dict[str, Bucket] = {}
    cases, accepted, slowest = 0, 0, (0.0, ("raw", b""))
    end = time.monotonic() + seconds
    seeds: list[Case] = [("raw", s) for s in t.raw] + [("signed", p) for p in t.payloads]
    while (cases < max_cases if max_cases else time.monotonic() < end) or seeds:
        case = seeds.pop() if seeds else generate(t, rng)
        case_file.write_bytes(case[0].encode() + b":" + case[1])
        sig, what, took = attempt(t, case)
        cases += 1
        accepted += what == "accepted"
        if took > slowest[0]:
            slowest = (took, case)
        if sig is not None:
            buckets.setdefault(sig, Bucket(what, case)).count += 1
    failures: list[dict[str, object]] = []
    for sig, b in sorted(buckets.items(), key=lambda kv: -kv[1].count):
        mode, data = minimize(t, b.case, sig) if len(failures) < 8 else b.case
        failures.append({"kind": sig, "count": b.count, "exception": b.what,
                         "reproducer": f"{mode}:{show(data, 4000)}"})  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "target": name, "cases": cases, "accepted": accepted,
        "failed": sum(b.count for b in buckets.values()),
        "failures": failures, "slowest_ms": round(slowest[0] * 1000, 1),
        "slowest_case": f"{slowest[1][0]}:{show(slowest[1][1], 160)}",
        "peak_rss_mib": round(peak / 1024, 1), "growth_mib": round((peak - base_kib) / 1024, 1),
    }  # fmt: skip


# --- the command line ---------------------------------------------------------------------------


def run_child(name: str, a: argparse.Namespace) -> dict[str, object]:
    case_file = Path(tempfile.mkstemp(prefix=f"fuzz-{name}-")[1])
    cmd = [sys.executable, __file__, "--child", name, "--seconds", str(a.seconds), "--seed",
           str(a.seed), "--cases", str(a.cases), "--case-file", str(case_file)]  # fmt: skip
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=a.seconds + 120, check=False
        )
        if p.returncode == 0:
            case_file.unlink()
            return dict(json.loads(p.stdout.splitlines()[-1]))
        why = f"exit {p.returncode}: {p.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired:
        why = "hung past the whole campaign's time"
    mode, _, data = case_file.read_bytes().partition(b":")
    return {"target": name, "cases": None, "failed": 1, "slowest_ms": None, "peak_rss_mib": None,
            "failures": [{"kind": "Crash", "count": 1, "exception": why,
                          "reproducer": f"{mode.decode()}:{show(data, 4000)}"}]}  # fmt: skip
    # (the case file is left behind for a crash, so it can be replayed)


def report(results: list[dict[str, object]]) -> None:
    head = ("target", "cases", "accepted", "failed", "slowest ms", "RSS MiB")
    print(f"{head[0]:<15} " + " ".join(f"{h:>10}" for h in head[1:]))
    for r in results:
        row = (r["cases"], r.get("accepted", "-"), r["failed"], r["slowest_ms"], r["peak_rss_mib"])
        print(f"{r['target']:<15} " + " ".join(f"{v!s:>10}" for v in row))
    for r in results:
        fails = r["failures"]
        assert isinstance(fails, list)
        if r.get("slowest_case"):
            print(f"\n{r['target']}: slowest case {r['slowest_ms']} ms: {r['slowest_case']}")
        for f in fails[:5]:
            print(f"  FAIL {f['kind']} ({f['count']} cases)\n       {f['exception']}")
            print(f"       reproducer {f['reproducer'][:600]}")
        if len(fails) > 5:
            print(f"  … and {len(fails) - 5} more kinds (--json lists them all)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="per target")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=0, help="a fixed number of cases per target")
    ap.add_argument("--target", action="append", help="repeatable; default: all")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--strict", action="store_true", help="exit 1 when anything failed")
    ap.add_argument("--replay", help="MODE:HEX, one case of --target, with its traceback")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--case-file", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        logging.disable(logging.CRITICAL)  # plan warnings and ingest refusals: counted, not shown
        print(json.dumps(campaign(a.child, a.seconds, a.seed, a.cases, a.case_file)))
        return 0
    names = a.target or list(targets())
    if unknown := [n for n in names if n not in targets()]:
        ap.error(f"unknown target(s) {unknown}; known: {', '.join(targets())}")
    if a.replay:
        mode, _, text = a.replay.partition(":")
        targets()[names[0]]().run(mode, unshow(text))
        print("accepted")
        return 0
    results = [run_child(n, a) for n in names]
    if a.json:
        print(json.dumps({"seed": a.seed, "seconds": a.seconds, "targets": results}, indent=1))
    else:
        report(results)
    return 1 if a.strict and any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
