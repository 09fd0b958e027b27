"""The clock every policy takes as a parameter, so tests move time instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable

#: Seconds since the epoch, as ``time.time`` gives them.
Clock = Callable[[], float]
