"""Imported by the tests of warm processes. Where ``SLOW_PROBE_LOG`` is set, its import
appends ``start|end PID TIME`` lines to that file and, in between, waits up to
``SLOW_PROBE_S`` seconds until the log shows ``SLOW_PROBE_WAIT_FOR`` imports started (a
barrier between processes; none by default: it waits the whole time)."""

import os
import time

_LOG = os.environ.get("SLOW_PROBE_LOG")
IMPORTED_IN = os.getpid()


def _started(path: str) -> int:
    with open(path) as f:
        return sum(1 for line in f if line.startswith("start "))


if _LOG:
    with open(_LOG, "a") as f:
        f.write(f"start {IMPORTED_IN} {time.time()}\n")
    deadline = time.monotonic() + float(os.environ.get("SLOW_PROBE_S", "0"))
    wanted = int(os.environ.get("SLOW_PROBE_WAIT_FOR", "0")) or None
    while time.monotonic() < deadline and (wanted is None or _started(_LOG) < wanted):
        time.sleep(0.02)
    with open(_LOG, "a") as f:
        f.write(f"end {IMPORTED_IN} {time.time()}\n")
