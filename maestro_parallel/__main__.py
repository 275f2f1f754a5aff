"""``python -m maestro_parallel`` and the ``maestro-parallel`` script: the command line."""

from __future__ import annotations

import sys


def run() -> None:
    """Start the CLI; a Ctrl-C while it is still loading ends quietly with 130."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as exc:  # one that lands in a class's __set_name__ (a dataclass field) comes wrapped
        if isinstance(exc.__cause__, KeyboardInterrupt):
            sys.exit(130)
        raise
    main()


if __name__ == "__main__":
    run()
