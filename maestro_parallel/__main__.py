"""``python -m maestro_parallel``: the same CLI as ``maestro-parallel``."""

from .cli import main

main()
