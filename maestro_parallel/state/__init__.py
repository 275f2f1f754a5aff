"""Everything under ``.flow/maestro``: the only code that writes it.

File primitives, locks, the group-commit journal writer, snapshots, log files
and the readers that the CLI and recovery use.  Imports only the pure layer
(models, events, markers, errors) and :mod:`maestro_parallel.runtime.procfs`.
"""
