"""An in-memory uplink transport: the sync layer's twin of a broker, for tests that need no network.

:class:`MemoryTransport` is a real :class:`~edgeplane.sync.transport.Transport`: the sync
service drives it exactly as it drives MQTT (outbox, window, acknowledgements, downlink), but a
message goes into a list instead of onto a socket. The test plays the broker::

    transport = MemoryTransport()
    service = SyncService(config, ..., transport=transport)      # or register it by name
    await service.start()
    await wait_for(lambda: transport.published)                  # what the "broker" acknowledged
    transport.refuse()                                           # publishes fail: records stay queued
    transport.drop_link("cable pulled")                          # the link goes down (in-flight ones fail)
    transport.restore_link()                                     # ... and comes back
    transport.deliver("edgeplane/plant-1/down/command", payload) # a downlink message arrives

To choose it from a site file (``sync.uplink.transport: memory``), load
:data:`memory_transport_plugin` with the host's plugins; the running instance is then
``host.sync.transport``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt.client import topic_matches_sub

from edgeplane.hookspecs import hookimpl
from edgeplane.plugins import TransportRegistrar
from edgeplane.sync.config import UplinkConfig
from edgeplane.sync.transport import Transport

__all__ = ["MemoryTransport", "Message", "memory_transport_plugin"]


@dataclass(frozen=True)
class Message:
    """One message the in-memory broker acknowledged."""

    topic: str
    payload: bytes
    retain: bool


class MemoryTransport(Transport):
    """A transport whose far end is this object: it keeps, refuses or holds what is published.

    * :attr:`published`: the messages acknowledged so far, in order;
    * :meth:`refuse` / :meth:`accept`: from now on publishes fail with ConnectionError (as an
      unacknowledged publish does), or are acknowledged again;
    * :meth:`hold` / :meth:`release`: publishes wait unacknowledged (in flight) until released;
    * :meth:`drop_link` / :meth:`restore_link`: the link goes down (publishes in flight fail) and
      comes back, and the sync service is told as MQTT's would tell it;
    * :meth:`deliver`: a message from the cloud on a subscribed topic.

    ``connect_up=False`` starts with the link down (a site that starts offline).
    """

    def __init__(self, config: UplinkConfig | None = None, *, client_id: str = "memory", base_dir: Path | None = None,
                 connect_up: bool = True):
        super().__init__(config or UplinkConfig(url="mqtt://memory.invalid:1883"), client_id=client_id, base_dir=base_dir)
        self.published: list[Message] = []
        self.refused = 0
        """How many publishes were refused (by :meth:`refuse` or a dropped link)."""
        self._up = connect_up
        self._refusing = False
        self._held: asyncio.Event | None = None
        self._in_flight: set[asyncio.Future[None]] = set()
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self._on_link: Callable[[bool], None] | None = None

    # -- the Transport interface -------------------------------------------------------------------

    async def connect(self, on_link: Callable[[bool], None]) -> None:
        self._on_link = on_link
        if self._up:
            self._set_link(True, None)
        else:
            self.last_error = "link down (MemoryTransport started offline)"

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if not self.connected:
            self.refused += 1
            raise ConnectionError(f"not connected: {self.last_error}")
        if self._held is not None:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._in_flight.add(waiter)
            held: asyncio.Future[Any] = asyncio.ensure_future(self._held.wait())
            try:
                await asyncio.wait([waiter, held], return_when=asyncio.FIRST_COMPLETED)
            finally:
                held.cancel()
                self._in_flight.discard(waiter)
            failure = waiter.exception() if waiter.done() else None
            if failure is not None:
                self.refused += 1
                raise failure
        if self._refusing:
            self.refused += 1
            raise ConnectionError("the broker did not acknowledge the message (MemoryTransport.refuse)")
        self.published.append(Message(topic, bytes(payload), retain))

    async def subscribe(self, topic: str, handler: Callable[[str, bytes], None]) -> None:
        self._subscriptions[topic] = handler

    async def close(self) -> None:
        self._fail_in_flight("transport closed")
        self.connected = False

    # -- the test's controls ------------------------------------------------------------------------

    def refuse(self) -> None:
        """From now on every publish fails with ConnectionError (records stay in the outbox)."""
        self._refusing = True

    def accept(self) -> None:
        """Acknowledge publishes again."""
        self._refusing = False

    def hold(self) -> None:
        """From now on publishes wait unacknowledged until :meth:`release` (or a dropped link)."""
        if self._held is None:
            self._held = asyncio.Event()

    def release(self) -> None:
        """Answer the held publishes (acknowledged, or refused after :meth:`refuse`) and stop holding."""
        held, self._held = self._held, None
        if held is not None:
            held.set()

    @property
    def in_flight(self) -> int:
        """How many publishes wait for an answer (see :meth:`hold`)."""
        return len(self._in_flight)

    def drop_link(self, error: str = "link dropped (MemoryTransport.drop_link)") -> None:
        """The link goes down: publishes in flight fail, new ones fail until :meth:`restore_link`."""
        self._up = False
        self._fail_in_flight(error)
        self._set_link(False, error)

    def restore_link(self) -> None:
        """The link comes back up."""
        self._up = True
        self._set_link(True, None)

    def deliver(self, topic: str, payload: bytes) -> int:
        """A message from the cloud: handed to every subscription whose filter matches; returns how many."""
        handlers = [h for pattern, h in self._subscriptions.items() if topic_matches_sub(pattern, topic)]
        for handler in handlers:
            handler(topic, bytes(payload))
        return len(handlers)

    def topics(self) -> list[str]:
        """The topics of the acknowledged messages, in order."""
        return [m.topic for m in self.published]

    # -- internals ----------------------------------------------------------------------------------

    def _set_link(self, up: bool, error: str | None) -> None:
        changed = self.connected != up
        self.connected = up
        self.last_error = error
        if changed and self._on_link is not None:
            self._on_link(up)

    def _fail_in_flight(self, error: str) -> None:
        for waiter in list(self._in_flight):
            if not waiter.done():
                waiter.set_exception(ConnectionError(error))


class _MemoryTransportPlugin:
    """Registers :class:`MemoryTransport` as the uplink transport ``memory``."""

    @hookimpl
    def edgeplane_register_transports(self, register: TransportRegistrar) -> None:
        register("memory", MemoryTransport)


memory_transport_plugin = _MemoryTransportPlugin()
"""Load it with the host's plugins (``plugins=[memory_transport_plugin]``) to allow ``transport: memory``."""
