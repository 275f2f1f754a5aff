"""Trackers: the pluggable backends that hold the tasks (see :class:`Tracker`)."""

from .base import Tracker
from .beads import BeadsTracker
from .local import LocalTracker
from .memory import MemoryTracker

__all__ = ("BeadsTracker", "LocalTracker", "MemoryTracker", "Tracker")
