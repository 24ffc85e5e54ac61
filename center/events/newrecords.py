"""A batch's new event records become events, in the batch's own transaction.

The ingest (center/ingest.py) hands `store_events` to the store's `save` (center/batch.py
`NewRecords`), which calls it with each device's records that are new in this batch, on the
connection and inside the transaction that inserts them. So an event exists exactly when
its record is stored: a crash between the two is impossible, a record delivered again (a
duplicate: not new) makes no second event, and a record relayed by LoRa goes the same way
as one sent by IP. The ingest checked every event record's body (`validate_body`), so
`report_of` reads it without fail.

Passed in rather than called by the stores themselves: center/events/ reads the center's
database through the stores' opener (center/database.py), so a store that imported it
would import itself round a circle.
"""

from __future__ import annotations

from collections.abc import Sequence

from center.events.intake import report_of, store_report
from center.tables import Sql
from contract.records import Record, RecordType

__all__ = ["store_events"]


def store_events(sql: Sql, records: Sequence[Record], now_ms: int) -> None:
    """Make the event of each event record among `records` (new in this batch)."""
    for record in records:
        if record.header.type is RecordType.EVENT:
            store_report(sql, report_of(record), now_ms)
