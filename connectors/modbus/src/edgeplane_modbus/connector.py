"""The Modbus connector: polls a device's register map in coalesced reads and writes with read-back.

One :class:`ModbusConnector` per device entry. Devices on the same link (host:port or serial
port) share one client (:mod:`edgeplane_modbus.link`); each polls on its own task, so a slow or
dead device never delays devices on other links, and on a shared line costs the others at
most its own timeout.

Each block read is decoded at once with numpy (:func:`edgeplane_modbus.codec.decode_many`, one
vector operation per data type and byte/word order in the block) and published as one
multi-point batch whose point table is made once per read plan; strings and SunSpec points,
which have per-value rules (text, "not implemented" markers, scale-factor points), are decoded
one by one into the same batch (strings as single-point batches beside it).

Failures: a read that times out or gets a Modbus exception publishes its points with quality
BAD (one multi-point batch of NaN), counts ``edgeplane_modbus_request_errors_total{device, reason}``, and is logged once when
its state changes (ok -> failing, one failure -> another, failing -> recovered), never per poll.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgeplane import Batch, Connector, HealthState, Quality
from edgeplane.bus import PointTable
from edgeplane.components import Context, PartKey
from edgeplane_modbus import codec, sunspec
from edgeplane_modbus.config import BIT_TABLES, ModbusConfig, ModbusPoint
from edgeplane_modbus.link import ModbusError, ModbusLink, Timing, acquire_link, release_link
from edgeplane_modbus.plan import ReadBlock, Span, plan_reads

DEFAULT_POLL = 1.0
_READ = {"coil": "read_coils", "discrete": "read_discrete_inputs", "holding": "read_holding_registers",
         "input": "read_input_registers"}
_GOOD = np.array([Quality.GOOD], dtype=np.uint8)


@dataclass
class _Compiled:
    """A point ready for the hot path: where it is, how to decode it, where it goes."""

    name: str
    topic: str
    span: Span
    decode: Callable[[Any, int], Any]  # (block bytes or bits, offset) -> raw or None
    scale: float
    offset: float
    unit: str | None
    is_text: bool = False
    sf: str | int | None = None  # SunSpec scale-factor point name or fixed exponent
    publish: bool = True  # scale-factor points are read, applied, not published
    type_: str | None = None  # plain numeric points: decoded in vectors; None: one by one through ``decode``
    byte_order: str = "big"
    word_order: str = "big"
    bit: int | None = None


@dataclass
class _Vector:
    """Points of one block decoded by one numpy operation: same table kind, type and order."""

    ids: np.ndarray  # their point ids in the block's table
    offsets: np.ndarray  # register (or bit) offsets in the block
    type_: str  # a codec numeric type, "bool" (a bit of a register) or "bit" (coil/discrete input)
    byte_order: str
    word_order: str
    bits: np.ndarray | None  # for "bool": the bit of each point
    scale: np.ndarray
    offset: np.ndarray
    index: np.ndarray | None = None  # numeric types: the registers of each point, one row per point
    plain: bool = False  # every scale 1 and offset 0: the raw values are the values

    def __post_init__(self) -> None:
        if self.type_ in codec.NUMPY_TYPES:
            self.index = codec.gather_index(self.offsets, self.type_)
        self.plain = bool((self.scale == 1.0).all() and (self.offset == 0.0).all())

    def decode(self, registers: np.ndarray) -> np.ndarray:
        if self.index is not None:
            raw: np.ndarray = codec.decode_gathered(registers[self.index], self.type_, self.byte_order,  # type: ignore[arg-type]
                                                    self.word_order, np.float64)  # type: ignore[arg-type]
            if self.plain:
                return raw
        elif self.type_ == "bit":
            raw = registers[self.offsets]
        else:  # "bool": one bit of a register
            raw = (registers[self.offsets] >> self.bits) & 1
        return raw.astype(np.float64) if self.plain else raw * self.scale + self.offset


class _BlockDecoder:
    """Turns one read block's answer into one multi-point batch (plus single-point text batches).

    The point table lists every published point of the block, in address order; a poll
    publishes one row per point that decoded (SunSpec "not implemented" values are left out).
    """

    def __init__(self, table_kind: str, points: list[_Compiled], start: int):
        self.points = [p for p in points if p.publish]
        self.bits = table_kind in BIT_TABLES
        self.table = PointTable([p.topic for p in self.points], [p.unit for p in self.points]) if self.points else None
        n = len(self.points)
        self.all_ids = self.table.all_ids if self.table is not None else np.arange(0)
        self.nan = np.full(n, np.nan)
        self.good = np.zeros(n, dtype=np.uint8)  # shared by every poll's batch: batches are read-only
        self.good.flags.writeable = False
        groups: dict[tuple[str, str, str], list[int]] = {}
        self.singles: list[tuple[int, _Compiled]] = []  # numeric, decoded one by one (SunSpec)
        self.texts: list[_Compiled] = []
        for pid, point in enumerate(self.points):
            if point.is_text:
                self.texts.append(point)
            elif self.bits:
                groups.setdefault(("bit", "big", "big"), []).append(pid)
            elif point.type_ is not None:
                groups.setdefault((point.type_, point.byte_order, point.word_order), []).append(pid)
            else:
                self.singles.append((pid, point))
        self.vectors = []
        for (type_, byte_order, word_order), ids in groups.items():
            members = [self.points[i] for i in ids]
            self.vectors.append(_Vector(
                np.array(ids), np.array([m.span.address - start for m in members]), type_, byte_order, word_order,
                np.array([m.bit or 0 for m in members]) if type_ == "bool" else None,
                np.array([m.scale for m in members]), np.array([m.offset for m in members])))
        # the common map: one type and order for the whole block, nothing decoded one by one
        self.whole = (len(self.vectors) == 1 and not self.singles and not self.texts
                      and np.array_equal(self.vectors[0].ids, np.arange(n)))
        text_ids = {self.points.index(t) for t in self.texts}
        self.numeric_ids = (self.all_ids if not text_ids else
                            np.array([i for i in range(n) if i not in text_ids], dtype=np.intp))
        self.start = start

    def bad(self, ts: float) -> Batch | None:
        if self.table is None:
            return None
        return Batch.rows(self.table, self.all_ids, ts, self.nan, Quality.BAD)


class ModbusConnector(Connector[ModbusConfig, ModbusPoint]):
    """Polls a Modbus device (TCP, RTU over TCP or serial RTU); SunSpec when ``sunspec:`` is set.

    The config is the site's, never changed: points found on the device at start (SunSpec
    models) are kept beside it and shown to the command guard through :meth:`point_specs`.
    """

    def __init__(self, name: str, config: ModbusConfig, context: Context):
        super().__init__(name, config, context)
        self._part = context.part or PartKey.device(name)  # the label of its metrics
        # points discovered on the device (SunSpec), and listed points with what discovery found
        self._discovered: dict[str, ModbusPoint] = {}
        self._specs: Mapping[str, ModbusPoint] = config.points
        self.timing = Timing(self.config.timeout, self.config.retries, self.config.request_delay)
        self.link: ModbusLink | None = None
        self.points: list[_Compiled] = []
        self.blocks: list[ReadBlock] = []
        self.models: list[sunspec.ModelInstance] = []
        self.sunspec_base: int | None = None
        self._by_name: dict[str, _Compiled] = {}
        self._block_points: list[list[_Compiled]] = []
        self._decoders: list[_BlockDecoder] = []
        self._block_state: list[str | None] = []
        self._sf: dict[str, int] = {}
        self._aliases: dict[str, str] = {}  # listed point name -> SunSpec full name
        labels = ["device", "reason"]
        self._errors = context.metrics.counter("edgeplane_modbus_request_errors_total",
                                               "Modbus requests that failed, by device and reason", labels)
        self._requests = context.metrics.counter("edgeplane_modbus_requests_total", "Modbus read requests", ["device"])
        self._request_count = self._requests.labels(device=name)
        self._polls = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.link is None:
            cfg = self.config
            serial = {"baudrate": cfg.baudrate, "parity": cfg.parity, "stopbits": cfg.stopbits, "bytesize": cfg.bytesize}
            self.link = acquire_link(cfg.link, serial=serial, reconnect_initial=cfg.reconnect_initial,
                                     reconnect_max=cfg.reconnect_max)
        await self.link.connect(self.config.timeout)
        if self.config.sunspec is not None and not self.models:
            await self._discover()
        self._compile()
        self.log.info("device %s: %d points in %d read requests per poll on %s unit %d", self.name, len(self.points),
                      len(self.blocks), self.link.address, self.config.unit)

    async def stop(self) -> None:
        if self.link is not None:
            release_link(self.link)
            self.link = None

    async def run(self) -> None:
        period = self.config.poll if self.config.poll is not None else DEFAULT_POLL
        clock = self.context.clock
        task = asyncio.current_task()
        while True:
            # pymodbus waits with asyncio.wait_for, which on Python 3.11 can swallow a
            # cancellation that lands as an answer arrives; honour the host's stop anyway
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            began = clock.now()
            await self.poll_once()
            await clock.sleep(max(0.0, period - (clock.now() - began)) if period else 0.0)

    # -- reading ----------------------------------------------------------------------------

    async def read_block(self, table: str, start: int, count: int) -> list[int] | list[bool]:
        """One read request on this device's link; raises :class:`ModbusError`."""
        if self.link is None:
            raise ModbusError(f"device {self.name!r} is not started")
        response = await self.link.request(self.timing, _READ[table], start, count=count, device_id=self.config.unit)
        values = response.bits[:count] if table in BIT_TABLES else response.registers
        if len(values) < count:
            raise self._short(table, start, count, len(values))
        return values

    def _short(self, table: str, start: int, count: int, got: int) -> ModbusError:
        # a short answer would be decoded past its end: a failed read (BAD quality), not a crash
        return ModbusError(f"device {self.name!r} answered {got} of the {count} {table} values asked at {start}")

    async def _read(self, block: ReadBlock) -> np.ndarray | ModbusError:
        """One block's answer as an array: registers as big-endian words straight from the wire
        bytes (no int per register), bits as bools; or the error."""
        if self.link is None:
            return ModbusError(f"device {self.name!r} is not started")
        table, count = block.table, block.count
        try:
            response = await self.link.request(self.timing, _READ[table], block.start, count=count,
                                               device_id=self.config.unit)
        except ModbusError as e:
            return e
        if table in BIT_TABLES:
            bits = response.bits
            if len(bits) < count:
                return self._short(table, block.start, count, len(bits))
            return np.asarray(bits[:count], dtype=np.bool_)
        raw = getattr(response, "raw", None)  # RawHoldingRegisters; any other response: its list
        registers = np.frombuffer(raw, dtype=">u2", count=len(raw) // 2) if raw is not None else \
            codec.wire_registers(response.registers)
        if len(registers) < count:
            return self._short(table, block.start, count, len(registers))
        return registers[:count] if len(registers) > count else registers

    async def poll_once(self) -> None:
        """Read every block once and publish what was read (BAD quality for what failed)."""
        blocks = self.blocks
        if not blocks:
            return
        self._polls += 1
        ts = self.context.clock.now()
        # every read first, back to back, then every decode: the next request leaves as soon as an
        # answer is in (on loopback, a send after Python work between answer and request cost
        # the sender twice the CPU: the peer had gone idle), and SunSpec values need scale
        # factors from any block anyway
        self._request_count.inc(len(blocks))  # one metrics update per poll, not per request
        read = self._read
        results = [await read(block) for block in blocks]
        if self.models:
            for i, result in enumerate(results):
                self._note_sf(i, result)
        for i, result in enumerate(results):
            await self._handle(i, result, ts)
        self._update_health()

    def _note_sf(self, index: int, result: np.ndarray | ModbusError) -> None:
        if isinstance(result, ModbusError):
            return
        block = self.blocks[index]
        buf = result.tobytes()
        for point in self._block_points[index]:
            if not point.publish:
                raw = point.decode(buf, point.span.address - block.start)
                if raw is not None:
                    self._sf[point.name] = raw

    async def _handle(self, index: int, result: np.ndarray | ModbusError, ts: float) -> None:
        decoder = self._decoders[index]
        bus = self.context.bus
        if isinstance(result, ModbusError):
            self._set_state(index, result)
            bad = decoder.bad(ts)
            if bad is not None:
                await bus.publish(bad)
            return
        self._set_state(index, None)
        if decoder.table is None:
            return
        n = len(decoder.points)
        registers = result
        if decoder.whole:
            values = decoder.vectors[0].decode(registers)
        else:
            values = np.empty(n)
            for vector in decoder.vectors:
                values[vector.ids] = vector.decode(registers)
        ids = decoder.numeric_ids
        texts: list[Batch] = []
        if decoder.singles or decoder.texts:
            data = result.tobytes()
            keep = None
            for pid, point in decoder.singles:
                raw = point.decode(data, point.span.address - decoder.start)
                value = None if raw is None else self._engineering(point, raw)
                if value is None:  # not implemented by the device, or its scale factor is not: not published
                    keep = np.ones(n, dtype=bool) if keep is None else keep
                    keep[pid] = False
                else:
                    values[pid] = value
            if keep is not None:
                ids = ids[keep[ids]]
            for point in decoder.texts:
                raw = point.decode(data, point.span.address - decoder.start)
                if raw is not None:
                    texts.append(Batch(point.topic, np.array([ts]), np.array([raw], dtype=object), _GOOD, point.unit))
        if len(ids) == n:
            batch = Batch.rows(decoder.table, ids, ts, values, decoder.good)
        else:
            batch = Batch.rows(decoder.table, ids, ts, values[ids], Quality.GOOD)
        if texts:
            await bus.publish_many([batch, *texts])
        else:
            # one bus call per block read: one multi-point batch
            await bus.publish(batch)

    def _engineering(self, point: _Compiled, raw: Any) -> float | None:
        if point.sf is not None:
            exponent = point.sf if isinstance(point.sf, int) else self._sf.get(point.sf)
            if exponent is None:
                return None  # its scale factor is not implemented or not read yet
            return raw * 10.0**exponent
        return raw * point.scale + point.offset

    def _set_state(self, index: int, error: ModbusError | None) -> None:
        reason = error.reason if error is not None else None
        if error is not None:
            self._errors.labels(device=self.name, reason=reason).inc()
            self.context.metrics.errors.labels(part=self._part, kind=f"modbus_{reason}").inc()
        previous = self._block_state[index]
        if reason == previous:
            return
        self._block_state[index] = reason
        block = self.blocks[index]
        if error is not None:
            self.log.warning("device %s: reading %s fails: %s (points published with quality BAD until it recovers)",
                             self.name, block, error)
        else:
            self.log.info("device %s: reading %s recovered", self.name, block)

    def _update_health(self) -> None:
        failing = [r for r in self._block_state if r is not None]
        if not failing:
            if self.health.state is not HealthState.OK:
                self.health.set(HealthState.OK)
            return
        if len(failing) == len(self._block_state):
            why = "link down" if all(r == "link_down" for r in failing) else "no read succeeds"
            detail = f"{why}: {self.link.last_error or failing[0] if self.link else failing[0]}"
        else:
            detail = f"{len(failing)} of {len(self._block_state)} reads failing ({', '.join(sorted(set(failing)))})"
        self.health.set(HealthState.DEGRADED, detail)

    # -- compiling the map ------------------------------------------------------------------

    def _compile(self) -> None:
        cfg = self.config
        compiled: list[_Compiled] = []
        for name, spec in cfg.points.items():
            if spec.sunspec is not None:
                continue
            byte_order, word_order = cfg.point_orders(spec)
            span = Span(name, spec.table, spec.address, spec.register_count)
            if spec.table in BIT_TABLES:
                decode: Callable[[Any, int], Any] = lambda bits, off: bool(bits[off])
            elif spec.type == "string":
                decode = _string_decoder(spec.register_count, byte_order, spec.encoding)
            else:
                decode = codec.make_decoder(spec.type, byte_order, word_order, spec.bit)
            vector = spec.table not in BIT_TABLES and spec.type != "string"
            compiled.append(_Compiled(name, self.topic(name), span, decode, spec.scale, spec.offset, spec.unit,
                                      is_text=spec.type == "string", type_=spec.type if vector else None,
                                      byte_order=byte_order, word_order=word_order, bit=spec.bit))
        self._discovered = {}
        compiled += self._compile_sunspec()
        self._specs = {**self.config.points, **self._discovered} if self._discovered else self.config.points
        self.points = compiled
        self._by_name = {p.name: p for p in compiled}
        self.blocks = plan_reads((p.span for p in compiled), max_span=cfg.max_span, max_bits=cfg.max_bits,
                                 max_gap=cfg.max_gap, coalesce=cfg.coalesce)
        owner = {}
        for i, block in enumerate(self.blocks):
            for span in block.members:
                owner[span.name] = i
        self._block_points = [[] for _ in self.blocks]
        for point in compiled:
            self._block_points[owner[point.name]].append(point)
        for members in self._block_points:
            members.sort(key=lambda p: p.span.address)
        self._decoders = [_BlockDecoder(block.table, members, block.start)
                          for block, members in zip(self.blocks, self._block_points)]
        self._block_state = [None] * len(self.blocks)

    # -- SunSpec ----------------------------------------------------------------------------

    async def _discover(self) -> None:
        options = self.config.sunspec
        assert options is not None

        async def read(address: int, count: int) -> list[int]:
            return list(await self.read_block("holding", address, count))

        base = None if options.base == "auto" else options.base
        self.sunspec_base, self.models = await sunspec.discover(read, base, self.config.max_span)
        # scale factors known now make the guard's range and read-back checks use the right step
        for model in self.models:
            for point in model.points:
                if point.type == "sunssf":
                    regs = await read(point.address, 1)
                    raw = sunspec.decode_value(regs, "sunssf")
                    if raw is not None:
                        self._sf[point.name] = raw
        found = ", ".join(f"{m.prefix} ({m.name})" for m in self.models)
        self.log.info("device %s: SunSpec at %d: models %s", self.name, self.sunspec_base, found or "none")

    def _compile_sunspec(self) -> list[_Compiled]:
        options = self.config.sunspec
        if options is None:
            return []
        listed = {spec.sunspec: name for name, spec in self.config.points.items() if spec.sunspec is not None}
        self._aliases = {name: full for full, name in listed.items()}
        known = {p.name for m in self.models for p in m.points}
        missing = [f"{name} ({full})" for full, name in listed.items() if full not in known]
        if missing:
            raise sunspec.SunSpecError(f"device {self.name!r}: points not found on the device: {', '.join(missing)}; "
                                       f"run 'edgeplane modbus scan' to list what it has")
        wanted = None if options.models == "all" else set(options.models)
        out: list[_Compiled] = []
        needed_sf: set[str] = set()
        for model in self.models:
            if wanted is not None and model.id not in wanted:
                continue
            for point in model.points:
                if point.name.endswith((".ID", ".L")) and point.address - model.address < 2:
                    continue
                if point.type == "pad" or point.type not in sunspec.POINT_TYPE:
                    continue
                is_sf = point.type == "sunssf"
                name = listed.get(point.name, point.name)
                if not is_sf and options.publish == "listed" and point.name not in listed:
                    continue
                type_ = point.type

                def decode(buf: bytes, off: int, _t=type_, _n=point.size) -> Any:
                    return sunspec.decode_value(struct_regs(buf, off, _n), _t)

                out.append(_Compiled(name, self.topic(name), Span(name, "holding", point.address, point.size), decode,
                                     1.0, 0.0, point.units, is_text=type_ == "string",
                                     sf=point.sf, publish=not is_sf))
                if isinstance(point.sf, str):
                    needed_sf.add(point.sf)
                self._register_point(name, point)
        # scale factors are read with their model even when only some points are published
        return [p for p in out if p.publish or p.name in needed_sf or options.publish == "all"]

    def _register_point(self, name: str, point: sunspec.SunSpecPoint) -> None:
        """Make a discovered point known to the guard (writable, its type and step)."""
        existing = self.config.points.get(name)
        exponent = point.sf if isinstance(point.sf, int) else self._sf.get(point.sf) if point.sf else None
        scale = 10.0**exponent if exponent is not None else 1.0
        if existing is not None:
            # the listed entry with what the device says about it; the site's config stays as written
            self._discovered[name] = existing.model_copy(update={
                "type": sunspec.POINT_TYPE[point.type], "scale": scale, "unit": existing.unit or point.units})
            return
        self._discovered[name] = ModbusPoint(type=sunspec.POINT_TYPE[point.type], sunspec=point.name,
                                             unit=point.units, scale=scale, access="rw" if point.writable else "r")

    def point_specs(self) -> Mapping[str, ModbusPoint]:
        """The site's points of this device and those discovered on it at start (SunSpec models)."""
        return self._specs

    def _sunspec_point(self, name: str) -> sunspec.SunSpecPoint | None:
        full = self._aliases.get(name, name)
        for model in self.models:
            for point in model.points:
                if point.name == full:
                    return point
        return None

    # -- writing ----------------------------------------------------------------------------

    async def write(self, point: str, value: Any) -> Any:
        """Write an engineering value (FC 5/6/15/16) and return the value read back."""
        spec = self._specs.get(point)
        if spec is None:
            raise KeyError(f"device {self.name!r} has no point {point!r}")
        if self.link is None:
            raise ModbusError(f"device {self.name!r} is not connected")
        if spec.sunspec is not None:
            readback = await self._write_sunspec(point, value)
        else:
            readback = await self._write_plain(point, spec, value)
        if readback is not None:
            values = np.array([readback], dtype=object if isinstance(readback, str) else np.float64)
            await self.context.bus.publish(Batch(self.topic(point), np.array([self.context.clock.now()]), values,
                                                 _GOOD.copy(), spec.unit))
        return readback

    async def _request(self, method: str, *args: Any) -> Any:
        assert self.link is not None
        return await self.link.request(self.timing, method, *args, device_id=self.config.unit)

    async def _write_registers(self, address: int, registers: list[int]) -> None:
        if len(registers) == 1 and self.config.write_function == "auto":
            await self._request("write_register", address, registers[0])  # FC 6
        else:
            await self._request("write_registers", address, registers)  # FC 16

    async def _write_plain(self, name: str, spec: ModbusPoint, value: Any) -> Any:
        address = spec.address
        assert address is not None
        if spec.table == "coil":
            if self.config.write_function == "auto":
                await self._request("write_coil", address, bool(value))  # FC 5
            else:
                await self._request("write_coils", address, [bool(value)])  # FC 15
            return bool((await self.read_block("coil", address, 1))[0])
        byte_order, word_order = self.config.point_orders(spec)
        count = spec.register_count
        if spec.type == "bool":
            (current,) = await self.read_block("holding", address, 1)
            mask = 1 << (spec.bit or 0)
            new = (current | mask) if value else (current & ~mask)
            await self._write_registers(address, [new & 0xFFFF])
        else:
            if spec.type == "string":
                raw: Any = str(value)
            else:
                raw = (value - spec.offset) / spec.scale
                if spec.type in codec.INTEGER_RANGES:
                    raw = int(round(raw))
            try:
                registers = codec.encode(raw, spec.type, byte_order=byte_order, word_order=word_order,
                                         length=spec.length, encoding=spec.encoding)
            except ValueError as e:
                raise ValueError(f"device {self.name!r} point {name!r}: {e}") from None
            await self._write_registers(address, registers)
        regs = await self.read_block("holding", address, count)
        raw_back = codec.decode(regs, spec.type, byte_order=byte_order, word_order=word_order, bit=spec.bit,
                                encoding=spec.encoding)
        if spec.type in ("bool", "string"):
            return raw_back
        return raw_back * spec.scale + spec.offset

    async def _write_sunspec(self, name: str, value: Any) -> Any:
        point = self._sunspec_point(name)
        if point is None:
            raise KeyError(f"device {self.name!r}: SunSpec point {name!r} was not discovered on the device")
        exponent = 0
        if isinstance(point.sf, int):
            exponent = point.sf
        elif point.sf is not None:
            # the scale factor is read fresh: a device may change it, and a stale one would scale wrongly
            regs = await self.read_block("holding", self._sunspec_point(point.sf).address, 1)  # type: ignore[union-attr]
            exponent = sunspec.decode_value(regs, "sunssf")
            if exponent is None:
                raise ModbusError(f"device {self.name!r}: scale factor {point.sf} of {name} is not implemented")
            self._sf[point.sf] = exponent
        if point.type == "string":
            raw: Any = str(value)
        else:
            raw = value / 10.0**exponent
            if point.type not in ("float32", "float64"):
                raw = int(round(raw))
        try:
            registers = sunspec.encode_value(raw, point.type, point.size)
        except ValueError as e:
            raise ValueError(f"device {self.name!r} point {name!r}: {e}") from None
        await self._write_registers(point.address, registers)
        back = sunspec.decode_value(await self.read_block("holding", point.address, point.size), point.type)
        if back is None or point.type == "string":
            return back
        result = back * 10.0**exponent
        return round(result, max(0, -exponent)) if exponent < 0 else result

    @property
    def requests(self) -> int:
        return self.link.requests if self.link is not None else 0


def struct_regs(buf: bytes, off: int, count: int) -> tuple[int, ...]:
    return struct.unpack_from(f">{count}H", buf, 2 * off)


def _string_decoder(count: int, byte_order: str, encoding: str) -> Callable[[bytes, int], str]:
    def decode(buf: bytes, off: int) -> str:
        regs = struct_regs(buf, off, count)
        return codec.decode(regs, "string", byte_order=byte_order, encoding=encoding)  # type: ignore[arg-type]

    return decode


__all__ = ["ModbusConnector"]
