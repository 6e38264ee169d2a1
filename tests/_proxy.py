"""`CuttableProxy`: a TCP proxy in front of a server, whose connections a test cuts at will."""

from __future__ import annotations

import asyncio
import contextlib


class CuttableProxy:
    """A TCP proxy in front of a server whose connections the test can cut at will (the client
    then sees UNAVAILABLE, as when a server or a network link goes away)."""

    def __init__(self, upstream: str) -> None:
        self._host, port = upstream.rsplit(":", 1)
        self._port = int(port)
        self._listener: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.connections = 0
        self._marker: bytes | None = None
        self._withheld = b""
        self._refusing = False
        self._flowing = asyncio.Event()  #: cleared while stalled (`stall`)
        self._flowing.set()
        #: Set when the proxy vanished after withholding an answer (`vanish_after_answer`).
        self.vanished = asyncio.Event()

    @property
    def address(self) -> str:
        assert self._listener is not None
        host, port = self._listener.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._refusing:  # reached, then reset at once (`refuse`)
            writer.transport.abort()
            return
        self._writers.add(writer)
        await self._flowing.wait()  # stalled: the connection is made, then nothing comes
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:  # the server is down: so is this connection
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for source, sink, answers in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(source, sink, answers))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, answers: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                await self._flowing.wait()  # stalled: held until `admit`
                if answers and self._marker is not None:
                    self._withhold(data)
                    continue
                sink.write(data)
                await sink.drain()
        sink.transport.abort()

    def vanish_after_answer(self, marker: bytes) -> None:
        """From now on, withhold what the server sends; once that holds `marker`, reset every
        connection and refuse new ones: a server that did the work, then went away before its
        answer reached the client."""
        self._marker = marker

    def _withhold(self, data: bytes) -> None:
        assert self._marker is not None
        self._withheld += data
        if self._marker in self._withheld and not self.vanished.is_set():
            self.vanished.set()
            self.cut()
            assert self._listener is not None
            self._listener.close()

    def cut(self) -> None:
        """Reset every open connection (the listener stays open: reconnects succeed)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def refuse(self) -> None:
        """Reset every open connection, and each new one as soon as it is made, until `admit`:
        a server cut off (the port stays the same, so the client reconnects by itself once
        admitted)."""
        self._refusing = True
        self.cut()

    def stall(self) -> None:
        """Forward nothing more, either way, and leave every connection open, new ones too,
        until `admit`: a server that stops answering (a partition), not one that refuses."""
        self._flowing.clear()

    def admit(self) -> None:
        """Pass connections through again, after `refuse` or `stall` (what a stall held is
        forwarded then)."""
        self._refusing = False
        self._flowing.set()

    async def stop_listening(self) -> None:
        """Refuse new connections from now on."""
        assert self._listener is not None
        self._listener.close()
        await self._listener.wait_closed()

    async def close(self) -> None:
        self.cut()
        if self._listener is not None and self._listener.is_serving():
            await self.stop_listening()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
