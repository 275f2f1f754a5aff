"""``python -m maestro_parallel`` and the ``maestro-parallel`` script: the command line."""

from __future__ import annotations

import gc
import signal
import sys

#: The collector's thresholds for the program (the library leaves the host's alone).  A group of
#: a thousand agents allocates steadily (events, results, processes) and almost nothing of it is
#: garbage in a cycle: Python's default (700, 10, 10) ran about 200 collections and 70–95 ms a
#: thousand agents; these run about 60, in 25–50 ms.
GC_THRESHOLDS = (10_000, 20, 20)


def run() -> None:
    """Start the CLI; a Ctrl-C while it is still loading ends quietly with 130.

    While the CLI loads, a Ctrl-C only sets a flag.  Raised as ``KeyboardInterrupt`` it can land in
    a callback the interpreter runs during an import (a module lock's weakref callback), which
    prints it as ignored and carries on: the run would then start as if nothing had been pressed.
    """
    received: list[int] = []
    hold = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not when SIGINT is ignored
    if hold:
        signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as exc:  # one that lands in a class's __set_name__ (a dataclass field) comes wrapped
        if isinstance(exc.__cause__, KeyboardInterrupt):
            sys.exit(130)
        raise
    finally:
        if hold:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        sys.exit(130)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        main()
    finally:
        # What the run allocated goes with the process: frozen, it is not traversed by the
        # collection at shutdown (measured: 20–25 ms of the exit, 6 ms frozen).
        gc.freeze()


if __name__ == "__main__":
    run()
