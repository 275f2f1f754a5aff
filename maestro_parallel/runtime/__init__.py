"""Running groups: processes, the coordinator, one group run, hooks and the sync facade.

Async code that orchestrates I/O; every decision it needs is a plain function
in the pure layer, :mod:`maestro_parallel.agents` or a small pure module here.
"""
