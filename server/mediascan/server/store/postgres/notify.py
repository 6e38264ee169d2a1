"""The NOTIFYs the writes of one server send, and how often.

A notification is a wake-up, never the data: its channel says what to read again and its
payload is an id (`job_id:sequence` for events, nothing for the queue). It is sent inside the
writing transaction, so that PostgreSQL delivers it only once that commits. NOTIFY takes a lock
at commit shared by every notifying transaction of the database, so a server sends few: per key
(one job's events, the queue) at most one every interval, unless the write is urgent (a state
change). A write that is not allowed to notify leaves its notification to a trailing one, sent
by itself once the interval is over and the write committed, with the newest payload."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from .schema import Connection

log = logging.getLogger(__name__)

#: The channels every server LISTENs to.
QUEUE = "mediascan_queue"  #: a job was queued (or re-queued): claim
EVENTS = "mediascan_events"  #: `job_id:sequence`: events of a job were committed
CANCEL = "mediascan_cancel"  #: `job_id`: CancelJob asked to stop this RUNNING job
PROBE = "mediascan_probe"  #: a LISTEN connection checking that notifications reach it
#: "": batches of files to probe were queued (claim); a job id: batches of it were finished
BATCHES = "mediascan_batches"
LIBRARY = "mediascan_library"  #: `library_id:last_sequence`: changes of a library were committed
CHANNELS = (QUEUE, EVENTS, CANCEL, PROBE, BATCHES, LIBRARY)

#: Most notifications of one job's events a second (state changes are never held back).
EVENTS_INTERVAL = 0.25
#: Most notifications of one library's changes a second, from one server.
LIBRARY_INTERVAL = 0.25
#: Most queue wake-ups a server sends a second (a burst of submits wakes the others once).
QUEUE_INTERVAL = 0.1
#: Keys kept before the idle ones are forgotten.
_PRUNE_AT = 1000

Send = Callable[[str, str], Awaitable[None]]


async def notify(conn: Connection, channel: str, payload: str) -> None:
    """NOTIFY in the transaction of `conn`: delivered once it commits, or never."""
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


@dataclasses.dataclass
class _Key:
    sent: float = 0.0  #: time.monotonic() of the last notification allowed
    #: The payload of the trailing notification due, and its timer.
    payload: str | None = None
    timer: asyncio.TimerHandle | None = None


class NotifyLimiter:
    """Decides which writes notify inside their transaction, and sends the trailing ones."""

    def __init__(self, send: Send) -> None:
        self._send = send  # sends one notification by itself (its own transaction)
        self._keys: dict[tuple[str, str], _Key] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def now(self, channel: str, key: str, *, interval: float, urgent: bool = False) -> bool:
        """True: the write about to run notifies in its transaction (counted as sent now).
        False: too soon after the last one; call `later` once the write committed."""
        entry = self._keys.get((channel, key))
        moment = time.monotonic()
        if entry is None:
            if len(self._keys) >= _PRUNE_AT:
                self._prune(moment)
            entry = self._keys[(channel, key)] = _Key()
        if urgent or moment - entry.sent >= interval:
            entry.sent = moment
            return True
        return False

    def later(self, channel: str, key: str, payload: str, *, interval: float) -> None:
        """A committed write did not notify: send `payload` once the interval is over (a newer
        payload replaces one still due)."""
        entry = self._keys.setdefault((channel, key), _Key())
        entry.payload = payload
        if entry.timer is None:
            delay = max(0.0, entry.sent + interval - time.monotonic())
            loop = asyncio.get_running_loop()
            entry.timer = loop.call_later(delay, self._trailing, channel, key)

    def close(self) -> None:
        for entry in self._keys.values():
            if entry.timer is not None:
                entry.timer.cancel()
        self._keys.clear()

    def _trailing(self, channel: str, key: str) -> None:
        entry = self._keys.get((channel, key))
        if entry is None or entry.payload is None:
            return
        payload, entry.payload, entry.timer = entry.payload, None, None
        entry.sent = time.monotonic()
        task = asyncio.ensure_future(self._send_logged(channel, payload))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_logged(self, channel: str, payload: str) -> None:
        try:
            await self._send(channel, payload)
        except Exception as exc:  # the listeners catch up when they re-check or reconnect
            log.warning("could not send the notification %s %s: %s", channel, payload, exc)

    def _prune(self, moment: float) -> None:
        idle = [
            key
            for key, entry in self._keys.items()
            if entry.timer is None and moment - entry.sent > EVENTS_INTERVAL
        ]
        for key in idle:
            del self._keys[key]
