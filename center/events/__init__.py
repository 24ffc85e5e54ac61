"""Field events at the center: the lifecycle, the catalogue, the tables, the Open311 API.

A room of the center (docs/events.md): `lifecycle.py` is the pure state machine of an
event's status, `catalogue.py` the district's categories, `schema.py` and `store.py` the
events tables in both SQL dialects (`connection.py` opens the database), `duplicates.py`
the reports offered for merging, `open311.py` the pure GeoReport v2 mapping, `api.py` its
HTTP driver, `intake.py` a stored event record turned into an event.
"""
