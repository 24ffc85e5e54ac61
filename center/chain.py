"""A device's hash chain as the center holds it: gaps (sequence numbers it lacks) and forks.

Every record names its sequence number and the hash of the record before it (keys 4 and
5, docs/records.md), so the center can tell what is missing and whether what it holds
links up. This module is pure: links in, a new state and what was found out. The stores
keep one `ChainState` per device beside the records and move it on in the same
transaction as each batch, so `picket center status` reads a row per device instead of
walking every record; `check` replays stored rows from scratch and must agree with it.

Why the state is enough: every sequence number up to `last_seq` is either stored or in
one of `gaps`, and each gap remembers the hash of the record just below it and the `prev`
of the record just above it. A record arriving at the top links to `last_hash`; one
arriving inside a gap links to the gap's edges. Every adjacent pair of stored records is
therefore compared exactly once, when the second of the two arrives, whatever the order
of arrival, and the store never reads a neighbouring record to do it. The only read is
for a sequence number already held: the stored record's hash, to tell a re-delivery
(same bytes) from a conflicting second record (a fork).

Forks: `LINK`, a record whose `prev` is not the hash of the stored record one below it;
`CONFLICT`, a second, different record for a sequence number already stored. Gaps:
`MISSING` (in transit, or lost), `SKIPPED` (the record after the gap links straight to
the one before it, so nothing was ever made there: an outbox that recovered from a damaged
file moves its numbers on), `DROPPED` (the device evicted them and a DROPPED record says so).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from contract.records import Record, chain_hash


class ForkKind(enum.Enum):
    LINK = "LINK"
    CONFLICT = "CONFLICT"


class GapKind(enum.Enum):
    MISSING = "MISSING"
    SKIPPED = "SKIPPED"
    DROPPED = "DROPPED"


class Verdict(enum.Enum):
    """What became of one record offered to the chain."""

    NEW = "NEW"  # stored now
    DUPLICATE = "DUPLICATE"  # the same bytes are stored already
    CONFLICT = "CONFLICT"  # other bytes are stored for this sequence number: a fork


@dataclass(frozen=True, slots=True)
class Link:
    """The chain fields of one record: where it sits and what it links to."""

    seq: int
    boot: int
    prev: bytes
    hash: bytes

    @classmethod
    def of(cls, rec: Record) -> Link:
        h = rec.header
        return cls(h.seq, h.boot, h.prev, chain_hash(rec.raw))


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers first..last, absent; the stored records either side bound it."""

    first: int
    last: int
    below: bytes | None  # hash of the stored record first - 1; None when first == 1
    above: bytes  # prev of the stored record last + 1

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def kind(self, dropped: Sequence[tuple[int, int]] = ()) -> GapKind:
        """`dropped`: (first, last) ranges the device reported evicted, merged and sorted."""
        if self.below is not None and self.below == self.above:
            return GapKind.SKIPPED
        if covered(self.first, self.last, dropped):
            return GapKind.DROPPED
        return GapKind.MISSING


@dataclass(frozen=True, slots=True)
class Fork:
    """A place where the chain does not hold together.

    LINK at `seq`: the record at seq says `found` (its prev) where the record at seq - 1
    hashes to `expected`. CONFLICT at `seq`: `expected` is the hash of the stored record,
    `found` the hash of the other one (kept in the refused table, reason FORK).
    """

    seq: int
    kind: ForkKind
    expected: bytes
    found: bytes


@dataclass(frozen=True, slots=True)
class ChainState:
    records: int = 0
    last_seq: int = 0
    last_boot: int = 0
    last_hash: bytes = b""
    gaps: tuple[Gap, ...] = ()

    def holds(self, seq: int) -> bool:
        """Whether a record with this sequence number is stored."""
        return 0 < seq <= self.last_seq and _gap_index(self.gaps, seq) < 0

    @property
    def missing(self) -> int:
        return sum(g.size for g in self.gaps)


@dataclass(frozen=True, slots=True)
class Placement:
    state: ChainState
    verdicts: tuple[Verdict, ...]  # one per link offered, in order
    forks: tuple[Fork, ...]  # found by this placement, in the order found


def _gap_index(gaps: Sequence[Gap], seq: int) -> int:
    i = bisect.bisect_right(gaps, seq, key=lambda g: g.first) - 1
    return i if i >= 0 and seq <= gaps[i].last else -1


def place(state: ChainState, links: Iterable[Link], stored: Mapping[int, bytes]) -> Placement:
    """Offer records to a device's chain, in order.

    `stored` maps each sequence number that `state.holds` among `links` to the hash of the
    record stored for it (the caller reads those, and only those). Sequence numbers start
    at 1; the ingest refuses 0 before it gets here.
    """
    known = dict(stored)
    records, last_seq, last_boot, last_hash = (
        state.records,
        state.last_seq,
        state.last_boot,
        state.last_hash,
    )
    gaps = list(state.gaps)
    verdicts: list[Verdict] = []
    forks: list[Fork] = []
    for link in links:
        s = link.seq
        if s < 1:
            raise ValueError("sequence numbers start at 1")
        if s > last_seq:
            if s == last_seq + 1:
                if last_seq and link.prev != last_hash:
                    forks.append(Fork(s, ForkKind.LINK, last_hash, link.prev))
            else:
                below = last_hash if last_seq else None
                gaps.append(Gap(last_seq + 1, s - 1, below, link.prev))
            last_seq, last_boot, last_hash = s, link.boot, link.hash
        else:
            i = _gap_index(gaps, s)
            if i < 0:
                have = known.get(s)
                if have is None:
                    raise KeyError(f"the stored hash of held sequence number {s} was not given")
                if have == link.hash:
                    verdicts.append(Verdict.DUPLICATE)
                else:
                    verdicts.append(Verdict.CONFLICT)
                    forks.append(Fork(s, ForkKind.CONFLICT, have, link.hash))
                continue
            gaps[i : i + 1] = _fill(gaps[i], link, forks)
        records += 1
        known[s] = link.hash
        verdicts.append(Verdict.NEW)
    new = ChainState(records, last_seq, last_boot, last_hash, tuple(gaps))
    return Placement(new, tuple(verdicts), tuple(forks))


def _fill(g: Gap, link: Link, forks: list[Fork]) -> list[Gap]:
    """What is left of gap `g` once `link` (inside it) is stored; links checked at the edges."""
    s = link.seq
    pieces: list[Gap] = []
    if s > g.first:
        pieces.append(Gap(g.first, s - 1, g.below, link.prev))
    elif g.below is not None and link.prev != g.below:
        forks.append(Fork(s, ForkKind.LINK, g.below, link.prev))
    if s < g.last:
        pieces.append(Gap(s + 1, g.last, link.hash, g.above))
    elif g.above != link.hash:
        forks.append(Fork(s + 1, ForkKind.LINK, link.hash, g.above))
    return pieces


def merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """(first, last) ranges, sorted, with overlapping and touching ones joined."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return tuple(out)


def covered(first: int, last: int, merged: Sequence[tuple[int, int]]) -> bool:
    """Whether first..last lies within one of `merged` (as `merge` returns them)."""
    i = bisect.bisect_right(merged, first, key=lambda r: r[0]) - 1
    return i >= 0 and merged[i][1] >= last


@dataclass(frozen=True, slots=True)
class ChainReport:
    state: ChainState
    forks: tuple[Fork, ...]
    dropped: tuple[tuple[int, int], ...]  # merged

    def gaps(self) -> list[tuple[Gap, GapKind]]:
        return [(g, g.kind(self.dropped)) for g in self.state.gaps]


def check(links: Iterable[Link], dropped: Iterable[tuple[int, int]] = ()) -> ChainReport:
    """The chain of one device from its rows alone, in any order.

    Where several links share a sequence number, the first given is the one stored (give
    the records table's row before refused FORK rows); a later one with other bytes is a
    CONFLICT fork, one with the same bytes changes nothing.
    """
    ordered = sorted(links, key=lambda link: link.seq)  # stable: the stored row stays first
    done = place(ChainState(), ordered, {})
    return ChainReport(done.state, done.forks, merge(dropped))
