"""``python -m maestro_parallel`` and the ``maestro-parallel`` script: the command line."""

from __future__ import annotations

import sys


def run() -> None:
    """Start the CLI; a Ctrl-C while it is still loading ends quietly with 130."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
