"""The commands this device answered: the outbox's table `commands`, written and read.

A row holds a command from the center (agent/commands/executor.py, docs/commands.md): its
number, type, outcome and signed bytes, and the sequence number of its receipt. The outbox
writes the row in the transaction that appends the command's records (`Outbox.answer_command`),
so a command is answered exactly once, even across a crash, and the highest number answered
is the replay floor. A salvage puts rows back with the records they answered
(agent/store/opening.py). The rest of the outbox never reads the table.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from agent.store.schema import SQL_INT_MAX

INSERT = "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?)"
_SELECT = "SELECT number, type, outcome, reason, time_ms, command, receipt FROM commands"


@dataclass(frozen=True, slots=True)
class AnsweredCommand:
    """A row of `commands`: a command from the center this device answered."""

    number: int
    type: int
    outcome: int  # contract.records.Outcome
    reason: str | None
    time_ms: int
    command: bytes  # the signed command, as received
    receipt: int  # the sequence number of its receipt record


def row(command: AnsweredCommand) -> tuple[str, tuple[object, ...]]:
    """The statement that stores `command`, for the transaction of its records; a number
    or type no column can hold is refused (ValueError) before anything is written."""
    number, command_type = command.number, command.type
    if not 0 <= number <= SQL_INT_MAX or not 0 <= command_type <= SQL_INT_MAX:
        raise ValueError(f"command {number} (type {command_type}) cannot be stored")
    return INSERT, (
        number,
        command_type,
        command.outcome,
        command.reason,
        command.time_ms,
        command.command,
        command.receipt,
    )


def last(db: sqlite3.Connection) -> int:
    """The highest number of a command answered here (0: none yet): the replay floor."""
    found = db.execute("SELECT max(number) FROM commands").fetchone()
    return int(found[0] or 0)


def listed(db: sqlite3.Connection, command_type: int | None = None) -> list[AnsweredCommand]:
    """Commands answered here (of one type, if given), oldest number first."""
    params: tuple[int, ...] = ()
    sql = _SELECT
    if command_type is not None:
        sql, params = sql + " WHERE type = ?", (command_type,)
    rows = db.execute(sql + " ORDER BY number", params).fetchall()
    return [AnsweredCommand(*r) for r in rows]
