"""Helpers for the coroutine tests: waiting on asynchronous effects, and a
heartbeat that shows whether the event loop was ever blocked."""

import asyncio
import time


async def eventually(cond, seconds=5.0):
    """Waits (on the loop) until cond() holds, at most ``seconds``; the
    caller asserts afterwards."""
    for _ in range(int(seconds / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)


class Heartbeat:
    """Ticks every 10 ms on the running loop from creation until stop(),
    recording the gaps between ticks in ``gaps``: a loop blocked by a call
    shows up as one long gap."""

    def __init__(self):
        self.gaps = []
        self._stopped = False
        self._task = asyncio.ensure_future(self._run())

    async def _run(self):
        last = time.monotonic()
        while not self._stopped:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.gaps.append(now - last)
            last = now

    async def stop(self):
        self._stopped = True
        await self._task
