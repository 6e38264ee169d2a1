"""The server-wide budget of bytes held for WatchJob streams that do not read.

gRPC (grpc.aio) copies every message it sends into the call, and the copy stays in the server
until the client's HTTP/2 flow-control window lets it out: `yield` in a streaming handler returns
only then. A stream whose client never reads therefore holds its last message for as long as
the connection lives, and nothing in grpc.aio can take it back (neither cancelling the handler
nor aborting the call frees it or reaches the client). So the budget is kept before the send: a
stream reserves a message's bytes before yielding it and returns them when the yield returns
(the message has left the server). When a reservation would pass the budget, the stream waits a
moment for others to drain, then ends with RESOURCE_EXHAUSTED naming the `after_sequence` to
resume with; it holds nothing when it ends. Every stream therefore holds at most one message
(a Job is small by construction), and all of them together at most the budget.
"""

from __future__ import annotations

import asyncio

#: Seconds a stream waits for the budget to free up before it ends.
WAIT = 1.0


class StreamBudget:
    """Bytes reserved by messages in flight to WatchJob streams, bounded by `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        #: Streams ended because the budget was used up (a metric).
        self.refused = 0
        self._freed = asyncio.Event()
        self._waiting = 0

    def take(self, size: int) -> bool:
        """Reserve `size` bytes if they fit (a message larger than the whole budget fits when
        nothing else is held, so that one stream always goes on)."""
        if self.held + size > self.limit and self.held:
            return False
        self.held += size
        return True

    async def wait_take(self, size: int, timeout: float = WAIT) -> bool:
        """`take`, waiting up to `timeout` for releases; False (counted) if it never fits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.take(size):
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.refused += 1
                return False
            self._waiting += 1
            try:
                async with asyncio.timeout(remaining):
                    await self._freed.wait()
            except TimeoutError:
                pass
            finally:
                self._waiting -= 1
        return True

    def release(self, size: int) -> None:
        self.held -= size
        if self._waiting:  # wake them all; each tries again
            freed, self._freed = self._freed, asyncio.Event()
            freed.set()
