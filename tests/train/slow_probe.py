"""Imported by the tests of warm processes: its import takes ``SLOW_PROBE_S`` seconds and
appends ``start|end PID TIME`` lines to ``SLOW_PROBE_LOG`` (both from the environment)."""

import os
import time

_LOG = os.environ.get("SLOW_PROBE_LOG")
IMPORTED_IN = os.getpid()

if _LOG:
    with open(_LOG, "a") as f:
        f.write(f"start {IMPORTED_IN} {time.time()}\n")
    time.sleep(float(os.environ.get("SLOW_PROBE_S", "0")))
    with open(_LOG, "a") as f:
        f.write(f"end {IMPORTED_IN} {time.time()}\n")
