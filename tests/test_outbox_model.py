"""A stateful model of the outbox (hypothesis): store, read, acknowledge, crash, restart, evict.

The machine drives a real Outbox on real files and keeps, beside it, what must be true:
which records are held (never-evicted ones until acknowledged; health records until
acknowledged or evicted), every sequence number ever handed out in this line of history,
and the newest record (the next one must link to it). Two kinds of crash: the process
goes away (the object is dropped without `close`), and a power cut, emulated by copying
the database, its log and the sidecar as they are on disk (everything up to the last
commit, fsynced) into a new directory and carrying on from the copy; once between
transactions, once in the middle of one (the record being appended never existed).

Invariants: every stored, unacknowledged record that is never evicted is pending; what is
pending is exactly what the model holds, served alerts first, then never-evicted, then
health, each oldest first; sequence numbers strictly increase and never repeat; every
record links to the one before it; the boot strictly increases at each restart; and every
health record that disappeared without an acknowledgement is accounted for by exactly one
DROPPED record (count, first and last sequence, bytes, types).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.store.outbox import Built, Outbox, Stored
from contract.fix import TimeSource
from contract.records import (
    ChainPosition,
    DroppedKey,
    Eviction,
    RecordType,
    alert_body,
    build,
    chain_hash,
    dropped_body,
    health_body,
    open_record,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PUBLIC = KEY.public_key()
DEVICE = "h0042"
T0 = 1_772_323_200_000
KINDS = {
    "checkin": (RecordType.CHECKIN, {16: "P001", 17: 1, 18: 90}),
    "alert": (RecordType.ALERT, alert_body()),
    "health": (RecordType.HEALTH, health_body(depth=7, battery_pct=55, uptime_s=3600)),
}
CAPS = (None, 1500, 3000, 6000)
FILES = ("o.db", "o.db-wal", "o.db.reserve")  # what survives a power cut (not the -shm)


def sign(pos: ChainPosition, rtype: RecordType, body: dict[int, object]) -> Built:
    raw = build(
        KEY,
        device=DEVICE,
        chain=pos,
        rtype=rtype,
        time_ms=T0 + pos.seq,
        time_source=TimeSource.GNSS,
        body=body,
    )
    return Built(rtype, T0 + pos.seq, raw)


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="outbox-model-"))
        self.worlds = 0
        self.dir = self._new_dir()
        self.cap: int | None = 3000
        self.evictions: list[tuple[ChainPosition, Eviction, Built]] = []  # in this transaction
        self.history: list[int] = []  # every seq stored in this line of history, in order
        self.newest: bytes | None = None  # the newest record's bytes: the next links to it
        self.kept: dict[int, Stored] = {}  # never evicted, not acknowledged
        self.health: dict[int, Stored] = {}  # evictable, neither acknowledged nor evicted
        self.read: list[int] = []
        self.evicted = 0
        self.box: Outbox | None = self._open()
        self.boots = [self.outbox.begin_boot()]

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def outbox(self) -> Outbox:
        assert self.box is not None
        return self.box

    def _new_dir(self) -> Path:
        self.worlds += 1
        d = self.root / f"world{self.worlds}"
        d.mkdir()
        return d

    def _open(self) -> Outbox:
        box = Outbox(self.dir / "o.db", DEVICE, cap_bytes=self.cap, on_evict=self._on_evict)
        assert box.recovered_from is None
        return box

    def _on_evict(self, pos: ChainPosition, eviction: Eviction) -> Built:
        built = sign(pos, RecordType.DROPPED, dropped_body(eviction))
        self.evictions.append((pos, eviction, built))
        return built

    def _power_cut_copy(self) -> Path:
        """The files as they are on disk now, in a new directory."""
        d = self._new_dir()
        for name in FILES:
            src = self.dir / name
            if src.exists():
                shutil.copyfile(src, d / name)
        return d

    def _restart(self) -> None:
        self.box = self._open()
        boot = self.outbox.begin_boot()
        assert boot > self.boots[-1], "the boot counter went back or repeated"
        self.boots.append(boot)
        self.read = []

    def _stored(self, records: list[Stored], evictable: bool) -> None:
        """The model side of an append that returned."""
        for s in records:
            self._numbered(s)
            (self.health if evictable else self.kept)[s.seq] = s
        for pos, eviction, built in self.evictions:
            gone = sorted(q for q in self.health if q <= eviction.last_seq)
            assert eviction.count == len(gone)
            assert (eviction.first_seq, eviction.last_seq) == (gone[0], gone[-1])
            assert eviction.bytes == sum(len(self.health[q].raw) for q in gone)
            assert eviction.types == (RecordType.HEALTH,)
            for q in gone:
                del self.health[q]
            self.evicted += len(gone)
            dropped = Stored(pos.seq, RecordType.DROPPED, built.raw)
            body = open_record(dropped.raw, PUBLIC).body
            assert body[DroppedKey.COUNT] == eviction.count
            self._numbered(dropped)
            self.kept[dropped.seq] = dropped
        self.evictions.clear()

    def _numbered(self, s: Stored) -> None:
        rec = open_record(s.raw, PUBLIC)
        assert rec.header.seq == s.seq
        assert not self.history or s.seq > self.history[-1], "sequence numbers went back"
        assert rec.header.boot == self.boots[-1]
        assert rec.header.prev == (b"" if self.newest is None else chain_hash(self.newest))
        self.history.append(s.seq)
        self.newest = s.raw

    # -- rules -----------------------------------------------------------------------------------

    @rule(kind=st.sampled_from(sorted(KINDS)))
    def store(self, kind: str) -> None:
        rtype, body = KINDS[kind]
        evictable = kind == "health"
        s = self.outbox.append(lambda pos: sign(pos, rtype, body), evictable=evictable)
        self._stored([s], evictable)

    @rule(kind=st.sampled_from(sorted(KINDS)), n=st.integers(2, 25))
    def store_many(self, kind: str, n: int) -> None:
        rtype, body = KINDS[kind]
        evictable = kind == "health"
        out = self.outbox.append_many([lambda pos: sign(pos, rtype, body)] * n, evictable=evictable)
        self._stored(out, evictable)

    @rule(limit=st.integers(1, 60))
    def read_batch(self, limit: int) -> None:
        batch = self.outbox.pending(limit)
        held = len(self.kept) + len(self.health)
        assert len(batch) == min(limit, held)
        self.read = [s.seq for s in batch]

    @precondition(lambda self: bool(self.read))
    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self.read), unique=True))
        still = [q for q in chosen if q in self.kept or q in self.health]
        assert self.outbox.acknowledge(chosen) == len(still)
        for q in chosen:
            self.kept.pop(q, None)
            self.health.pop(q, None)

    @rule()
    def process_dies(self) -> None:
        """The process goes away: no close(), the object is simply dropped."""
        self.box = None
        self._restart()

    @rule()
    def power_cut(self) -> None:
        """Between transactions: what is on disk is everything committed."""
        self.dir = self._power_cut_copy()
        self.outbox.close()  # the old world's process; its files are no longer ours
        self._restart()

    @rule(kind=st.sampled_from(sorted(KINDS)))
    def power_cut_during_append(self, kind: str) -> None:
        """In the middle of a transaction: the record in hand never existed."""
        rtype, body = KINDS[kind]
        cut: list[Path] = []

        def build_then_lose_power(pos: ChainPosition) -> Built:
            cut.append(self._power_cut_copy())
            return sign(pos, rtype, body)

        self.outbox.append(build_then_lose_power, evictable=kind == "health")
        self.outbox.close()
        self.evictions.clear()  # whatever that transaction evicted was never evicted
        self.dir = cut[0]
        self._restart()

    @rule(cap=st.sampled_from(CAPS))
    def restart_with_cap(self, cap: int | None) -> None:
        self.outbox.close()
        self.cap = cap
        self._restart()

    @precondition(lambda self: self.cap is not None)
    @rule()
    def flood_health(self) -> None:
        """Health records until the cap evicts some."""
        _, body = KINDS["health"]
        for _ in range(60):
            s = self.outbox.append(lambda pos: sign(pos, RecordType.HEALTH, body), evictable=True)
            evictions = len(self.evictions)
            self._stored([s], evictable=True)
            if evictions:
                # with room left by records never evicted, an eviction gets under the cap
                assert self.cap is not None
                if sum(len(k.raw) for k in self.kept.values()) < self.cap // 2:
                    assert self.outbox.stored_bytes <= self.cap
                    assert not self.outbox.cap_exceeded
                break

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def pending_is_exactly_what_is_held(self) -> None:
        if self.box is None:
            return
        pending = self.outbox.pending(100_000)
        assert {s.seq for s in pending} == set(self.kept) | set(self.health)
        assert all(s.raw == (self.kept.get(s.seq) or self.health[s.seq]).raw for s in pending)
        rank = [
            (0 if s.type is RecordType.ALERT else 2 if s.seq in self.health else 1, s.seq)
            for s in pending
        ]
        assert rank == sorted(rank), "pending is out of order"
        assert self.outbox.stored_bytes == sum(len(s.raw) for s in pending)
        assert self.outbox.depth() == len(pending)

    @invariant()
    def numbers_never_repeat(self) -> None:
        assert len(set(self.history)) == len(self.history)
        if self.box is not None:
            assert self.outbox.last_seq == (self.history[-1] if self.history else 0)

    def teardown(self) -> None:
        if self.box is not None:
            self.box.close()
        shutil.rmtree(self.root, ignore_errors=True)


OutboxMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOutboxModel = OutboxMachine.TestCase
