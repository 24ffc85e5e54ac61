"""Chain checks (center/chain.py): gaps and forks from hand-built, really signed records.

The incremental state the stores keep must say what a check from scratch says, whatever
the order and grouping in which the records arrive: a property test holds it to that.
"""

from __future__ import annotations

import itertools
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from center.chain import (
    ChainState,
    Fork,
    ForkKind,
    Gap,
    GapKind,
    Link,
    Verdict,
    check,
    covered,
    merge,
    place,
)
from contract.cose import decode_sign1
from contract.fix import TimeSource
from contract.records import ChainPosition, RecordType, build, chain_hash, parse_payload

KEY = Ed25519PrivateKey.generate()


def rec(seq: int, prev: bytes, point: str = "P001", boot: int = 1) -> bytes:
    return build(
        KEY,
        device="h0001",
        chain=ChainPosition(boot=boot, seq=seq, prev=prev),
        rtype=RecordType.CHECKIN,
        time_ms=1_772_323_200_000 + seq * 1000,
        time_source=TimeSource.GNSS,
        body={16: point},
    )


def chain(n: int, start: int = 1, prev: bytes = b"") -> list[bytes]:
    """Records start..start+n-1, each linked to the one before."""
    out: list[bytes] = []
    for seq in range(start, start + n):
        out.append(rec(seq, chain_hash(out[-1]) if out else prev))
    return out


def link(raw: bytes) -> Link:
    r = parse_payload(decode_sign1(raw).payload, raw)
    return Link(r.header.seq, r.header.boot, r.header.prev, chain_hash(raw))


def links(raws: list[bytes]) -> list[Link]:
    return [link(r) for r in raws]


CHAIN = chain(12)


def gaps_of(report_gaps: list[tuple[Gap, GapKind]]) -> list[tuple[int, int, GapKind]]:
    return [(g.first, g.last, k) for g, k in report_gaps]


# --- from scratch ---------------------------------------------------------------------------


def test_a_whole_chain_has_no_gaps_and_no_forks() -> None:
    report = check(links(CHAIN))
    assert report.state.records == 12
    assert report.state.last_seq == 12
    assert report.state.last_hash == chain_hash(CHAIN[-1])
    assert report.gaps() == []
    assert report.forks == ()


def test_missing_records_are_gaps_with_their_ranges() -> None:
    kept = [r for i, r in enumerate(CHAIN, start=1) if i not in {1, 2, 5, 9, 10}]
    report = check(links(kept))
    assert gaps_of(report.gaps()) == [
        (1, 2, GapKind.MISSING),
        (5, 5, GapKind.MISSING),
        (9, 10, GapKind.MISSING),
    ]
    assert report.state.missing == 5
    assert report.forks == ()  # no two stored neighbours disagree


def test_a_record_that_does_not_link_to_the_one_before_is_a_fork() -> None:
    forged = rec(6, b"\x01" * 16)  # correctly signed, but not what followed record 5
    rows = [*CHAIN[:5], forged, *CHAIN[6:]]
    report = check(links(rows))
    assert report.forks == (
        Fork(6, ForkKind.LINK, chain_hash(CHAIN[4]), b"\x01" * 16),
        Fork(7, ForkKind.LINK, chain_hash(forged), chain_hash(CHAIN[5])),
    )
    assert report.gaps() == []


def test_two_different_records_for_one_sequence_number_are_a_fork() -> None:
    other = rec(4, chain_hash(CHAIN[2]), point="P999")  # links fine, says something else
    report = check(links([*CHAIN, other]))  # the stored one first, as the store gives them
    assert report.forks == (Fork(4, ForkKind.CONFLICT, chain_hash(CHAIN[3]), chain_hash(other)),)
    assert report.state.records == 12


def test_the_same_record_twice_is_a_duplicate_not_a_fork() -> None:
    done = place(ChainState(), links([*CHAIN[:3], CHAIN[1]]), {})
    assert done.verdicts == (Verdict.NEW, Verdict.NEW, Verdict.NEW, Verdict.DUPLICATE)
    assert done.forks == ()
    assert done.state.records == 3


def test_a_gap_the_chain_links_across_was_skipped_not_lost() -> None:
    # an outbox that recovered from a damaged file moves its numbers on, linking to the
    # newest record it could still read: 1..3, then 4100.. linked to 3
    first = chain(3)
    after = chain(2, start=4100, prev=chain_hash(first[-1]))
    report = check(links([*first, *after]))
    assert gaps_of(report.gaps()) == [(4, 4099, GapKind.SKIPPED)]
    assert report.forks == ()
    # a gap whose far side starts a new chain (prev empty) is missing: nothing links it
    restarted = chain(1, start=4100, prev=b"")
    assert gaps_of(check(links([*first, *restarted])).gaps()) == [(4, 4099, GapKind.MISSING)]


def test_a_gap_the_device_reported_dropped_is_explained() -> None:
    kept = [r for i, r in enumerate(CHAIN, start=1) if i not in {3, 4, 5, 8}]
    report = check(links(kept), dropped=[(2, 4), (5, 5)])
    assert gaps_of(report.gaps()) == [(3, 5, GapKind.DROPPED), (8, 8, GapKind.MISSING)]


def test_merge_and_covered() -> None:
    assert merge([(5, 6), (1, 2), (3, 4), (9, 12), (10, 11)]) == ((1, 6), (9, 12))
    assert merge([(1, 2), (4, 4)]) == ((1, 2), (4, 4))
    m = merge([(1, 6), (9, 12)])
    assert covered(2, 6, m) and covered(9, 9, m)
    assert not covered(6, 9, m) and not covered(0, 1, m) and not covered(13, 13, m)


def test_placing_a_held_sequence_number_needs_its_stored_hash() -> None:
    state = place(ChainState(), links(CHAIN[:3]), {}).state
    assert state.holds(2) and not state.holds(4) and not state.holds(0)
    with pytest.raises(KeyError):
        place(state, [link(CHAIN[1])], {})
    again = place(state, [link(CHAIN[1])], {2: chain_hash(CHAIN[1])})
    assert again.verdicts == (Verdict.DUPLICATE,)
    assert again.state == state


def test_sequence_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        place(ChainState(), [Link(0, 1, b"", bytes(16))], {})


# --- incremental, in any order --------------------------------------------------------------


def test_a_link_fork_is_found_whichever_neighbour_arrives_last() -> None:
    forged = rec(6, b"\x02" * 16)
    for order in ([4, 5, 6], [6, 5, 4], [5, 6, 4], [6, 4, 5]):
        rows = {4: CHAIN[3], 5: CHAIN[4], 6: forged}
        done = place(ChainState(), [link(rows[s]) for s in order], {})
        assert done.forks == (Fork(6, ForkKind.LINK, chain_hash(CHAIN[4]), b"\x02" * 16),), order


def incremental(
    arrivals: list[bytes], cuts: list[int]
) -> tuple[ChainState, set[Fork], dict[int, bytes]]:
    """Place `arrivals` batch by batch as a store would: reading back only held hashes."""
    state = ChainState()
    stored: dict[int, bytes] = {}
    forks: set[Fork] = set()
    bounds = [0, *sorted(cuts), len(arrivals)]
    for a, b in itertools.pairwise(bounds):
        batch = links(arrivals[a:b])
        held = {x.seq: stored[x.seq] for x in batch if state.holds(x.seq)}
        done = place(state, batch, held)
        for x, verdict in zip(batch, done.verdicts, strict=True):
            if verdict is Verdict.NEW:
                stored[x.seq] = x.hash
        forks.update(done.forks)
        state = done.state
    return state, forks, stored


# A pool of records for device h0001: a clean chain with a few extra records that fork it.
POOL = chain(20)
FORKED = {
    7: rec(7, b"\x03" * 16),  # does not link to 6
    11: rec(11, chain_hash(POOL[9]), point="P777"),  # links to 10, conflicts with 11
}


@settings(max_examples=150, deadline=None)
@given(
    keep=st.sets(st.integers(1, 20), min_size=1),
    forks=st.sets(st.sampled_from(sorted(FORKED))),
    dups=st.lists(st.integers(1, 20), max_size=6),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 40), max_size=6),
)
def test_incremental_state_agrees_with_a_check_from_scratch(
    keep: set[int], forks: set[int], dups: list[int], seed: int, cuts: list[int]
) -> None:
    arrivals = [POOL[s - 1] for s in sorted(keep)]
    arrivals += [FORKED[s] for s in sorted(forks)]
    arrivals += [POOL[s - 1] for s in dups if s in keep]  # re-deliveries
    random.Random(seed).shuffle(arrivals)
    cuts = [c for c in cuts if c <= len(arrivals)]
    state, found, stored = incremental(arrivals, cuts)
    # from scratch: every delivery, in arrival order (the first per sequence is stored)
    report = check(links(arrivals))
    assert state == report.state
    assert found == set(report.forks)
    assert state.records == len(stored) == len({link(r).seq for r in arrivals})
    expected_missing = set(range(1, state.last_seq + 1)) - set(stored)
    assert {s for g in state.gaps for s in range(g.first, g.last + 1)} == expected_missing
