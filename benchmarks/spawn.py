"""Time one command and read its own peak RSS with ``os.wait4``; run as ``python -I -S spawn.py OUT ARGV...``.

Linux records the peak RSS of the memory image a process leaves at ``exec``
in that process's ``ru_maxrss``; a child spawned straight from ``run.py``
(a 30 MB process) would report at least 30 MB whatever it used itself.  This
spawner imports nothing but builtins, so the floor it leaves is its own
(about 8 MB, reported as ``spawner_hwm_kb``), below any Python process measured.

Writes ``{"seconds", "status", "maxrss_kb", "spawner_hwm_kb"}`` as JSON to OUT.
"""

import os
import sys
import time


def _hwm_kb():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def main():
    out, argv = sys.argv[1], sys.argv[2:]
    hwm = _hwm_kb()
    started = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    with open(out, "w") as handle:
        handle.write(
            f'{{"seconds": {seconds!r}, "status": {os.waitstatus_to_exitcode(status):d}, '
            f'"maxrss_kb": {usage.ru_maxrss:d}, "spawner_hwm_kb": {"null" if hwm is None else hwm}}}'
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
