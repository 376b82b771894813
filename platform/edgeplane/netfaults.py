"""A fault-injecting TCP proxy: what a lossy cellular link does to a TCP session, on the loopback.

Put it between a host and its broker (or any TCP peer) and make the link bad while the test or
benchmark runs::

    proxy = FaultProxy("127.0.0.1", broker.port)
    await proxy.start()
    uplink_url = proxy.url("mqtt")              # give the host this instead of the broker's
    proxy.latency, proxy.jitter = 0.2, 0.1      # 100-300 ms each way, order kept
    proxy.bandwidth = 20_000                    # bytes/s each way
    await proxy.stall(3)                        # nothing moves for 3 s, connections stay open
    proxy.reset_all()                           # every connection gets a TCP RST
    proxy.reset_every = 2.0                     # ... and then one about every 2 s
    proxy.black_hole = True                     # connections accepted, nothing ever answered
    await proxy.stop()

Packet loss itself never reaches an application over TCP: the kernel retransmits, and what the
application sees is delay, jitter, a lower rate, stalls and, when the loss lasts, a reset or a
peer that has gone silent. Those are what this proxy makes, in userspace, so it needs no root,
no ``netem`` and no network namespace. Every setting can change while connections are open.

It is part of the test kit (re-exported by :mod:`edgeplane.testing`) so plugin authors can test
their own connectors and transports against a bad link.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from dataclasses import dataclass

__all__ = ["FaultProxy", "ProxyStats"]

_CHUNK = 16384
_BUFFERED = 8  # chunks held per direction (~128 kB, a socket buffer): then the sender is pushed back


@dataclass
class ProxyStats:
    """What went through the proxy, for assertions and benchmark tables."""

    connections: int = 0
    resets: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client
    swallowed: int = 0  # bytes eaten by the black hole


class _Connection:
    def __init__(self, proxy: FaultProxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]):
        self.proxy = proxy
        self.client = client
        self.target: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [self.client[1]] + ([self.target[1]] if self.target else [])

    def reset(self) -> None:
        """Abort both sides with an RST (SO_LINGER 0), as a middlebox dropping the flow does."""
        if self.closed:
            return
        self.closed = True
        for writer in self.writers():
            sock = writer.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in self.writers():
            writer.close()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forward TCP from ``listen`` to ``target_host:target_port`` through adjustable impairments.

    * ``latency`` / ``jitter`` (s): each chunk is held ``latency`` +- ``jitter`` (uniform) per
      direction; the byte order is kept, as TCP keeps it.
    * ``bandwidth`` (bytes/s, None: unlimited): per direction and connection.
    * :meth:`stall`: nothing moves either way for a while; connections stay open.
    * :meth:`reset_all` and ``reset_every`` (mean seconds between resets, None: off).
    * ``black_hole``: new connections are accepted and never answered, and open ones go silent
      (what is sent is swallowed), until it is switched off.
    """

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1", listen_port: int = 0,
                 seed: int | None = None):
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.latency = 0.0
        self.jitter = 0.0
        self.bandwidth: float | None = None
        self.black_hole = False
        self.reset_every: float | None = None
        self.stats = ProxyStats()
        self._random = random.Random(seed)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._resetter: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen; returns the port (a free one unless ``listen_port`` was given)."""
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        self._resetter = asyncio.create_task(self._random_resets(), name="faultproxy:resets")
        return self.listen_port

    async def stop(self) -> None:
        if self._resetter is not None:
            self._resetter.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        for connection in list(self._connections):
            connection.close()
        self._connections.clear()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, scheme: str = "tcp") -> str:
        return f"{scheme}://{self.listen_host}:{self.listen_port}"

    # -- impairments ----------------------------------------------------------------------------

    async def stall(self, seconds: float) -> None:
        """Hold every byte for ``seconds`` (both directions), then let it all through."""
        self._flowing.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._flowing.set()

    def reset_all(self) -> int:
        """RST every open connection; returns how many."""
        connections = list(self._connections)
        for connection in connections:
            connection.reset()
        self._connections.clear()
        self.stats.resets += len(connections)
        return len(connections)

    def clear(self) -> None:
        """A good link again: no latency, jitter, cap, black hole or random resets."""
        self.latency = self.jitter = 0.0
        self.bandwidth = None
        self.black_hole = False
        self.reset_every = None
        self._flowing.set()

    async def _random_resets(self) -> None:
        while True:
            if not self.reset_every:
                await asyncio.sleep(0.1)
                continue
            await asyncio.sleep(self._random.expovariate(1.0 / self.reset_every))
            if self.reset_every and self._connections:
                connection = self._random.choice(sorted(self._connections, key=id))
                connection.reset()
                self._connections.discard(connection)
                self.stats.resets += 1

    # -- forwarding -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, (reader, writer))
        self.stats.connections += 1
        self._connections.add(connection)
        try:
            if self.black_hole:
                await self._swallow(reader)  # accepted, never answered, never forwarded
                return
            try:
                connection.target = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                connection.reset()  # the far end is down: the client sees its connection refused-ish
                return
            up = asyncio.create_task(self._pump(reader, connection.target[1], "up", connection))
            down = asyncio.create_task(self._pump(connection.target[0], writer, "down", connection))
            connection.tasks = [up, down]
            await asyncio.wait(connection.tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(connection)
            connection.close()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(_CHUNK):
            self.stats.swallowed += len(data)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str,
                    connection: _Connection) -> None:
        """Read one direction and hand chunks to a writer that applies delay, rate and stalls."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_BUFFERED)
        sender = asyncio.create_task(self._deliver(queue, writer, direction))
        last_due = 0.0
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if self.black_hole:
                    self.stats.swallowed += len(data)
                    continue
                delay = self.latency + (self._random.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
                last_due = max(time.monotonic() + max(delay, 0.0), last_due)  # TCP keeps byte order
                await queue.put((last_due, data))  # full while stalled or capped: back-pressure, as TCP has
            await queue.put(None)
            await sender
        finally:
            sender.cancel()

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter,
                       direction: str) -> None:
        free_at = 0.0  # when the capped link has sent what it was given (a sleep that overshoots is made up)
        while (item := await queue.get()) is not None:
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flowing.wait()
            if self.black_hole:
                self.stats.swallowed += len(data)
                continue
            if self.bandwidth:
                free_at = max(free_at, time.monotonic() - 0.05) + len(data) / self.bandwidth
                if (wait := free_at - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
            if direction == "up":
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
