"""Carrying out the center's commands exactly once, against the outbox.

**Exactly once, even if killed mid-way.** What a command changes is of two kinds. Records
(the receipt; a roll call's signed answer) are written by `Outbox.answer_command` in the
same transaction as the row that marks the command's number answered, so after a crash both
are durable or neither is: killed before the commit, the command was never seen, and its
redelivery (MQTT QoS 1, the broker's retained copy, or the center sending it again) is
carried out then; killed after, its redelivery is a replay and is ignored, because its
receipt is already in the outbox (or already at the center). A replay is never answered,
so each command number costs at most one receipt, however often it arrives.

Everything else (the agenda a task bundle sets, the settings a config change applies, a
reminder on the screen) is never stored on its own: it is derived from the answered
commands in the outbox, at start-up by `restore` and right after the commit otherwise.
A kill between the commit and the side effect loses nothing: the next start derives it.

A key rotation (agent/identity/rotation.py) is the one command whose side effect is not derived
from the outbox but kept in files: its new key pair is staged on disk before the receipt
is committed (the receipt announces the new next pair) and swapped in after it, and a
start-up (`rotation.recover`) finishes or undoes a swap a kill interrupted, by asking the
outbox whether the receipt was committed. Its receipt is signed with the old key; every
record after the swap with the new one, and the uplink is told to load the new
certificate for its next connection (`on_rotated`).

The executor is synchronous and clock-free like `DeviceAgent`: the uplink hands it the
bytes (`on_command`), `clock` says the time. Without a known time the device cannot tell
an expired command from a fresh one: it leaves the command unanswered (not used up), and
the center's next delivery of it is judged once the time is known.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import AgendaItem, Assignment, Plan
from agent.errors import StorageError
from agent.events.mine import MyEvents
from agent.gnss.timekeeper import Stamp
from agent.identity import rotation
from agent.store.cmdfloor import read_floor, write_floor
from agent.store.outbox import Builder, Built, Stored
from agent.store.schema import SQL_INT_MAX
from contract.commands import (
    DOCK_COMMANDS,
    EVENT_COMMANDS,
    Command,
    CommandVerifier,
    ConfigChange,
    Reason,
    Refusal,
    Reminder,
    RollCall,
    RotateKeys,
    Settings,
    TaskBundle,
    local_date,
    read_stored,
)
from contract.errors import LocalError, RecordError
from contract.eventcommands import Catalogue, EventStatus
from contract.records import ChainPosition, Outcome, RecordType, build, receipt_body, rollcall_body

__all__ = ["CommandExecutor", "CommandStats", "Handled", "bundle_agenda"]

log = logging.getLogger(__name__)
NO_TIME = "no time"


@dataclass(frozen=True, slots=True)
class Handled:
    """What became of one command message."""

    outcome: Outcome | None  # None: not answered (forged, misaddressed, replayed, no time)
    reason: str | None  # the receipt's reason, or why it was not answered
    number: int | None = None
    stored: tuple[Stored, ...] = ()


@dataclass(slots=True)
class CommandStats:
    done: int = 0
    refused: int = 0
    ignored: Counter[str] = field(default_factory=Counter)  # by reason: "replay", …


def bundle_agenda(plan: Plan, bundle: TaskBundle, device: str) -> list[AgendaItem]:
    """The agenda of a task bundle: its lines on its date, windows from the plan."""
    assignment = Assignment(bundle.lines, bundle.date, device=device)
    return dataclasses.replace(plan, assignments=(assignment,)).agenda(bundle.date, device)


def bundle_problem(plan: Plan, bundle: TaskBundle) -> str | None:
    """Why this device cannot carry out `bundle` (None: it can)."""
    if bundle.plan_version != plan.version:
        return f"plan version {bundle.plan_version} not on device"
    known = {line.id for line in plan.lines}
    missing = [line for line in bundle.lines if line not in known]
    if missing:
        return f"line {missing[0]} not in plan version {plan.version}"
    return None


def _show(command: Command, reminder: Reminder) -> None:
    log.info("reminder (command %d): %s", command.number, reminder.text)


class CommandExecutor:
    def __init__(
        self,
        agent: DeviceAgent,
        verifier: CommandVerifier,
        clock: Callable[[], Stamp],
        *,
        team: str | None = None,
        on_reminder: Callable[[Command, Reminder], None] = _show,
        identity: Path | None = None,
        on_rotated: Callable[[], None] = lambda: None,
    ) -> None:
        """`identity`: the device folder whose keys a key rotation swaps (agent/identity/enroll.py
        layout; None: key rotations are refused). `on_rotated`: called after a swap, so
        that the next connection presents the new certificate."""
        self.agent = agent
        self.verifier = verifier
        self.clock = clock
        self.team = team  # from the config file; a config change may override it
        self.settings = Settings()
        self.bundle: TaskBundle | None = None  # the newest task bundle carried out
        self.reminders: list[tuple[Command, Reminder]] = []  # carried out, newest last
        self.stats = CommandStats()
        self._on_reminder = on_reminder
        self.identity = identity
        self._on_rotated = on_rotated
        self.floor_path: Path | None = None  # `keep_floor`: the floor kept beside the keys
        self._file_floor = 0
        self.events: MyEvents | None = None  # the device's own events (agent/events/mine.py)

    # -- the replay floor ----------------------------------------------------------------------

    def keep_floor(self, path: Path) -> None:
        """Keep the replay floor also in the file at `path` (agent/store/cmdfloor.py), next
        to the device's keys, so that losing the outbox cannot reset it; brings the file
        level with the outbox (a kill may have come between an answer and its write)."""
        self.floor_path = path
        self._file_floor = read_floor(path, self.agent.device)
        if self.agent.outbox.last_command() > self._file_floor:
            self._write_floor(self.agent.outbox.last_command())
        elif self._file_floor > self.agent.outbox.last_command():
            log.warning(
                "%s: the outbox knows commands up to %d, the floor file up to %d: older "
                "numbers are refused as replays",
                self.agent.device, self.agent.outbox.last_command(), self._file_floor,
            )  # fmt: skip

    def last_command(self) -> int:
        """The replay floor: the highest command number answered, by the outbox or the file."""
        return max(self.agent.outbox.last_command(), self._file_floor)

    def _write_floor(self, number: int) -> None:
        if self.floor_path is None or number <= self._file_floor:
            return
        try:
            write_floor(self.floor_path, self.agent.device, number)
        except StorageError as exc:  # the outbox holds the answer: the floor stands there
            log.error("%s: %s", self.agent.device, exc)
            return
        self._file_floor = number

    # -- state derived from the outbox -------------------------------------------------------

    def restore(self) -> None:
        """At start-up: settings, the newest task bundle and the reminders not yet expired,
        from the commands this device carried out; today's bundle becomes the agenda."""
        for row in self.agent.outbox.answered_commands():
            if row.outcome != Outcome.DONE:
                continue
            try:
                self._remember(read_stored(row.command))
            except RecordError as exc:  # stored by an older version that understood more
                log.error("command %d in the outbox cannot be read again: %s", row.number, exc)
        now = self.clock().time_ms
        for command, reminder in self.reminders:
            if now is None or now <= command.expires_ms:
                self._on_reminder(command, reminder)
        bundle = self.bundle
        if bundle is not None and now is not None:
            today = local_date(now, self.agent.plan.utc_offset_min)
            if bundle.date == today:
                self.agent.set_agenda(today, self.agenda(today))

    def agenda(self, date: dt.date) -> list[AgendaItem]:
        """The agenda for `date`: the task bundle for that date if there is one, else the
        plan's assignments for this device and its team."""
        plan, bundle = self.agent.plan, self.bundle
        if bundle is not None and bundle.date == date and bundle_problem(plan, bundle) is None:
            return bundle_agenda(plan, bundle, self.agent.device)
        return plan.agenda(date, self.agent.device, self.settings.team or self.team)

    def _remember(self, command: Command) -> None:
        body = command.body
        if isinstance(body, TaskBundle):
            self.bundle = body
        elif isinstance(body, ConfigChange):
            self.settings = self.settings.apply(body)
        elif isinstance(body, Reminder):
            self.reminders.append((command, body))
        elif self.events is not None and isinstance(body, Catalogue):  # newer versions only
            self.events.apply_catalogue(body)
        elif self.events is not None and isinstance(body, EventStatus):  # idempotent
            self.events.apply_status(command.number, body)

    def _apply(self, command: Command, now_ms: int) -> None:
        """The side effects of a command just carried out (and committed)."""
        body = command.body
        today = local_date(now_ms, self.agent.plan.utc_offset_min)
        if isinstance(body, Reminder):
            self._on_reminder(command, body)
        elif (isinstance(body, TaskBundle) and body.date == today) or (
            isinstance(body, ConfigChange) and "team" in body.settings
        ):
            self.agent.set_agenda(today, self.agenda(today))

    # -- one command ---------------------------------------------------------------------------

    def on_command(self, raw: bytes) -> None:
        """The uplink's hook for …/down/cmd. Bad input is counted; a full disk raises."""
        self.handle(raw)

    def handle(self, raw: bytes) -> Handled:
        stamp = self.clock()
        if stamp.time_ms is None:
            self._ignore(NO_TIME, "the device does not know the time yet")
            return Handled(None, NO_TIME)
        now = stamp.time_ms
        verdict = self.verifier.check(raw, now, self.last_command())
        if any(v is not None and not 0 <= v <= SQL_INT_MAX for v in (verdict.number, verdict.type)):
            detail = f"command {verdict.number} (type {verdict.type}) is beyond what can be stored"
            self._ignore("number out of range", detail)  # the contract bounds it lower
            return Handled(None, "number out of range", None)
        if isinstance(verdict, Refusal):
            if not verdict.answered:
                self._ignore(verdict.reason.value, verdict.detail)
                return Handled(None, verdict.reason.value, verdict.number)
            assert verdict.number is not None and verdict.type is not None
            refused = verdict.receipt_reason
            return self._answer(raw, stamp, verdict.number, verdict.type, refused)
        body = verdict.body
        if isinstance(body, RotateKeys):
            return self._rotate(raw, stamp, verdict, body)
        problem = self.problem(verdict)
        if problem is not None:
            return self._answer(raw, stamp, verdict.number, verdict.type, problem)
        answer: Mapping[int, object] | None = None
        if isinstance(body, RollCall):
            answer = rollcall_body(body.challenge, self.agent.last_fix)
        handled = self._answer(raw, stamp, verdict.number, verdict.type, None, rollcall=answer)
        self._remember(verdict)
        self._apply(verdict, now)
        return handled

    def problem(self, command: Command) -> str | None:
        """Why this device cannot carry out `command` now (None: it can): the receipt's
        reason. A dock's executor (agent/dock/executor.py) judges the dock's commands."""
        if isinstance(command.body, TaskBundle):
            return bundle_problem(self.agent.plan, command.body)
        if command.type in DOCK_COMMANDS:
            return "this device is not a dock"
        if command.type in EVENT_COMMANDS and self.events is None:
            return "not handled by this device yet"
        return None

    def _answer(
        self,
        raw: bytes,
        stamp: Stamp,
        number: int,
        command_type: int,
        refused: str | None,
        *,
        rollcall: Mapping[int, object] | None = None,
        commitment: rotation.Staged | None = None,
    ) -> Handled:
        """Store the receipt (DONE, or REFUSED when `refused` says why) and a roll call's
        answer, with the command marked answered, in one transaction. A key rotation's
        receipt carries the new next pair (`commitment`)."""
        outcome, reason = (Outcome.DONE, None) if refused is None else (Outcome.REFUSED, refused)
        builds: list[Builder] = []
        if rollcall is not None:
            builds.append(self._builder(RecordType.ROLLCALL, stamp, rollcall))
        receipt = receipt_body(
            number,
            command_type,
            outcome,
            reason,
            next_signing_key=None if commitment is None else commitment.next_signing_key,
            next_csr=None if commitment is None else commitment.next_csr,
        )
        builds.append(self._builder(RecordType.RECEIPT, stamp, receipt))
        assert stamp.time_ms is not None
        stored = self.agent.outbox.answer_command(
            number=number,
            command_type=command_type,
            outcome=int(outcome),
            reason=reason,
            time_ms=stamp.time_ms,
            command=raw,
            builds=builds,
        )
        self._write_floor(number)
        if outcome is Outcome.DONE:
            self.stats.done += 1
            log.info("%s: command %d (type %d) done", self.agent.device, number, command_type)
        else:
            self.stats.refused += 1
            log.warning("%s: command %d refused: %s", self.agent.device, number, reason)
        for s in stored:
            self.agent.created[s.type] += 1
            self.agent.on_stored(s)
        return Handled(outcome, reason, number, tuple(stored))

    def _rotate(self, raw: bytes, stamp: Stamp, command: Command, body: RotateKeys) -> Handled:
        """Check the certificate, stage the new keys, commit the receipt (signed with the
        old key, announcing the new next pair), then swap (agent/identity/rotation.py)."""
        folder, now = self.identity, stamp.time_ms
        assert now is not None
        if folder is None:
            refused = "key rotation is not set up on this device"
            return self._answer(raw, stamp, command.number, command.type, refused)
        answered = rotation.committed(self.agent.outbox)
        if rotation.recover(folder, answered) == "completed":  # an earlier swap had failed
            self._adopt(folder, None)
        problem = rotation.check(folder, body.cert, self.agent.device, now)
        if problem is not None:
            return self._answer(raw, stamp, command.number, command.type, problem)
        try:
            staged = rotation.stage(folder, body.cert, command.number)
            handled = self._answer(
                raw, stamp, command.number, command.type, None, commitment=staged
            )
        except BaseException:
            if not answered(command.number):  # never announced: forget the staged pair
                rotation.discard(folder)
            raise
        self._swap(folder, command.number)
        return handled

    def _swap(self, folder: Path, number: int) -> None:
        """After the commit: the staged keys go in place; records are signed with the new
        key from now on, the next connection presents the new certificate. A failure here
        leaves the old key in use (the registry still trusts it) and the swap pending for
        the next start."""
        try:
            rotation.complete(folder)
        except OSError as exc:
            log.error(
                "%s: key rotation %d committed, but the swap failed (%s); the next start "
                "completes it",
                self.agent.device,
                number,
                exc,
            )
            return
        self._adopt(folder, number)

    def _adopt(self, folder: Path, number: int | None) -> None:
        """Sign with the record key now in place; the next connection uses the new cert."""
        try:
            self.agent.key = rotation.load_signing_key(folder)
        except LocalError as exc:
            log.error("%s: the new record key cannot be loaded: %s", self.agent.device, exc)
            return
        log.info("%s: key rotation %s: new keys in use", self.agent.device, number or "")
        try:
            self._on_rotated()
        except LocalError as exc:
            log.error("%s: the new certificate cannot be loaded: %s", self.agent.device, exc)

    def _builder(self, rtype: RecordType, stamp: Stamp, body: Mapping[int, object]) -> Builder:
        agent = self.agent
        time_ms = stamp.time_ms
        assert time_ms is not None

        def make(pos: ChainPosition) -> Built:
            raw = build(
                agent.key,
                device=agent.device,
                chain=pos,
                rtype=rtype,
                time_ms=time_ms,
                time_source=stamp.source,
                body=body,
            )
            return Built(rtype, time_ms, raw)

        return make

    def _ignore(self, reason: str, detail: str) -> None:
        """Count a command that is not answered; log the first of each kind at WARNING.

        Replays are normal (QoS 1 redelivery, the broker's retained copy at every reconnect)
        and never rise above DEBUG.
        """
        self.stats.ignored[reason] += 1
        first = self.stats.ignored[reason] == 1 and reason != Reason.REPLAY.value
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "%s: command ignored (%s): %s", self.agent.device, reason, detail)
