"""The one LISTEN connection of a server: its own connection (not the pool's), on every channel
of `notify.py`, handing each notification to the store's handler for its channel.

When the connection fails (the database restarts, an administrator terminates it, the network
drops) it is made again, with a growing delay; once it LISTENs again, `on_connected` is called
so that the server reads again from the tables whatever it may have missed meanwhile (the same
call follows the first connection). Each connection first checks that notifications reach it:
a connection pooler in transaction mode (PgBouncer's `pool_mode = transaction`) accepts LISTEN
but never delivers, and the server says so in its log; it then calls `on_connected` every
IDLE_CHECK seconds instead, so that it reads again what notifications would have told it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

import psycopg

from ..protocol import StorageError
from .notify import CHANNELS, PROBE
from .schema import Connection

log = logging.getLogger(__name__)

#: Seconds without a notification after which the connection is checked with a query.
IDLE_CHECK = 5.0
#: The delay before the first reconnection, doubled after each failure up to RETRY_MAX.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
#: How long a new connection waits for its own test notification.
PROBE_TIMEOUT = 5.0

Handler = Callable[[str], None]


class PgListener:
    """LISTENs on the database's channels for one server, reconnecting until stopped."""

    def __init__(
        self,
        conninfo: str,
        where: str,
        *,
        handlers: Mapping[str, Handler],
        on_connected: Callable[[], None],
        send_probe: Callable[[str], Awaitable[None]],
    ) -> None:
        self._conninfo = conninfo
        self._where = where
        self._handlers = handlers
        self._on_connected = on_connected
        self._send_probe = send_probe  # NOTIFY PROBE from another connection (the pool)
        #: True while a connection LISTENs.
        self.connected = False
        #: False once a connection was found not to receive its test notification.
        self.delivering = True
        #: Set once a connection has checked that notifications reach it (whatever it found).
        self.checked = asyncio.Event()
        #: Connections made so far (the first one included).
        self.connections = 0

    async def run(self) -> None:
        """LISTEN, reconnecting after every failure, until cancelled."""
        delay = RETRY_FIRST
        while True:
            if await self._connect_and_listen(delay):
                delay = RETRY_FIRST  # it worked for a while: the next attempt comes soon
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _connect_and_listen(self, delay: float) -> bool:
        """One connection, until it fails; True if it was LISTENing before it did."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
            log.warning(
                "cannot open the LISTEN connection to %s (%s); trying again in %gs",
                self._where, _first_line(exc), delay,
            )  # fmt: skip
            return False
        try:
            await self._listen(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError, StorageError) as exc:
            log.warning(
                "the LISTEN connection to %s failed (%s); reconnecting",
                self._where, _first_line(exc),
            )  # fmt: skip
        finally:
            listened, self.connected = self.connected, False
            await _close(conn)
        return listened

    async def _listen(self, conn: Connection) -> None:
        for channel in CHANNELS:
            await conn.execute(f"LISTEN {channel}")
        self.connected = True
        self.connections += 1
        if self.connections > 1:
            log.info("the LISTEN connection to %s is back; reading what it missed", self._where)
        self._on_connected()
        # A notification sent from the pool must come back here: one that never comes means
        # LISTEN does not work on this path to the database (a pooler in transaction mode).
        probe = _Probe(secrets.token_hex(8))
        await self._send_probe(probe.token)
        while True:
            # The generator is never left in the middle of what one read brought (psycopg would
            # drop the rest of it): it ends by itself at its timeout.
            async with contextlib.aclosing(conn.notifies(timeout=IDLE_CHECK)) as notifies:
                async for notify in notifies:
                    if notify.channel == PROBE:
                        self._probe_came(probe, notify.payload)
                    else:
                        self._dispatch(notify.channel, notify.payload)
            if probe.overdue():
                self._probe_lost(probe)
            await conn.execute("SELECT 1")  # a connection cut without a word fails here
            if not self.delivering:  # nothing would tell the server: it reads everything again
                self._on_connected()

    def _probe_came(self, probe: _Probe, payload: str) -> None:
        if payload == probe.token and not probe.answered:
            probe.answered = True
            self.delivering = True
            self.checked.set()

    def _probe_lost(self, probe: _Probe) -> None:
        probe.answered = True  # said once
        self.delivering = False
        self.checked.set()
        log.error(
            "notifications do not reach this server's LISTEN connection to %s: is it a "
            "connection pooler in transaction mode (PgBouncer's pool_mode = transaction)? "
            "This server reads again every %gs what notifications would have told it (jobs "
            "queued, events written and cancels asked by other servers); connect it to "
            "PostgreSQL directly, or through a pooler in session mode",
            self._where,
            IDLE_CHECK,
        )

    def _dispatch(self, channel: str, payload: str) -> None:
        handler = self._handlers.get(channel)
        if handler is None:
            return
        try:
            handler(payload)
        except Exception:  # one bad notification must not stop the others
            log.exception("handling the notification %s %r failed", channel, payload)


@dataclasses.dataclass
class _Probe:
    """The test notification of one connection."""

    token: str
    sent: float = dataclasses.field(default_factory=time.monotonic)
    answered: bool = False

    def overdue(self) -> bool:
        return not self.answered and time.monotonic() - self.sent > PROBE_TIMEOUT


async def _close(conn: Connection) -> None:
    with contextlib.suppress(psycopg.Error, OSError):
        await conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
