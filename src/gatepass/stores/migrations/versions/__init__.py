"""Revisions of the gatepass schema, oldest first: ``v0001_baseline``, ``v0002_...``."""
