"""A link: one pymodbus async client shared by every device (unit id) behind one host:port or port.

Modbus answers one request at a time per connection, so requests on a link take turns (a
lock). Each request carries its device's own timeout, retries and inter-request delay, so a
unit that does not answer holds the link for at most its own ``timeout x (retries + 1)``.
Devices on different links never wait for each other.

A lost connection is reopened on demand with exponential backoff: while the backoff runs,
requests fail at once with :class:`LinkDown` instead of queueing behind reconnect attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from edgeplane.errors import ConnectorError
from edgeplane.reconnect import ReconnectPolicy
from edgeplane_modbus.config import Link as LinkAddress

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "server device failure",
    5: "acknowledge", 6: "server device busy", 8: "memory parity error", 10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusError(ConnectorError):
    """A request failed. ``reason`` is a short label for metrics (timeout, exception_2, link_down)."""

    reason = "error"


class LinkDown(ModbusError):
    reason = "link_down"


class RequestTimeout(ModbusError):
    reason = "timeout"


class DeviceException(ModbusError):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int, what: str):
        self.code = code
        self.reason = f"exception_{code}"
        super().__init__(f"{what}: Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")


class RawHoldingRegisters(ReadHoldingRegistersResponse):
    """A register read's answer kept as the bytes on the wire (``raw``: two big-endian bytes per
    register); ``registers`` is unpacked from them only when something asks for it.

    pymodbus's own response unpacks every register with ``struct.unpack`` into a list of ints,
    which the connector's numpy decoder would turn back into bytes: the connector reads ``raw``
    with ``numpy.frombuffer`` instead. Registered on each link's client for function codes 3 and 4.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.raw = b""
        self._registers: list[int] | None = None
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def registers(self) -> list[int]:
        if self._registers is None:
            self._registers = list(struct.unpack(f">{len(self.raw) // 2}H", self.raw[: len(self.raw) // 2 * 2]))
        return self._registers

    @registers.setter
    def registers(self, values: Sequence[int]) -> None:
        self._registers = list(values)
        self.raw = struct.pack(f">{len(self._registers)}H", *self._registers) if self._registers else b""

    def __str__(self) -> str:
        # pymodbus formats every decoded answer for a debug line whether or not debug logging is
        # on; the base class's text lists every register (and would unpack them all)
        return (f"{type(self).__name__}(dev_id={self.dev_id}, transaction_id={self.transaction_id}, "
                f"{len(self.raw) // 2} registers)")

    def decode(self, data: bytes) -> None:
        size = int(data[0])
        if size >= len(data):
            raise ModbusIOException(f"byte_count {size} > length of packet {len(data)}", function_code=self.function_code)
        self.raw = bytes(data[1 : 1 + size])
        self._registers = None


class RawInputRegisters(RawHoldingRegisters, ReadInputRegistersResponse):
    """:class:`RawHoldingRegisters` for function code 4 (input registers)."""

    function_code = 4


@dataclass
class Timing:
    """A device's request settings."""

    timeout: float = 1.0
    retries: int = 1
    delay: float = 0.0


class ModbusLink:
    """One connection (TCP, RTU over TCP or serial) and the turns taken on it."""

    #: consecutive unanswered requests (across all units) after which the connection is reopened
    MAX_SILENT = 10

    def __init__(self, address: LinkAddress, *, serial: dict[str, Any] | None = None,
                 reconnect_initial: float = ReconnectPolicy.initial, reconnect_max: float = ReconnectPolicy.maximum):
        self.address = address
        self.serial = serial or {}
        self.reconnect = ReconnectPolicy.of(reconnect_initial, reconnect_max)
        self.client: Any = None
        self.users = 0
        self.requests = 0  # requests sent, for metrics and the benchmark
        self._lock = asyncio.Lock()
        self._backoff = self.reconnect.backoff()
        self._next_attempt = 0.0
        self._silent = 0
        self.last_error: str | None = None

    def _make_client(self, timeout: float) -> Any:
        a = self.address
        # retries=0 and reconnect_delay=0: this class does both, per device, with its own counts
        client: AsyncModbusSerialClient | AsyncModbusTcpClient
        if a.kind == "rtu":
            client = AsyncModbusSerialClient(a.device, framer=FramerType.RTU, timeout=timeout, retries=0,
                                             reconnect_delay=0, **self.serial)
        else:
            framer = FramerType.RTU if a.kind == "rtu+tcp" else FramerType.SOCKET
            client = AsyncModbusTcpClient(a.host, port=a.port, framer=framer, timeout=timeout, retries=0,
                                          reconnect_delay=0)
        # register answers as their wire bytes (RawHoldingRegisters): no unpack per register
        client.register(RawHoldingRegisters)
        client.register(RawInputRegisters)
        return client

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    async def connect(self, timeout: float) -> None:
        """Open the connection now (ignores the backoff); raises LinkDown if it cannot."""
        # in turn: devices sharing the link start together, and a second client on a serial
        # port would fail to lock it
        async with self._lock:
            await self._connect(timeout)

    async def _connect(self, timeout: float) -> None:
        if self.connected:
            return
        self._close_client()
        self.client = self._make_client(timeout)
        # pymodbus would close the connection after a few unanswered requests; on a shared line
        # one silent unit must not cut off the others, so this class decides (MAX_SILENT)
        self.client.set_max_no_responses(1_000_000)
        try:
            async with asyncio.timeout(timeout + 1.0):
                ok = await self.client.connect()
        except (asyncio.TimeoutError, OSError) as e:
            ok, self.last_error = False, f"{type(e).__name__}: {e}"
        if not ok or not self.client.connected:
            self._close_client()
            wait = self._backoff.next_delay()
            self._next_attempt = time.monotonic() + wait
            raise LinkDown(f"cannot connect to {self.address}; next attempt in {wait:.1f} s")
        self._backoff.reset()
        self._silent = 0
        self.last_error = None

    def _close_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        self.client = None

    def close(self) -> None:
        self._close_client()

    async def request(self, timing: Timing, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one client call (``read_holding_registers`` ...) in this link's turn.

        Returns the pymodbus response; raises LinkDown, RequestTimeout or DeviceException.
        """
        async with self._lock:
            if not self.connected:
                if time.monotonic() < self._next_attempt:
                    raise LinkDown(f"{self.address} is down; reconnecting in "
                                   f"{self._next_attempt - time.monotonic():.1f} s")
                await self._connect(timing.timeout)
            if timing.delay:
                await asyncio.sleep(timing.delay)
            client = self.client
            # the client's timeout is per connection; set it per request to the device's own
            client.ctx.comm_params.timeout_connect = timing.timeout
            # named only in errors: formatting it per request would cost more than decoding a block
            def what() -> str:
                return f"{method}({', '.join(map(str, args))}) on {self.address} unit {kwargs.get('device_id')}"

            for attempt in range(timing.retries + 1):
                self.requests += 1
                try:
                    # bounded by pymodbus itself: on a connected client nothing is awaited before
                    # its wait_for(answer, comm_params.timeout_connect), set above to this device's
                    # timeout (a second timer around it cost 6 % of a poll's CPU). A cancellation
                    # that wait_for swallows on Python 3.11 is honoured by the connector's run loop
                    response = await getattr(client, method)(*args, **kwargs)
                except (ModbusIOException, asyncio.TimeoutError):
                    self._silent += 1
                    if self._silent >= self.MAX_SILENT:
                        self._drop(f"{self._silent} requests in a row unanswered")
                        raise RequestTimeout(f"{what()}: no answer; reopening the connection") from None
                    if not self.connected:
                        self._drop("connection lost")
                        raise LinkDown(f"{what()}: connection lost") from None
                    continue
                except (ConnectionException, OSError) as e:
                    self._drop(f"{type(e).__name__}: {e}")
                    raise LinkDown(f"{what()}: {e}") from None
                self._silent = 0
                if response.isError():
                    raise DeviceException(getattr(response, "exception_code", 0), what())
                return response
            raise RequestTimeout(f"{what()}: no answer within {timing.timeout:g} s ({timing.retries + 1} tries)")

    def _drop(self, why: str) -> None:
        log.info("closing %s: %s", self.address, why)
        self.last_error = why
        self._close_client()
        self._next_attempt = time.monotonic() + self._backoff.next_delay()


# one set of links per event loop: devices of a host share them, separate loops (tests) do not
_LINKS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, ModbusLink]]" = weakref.WeakKeyDictionary()


def acquire_link(address: LinkAddress, **kwargs: Any) -> ModbusLink:
    """The shared link for ``address`` in this event loop, made on first use."""
    links = _LINKS.setdefault(asyncio.get_running_loop(), {})
    link = links.get(address.key)
    if link is None:
        link = links[address.key] = ModbusLink(address, **kwargs)
    link.users += 1
    return link


def release_link(link: ModbusLink) -> None:
    """Give a link back; the last user closes it."""
    link.users -= 1
    if link.users <= 0:
        link.close()
        links = _LINKS.get(asyncio.get_running_loop(), {})
        if links.get(link.address.key) is link:
            del links[link.address.key]
