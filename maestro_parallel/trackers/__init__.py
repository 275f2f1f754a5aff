"""Trackers: the pluggable backends that hold the tasks (see :class:`Tracker`)."""

from .base import Tracker
from .local import LocalTracker
from .memory import MemoryTracker

__all__ = ("LocalTracker", "MemoryTracker", "Tracker")
