"""A whole plan: every group and every sequential task, ordered by their dependencies (pure).

``maestro-parallel run`` sees the plan as a graph of steps (a group, or one
sequential task) built by :mod:`maestro_parallel.graph` and run by
:mod:`maestro_parallel.scheduler`; this module names that public surface in one
place.
"""

from __future__ import annotations

from .graph import CriticalPath, PlanGraph, PlanStep, build_graph, critical_path, render_text

__all__ = ("CriticalPath", "PlanGraph", "PlanStep", "build_graph", "critical_path", "render_text")
