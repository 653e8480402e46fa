"""Work that waits for the host is woken when another process of the host gives back, and
work that waits only for its own process's slot arms no wait at all."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from runtime.core.execution.hostwait import LAST_LOOK, HostWait
from runtime.core.scheduling.host import HostLedger, HostScheduler

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the wake socket is a Linux abstract socket"
)

# A second process of the host: takes both CPUs, says so, then gives them back when told.
_HOLDER = (
    "import sys\n"
    "from runtime.core.scheduling.host import HostLedger\n"
    "ledger = HostLedger(sys.argv[1])\n"
    "assert ledger.take({'CPU': 2.0}) == []\n"
    "print('holding', flush=True)\n"
    "sys.stdin.readline()\n"
    "ledger.give({'CPU': 2.0})\n"
    "print('given', flush=True)\n"
    "sys.stdin.readline()\n"
)


def test_work_waiting_for_the_host_starts_when_another_process_gives_back(tmp_path):
    path = str(tmp_path / "host.ledger")
    HostLedger(path, {"CPU": 2.0}).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "holding"

        async def main() -> tuple[float, int, bool]:
            loop = asyncio.get_running_loop()
            sched = HostScheduler(HostLedger(path), slot=1.0)
            started = asyncio.Event()
            wait = HostWait(loop, sched, lambda keys: started.set())
            try:
                assert not sched.request("task", {"CPU": 1.0})  # the host is full
                wait.arm()
                assert wait.waiting
                # Let the slow looks back off past the first ones, so that a start within
                # a fraction of the longest wait between looks is the wake-up's doing.
                await asyncio.sleep(0.3)
                assert not started.is_set()
                assert holder.stdin is not None and holder.stdout is not None
                given = time.monotonic()
                holder.stdin.write("give\n")
                holder.stdin.flush()
                await asyncio.wait_for(started.wait(), 10.0)
                took = time.monotonic() - given
                await loop.run_in_executor(None, holder.stdout.readline)
                wait.look()  # nothing is queued any more: the mark goes
                return took, wait.wakes, wait.waiting
            finally:
                wait.close()
                sched.ledger.close()

        took, wakes, still_waiting = asyncio.run(main())
        assert wakes >= 1
        assert took < LAST_LOOK
        assert not still_waiting
    finally:
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
        holder.wait(timeout=30)


def test_work_that_waits_for_its_own_process_slot_arms_no_wait(tmp_path):
    path = str(tmp_path / "host.ledger")
    HostLedger(path, {"CPU": 4.0}).close()

    async def main() -> tuple[bool, bool]:
        sched = HostScheduler(HostLedger(path), slot=1.0)
        wait = HostWait(asyncio.get_running_loop(), sched, lambda keys: None)
        try:
            assert sched.request(1, {"CPU": 1.0})
            assert not sched.request(2, {"CPU": 1.0})  # its slot is busy; the host is not
            wait.arm()
            return wait.waiting, wait._timer is not None
        finally:
            wait.close()
            sched.ledger.close()

    assert asyncio.run(main()) == (False, False)
