"""What the frame seals (issue 15 item 3) cost the transport: sealed vs unsealed, interleaved.

Two :class:`~runtime.core.wire.transport.Connection` ends over loopback TCP in this one
process (uvloop), so every byte is framed, sealed, read and checked on one core: the cost is
the CPU the seals add, not hidden by a second core. Three workloads, each run with seals on
and off in alternating short trials (a busy, shared machine drifts; alternating keeps both
sides in the same conditions), reporting medians and their ratio:

- ping-pong: one request, wait for its answer (as a sync actor call);
- bursts: 1,000 requests sent at once, then all answers awaited (as async actor calls);
- 4 MiB frames one way (a large object between hosts).

Usage: ``python benchmarks/frame_seals.py [--trials 9] [--seconds 0.4]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import uvloop

from runtime.core.wire import protocol as p
from runtime.core.wire.transport import Connection

TOKEN = b"b" * 32


class Pair:
    """A dialer and a server end; the server answers each Reply(rid) with Reply(rid)."""

    def __init__(self, integrity: bool) -> None:
        self.integrity = integrity
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.received = 0
        #: Set once ``received`` reaches ``wanted`` (big frames: the sender waits on it).
        self.wanted = 0
        self.reached = asyncio.Event()
        self.server: Connection | None = None
        self.client: Connection | None = None

    def _serve(self, conn: Connection, msg: p.Message, raw: memoryview) -> None:
        assert isinstance(msg, p.Reply | p.ObjectReply)
        self.received += 1
        if self.received >= self.wanted:
            self.reached.set()
        if isinstance(msg, p.Reply):
            conn.send(p.Reply(msg.rid, value=msg.value))

    def _answer(self, conn: Connection, msg: p.Message, raw: memoryview) -> None:
        assert isinstance(msg, p.Reply)
        fut = self.waiters.pop(msg.rid, None)
        if fut is not None:
            fut.set_result(None)

    def _make(self, dialer: bool) -> Connection:
        conn = Connection(
            local_id="dialer" if dialer else "server",
            token=TOKEN,
            on_message=self._answer if dialer else self._serve,
            on_close=lambda _c, _e: None,
            dialer=dialer,
            integrity=self.integrity,
        )
        if not dialer:
            self.server = conn
        return conn

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._srv = await loop.create_server(lambda: self._make(False), "127.0.0.1", 0)
        port = self._srv.sockets[0].getsockname()[1]
        _, self.client = await loop.create_connection(lambda: self._make(True), "127.0.0.1", port)
        await self.client.authenticated

    async def close(self) -> None:
        for conn in (self.client, self.server):
            if conn is not None:
                conn.abort()
        self._srv.close()
        await self._srv.wait_closed()

    async def ping_pong(self, seconds: float) -> float:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fut = loop.create_future()
            self.waiters[n] = fut
            self.client.send(p.Reply(n, value=b"x" * 64))
            await fut
            n += 1
        return n / (time.perf_counter() - start)

    async def bursts(self, seconds: float) -> float:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            futs = []
            for _ in range(1000):
                fut = loop.create_future()
                self.waiters[n] = fut
                futs.append(fut)
                self.client.send(p.Reply(n, value=b"x" * 64))
                n += 1
            await asyncio.gather(*futs)
        return n / (time.perf_counter() - start)

    async def _until(self, count: int) -> None:
        if self.received < count:
            self.wanted = count
            self.reached.clear()
            await self.reached.wait()

    async def big_frames(self, seconds: float) -> float:
        assert self.client is not None
        payload = bytes(4 << 20)
        sent, start = 0, time.perf_counter()
        before = self.received
        while time.perf_counter() - start < seconds:
            value = p.Value(1, b"", [len(payload)])
            self.client.send(p.ObjectReply(0, value=value), [payload])
            sent += 1
            await self.client.drain()
            await self._until(before + sent - 4)  # at most 4 frames in flight
        await self._until(before + sent)
        return sent * len(payload) / (time.perf_counter() - start) / 1e9


async def trial(integrity: bool, name: str, seconds: float) -> float:
    pair = Pair(integrity)
    await pair.open()
    try:
        work: Callable[[float], Awaitable[float]] = getattr(pair, name)
        await work(seconds / 4)  # warm up
        return await work(seconds)
    finally:
        await pair.close()


async def main(trials: int, seconds: float) -> None:
    rows = [("ping-pong", "ping_pong", "round trips/s"), ("bursts of 1,000", "bursts", "msgs/s")]
    rows.append(("4 MiB frames", "big_frames", "GB/s"))
    print(f"{'workload':<18}{'unsealed':>14}{'sealed':>14}{'sealed/unsealed':>18}")
    for label, name, unit in rows:
        off, on, ratios = [], [], []
        for _ in range(trials):
            a = await trial(False, name, seconds)
            b = await trial(True, name, seconds)
            off.append(a)
            on.append(b)
            ratios.append(b / a)
        fmt = "{:>14.3f}" if unit == "GB/s" else "{:>14,.0f}"
        print(
            f"{label:<18}"
            + fmt.format(statistics.median(off))
            + fmt.format(statistics.median(on))
            + f"{statistics.median(ratios):>17.3f}  ({unit}, median of {trials})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.4)
    args = parser.parse_args()
    uvloop.run(main(args.trials, args.seconds))
