"""What a Modbus device entry and each of its points may hold, validated before anything starts.

A device entry::

    inv1:
      connector: modbus
      url: tcp://10.0.0.21:502        # or rtu+tcp://gw:4001, rtu:///dev/ttyUSB0
      unit: 1
      poll: 1s
      timeout: 1s
      retries: 1
      request_delay: 0ms              # pause between two requests on this device's link
      max_span: 125                   # registers per read request (lower for fussy devices)
      max_gap: 8                      # unused registers a read may bridge to save a request
      points:
        power:  {table: holding, address: 100, type: float32, unit: W}
        energy: {table: input, address: 200, type: uint32, word_order: little, scale: 0.1, unit: kWh}
        alarm:  {table: holding, address: 110, type: bool, bit: 3}
        run:    {table: coil, address: 0, type: bool, access: rw}
        name:   {table: holding, address: 300, type: string, length: 16}

SunSpec devices add ``sunspec: {}`` (see :mod:`edgeplane_modbus.sunspec`): their points are
discovered, named ``<model id>.<point id>``, and need no addresses.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeplane import DeviceConfig, Duration, PointSpec
from edgeplane.reconnect import ReconnectPolicy
from edgeplane_modbus.codec import register_count

Table = Literal["coil", "discrete", "holding", "input"]
BIT_TABLES = ("coil", "discrete")
MAX_REGISTERS_PER_READ = 125  # the protocol's limit for FC 3/4
MAX_BITS_PER_READ = 2000  # the protocol's limit for FC 1/2


class ModbusPoint(PointSpec):
    """One point: where it lives (table, address) and how its registers become a value."""

    table: Table = Field("holding", description="coil, discrete (input), holding (register) or input (register)")
    address: int | None = Field(None, ge=0, le=65535, description="0-based protocol address (register 40001 is holding 0)")
    bit: int | None = Field(None, ge=0, le=15, description="for type bool in a register: the bit, 0 = least significant")
    length: int | None = Field(None, ge=1, le=250, description="for type string: its size in bytes")
    count: int | None = Field(None, ge=1, description="registers the point spans; checked against the type if given")
    byte_order: Literal["big", "little"] | None = Field(None, description="bytes inside a register; default: the device's")
    word_order: Literal["big", "little"] | None = Field(None, description="registers of a wide value; default: the device's")
    encoding: str = Field("utf-8", description="text encoding of string points")
    sunspec: str | None = Field(None, description="for SunSpec devices: '<model id>.<point id>' this point names")

    @model_validator(mode="after")
    def _consistent(self) -> ModbusPoint:
        if self.sunspec is not None:
            if self.address is not None:
                raise ValueError("a point with 'sunspec:' is found by discovery; remove 'address:'")
            if "." not in self.sunspec:
                raise ValueError(f"sunspec {self.sunspec!r} is not '<model id>.<point id>', e.g. '123.WMaxLimPct'")
            return self
        if self.address is None:
            raise ValueError("required key 'address' is missing: give the 0-based protocol address")
        if self.type == "auto":
            self.type = "bool" if self.table in BIT_TABLES else "uint16"
        if self.table in BIT_TABLES:
            if self.type != "bool":
                raise ValueError(f"{self.table} points hold one bit: type must be bool, got {self.type}")
            if self.bit is not None:
                raise ValueError(f"'bit' selects a bit inside a register; {self.table} points are single bits already")
        if self.table in ("discrete", "input") and self.writable:
            raise ValueError(f"{self.table} points are read-only in Modbus: use access: r (or table: "
                             f"{'coil' if self.table == 'discrete' else 'holding'} if the device accepts writes)")
        if self.bit is not None and self.type != "bool":
            raise ValueError(f"'bit' is only for type bool, this point is {self.type}")
        if self.type == "string" and self.length is None:
            raise ValueError("a string point needs 'length' (its size in bytes)")
        if self.type != "string" and self.length is not None:
            raise ValueError(f"'length' is only for strings, this point is {self.type}")
        needed = self.register_count
        if self.count is not None and self.count != needed and self.table not in BIT_TABLES:
            raise ValueError(f"{self.type} needs {needed} register{'s' if needed > 1 else ''}, got count={self.count}")
        if self.address + needed - 1 > 65535:
            raise ValueError(f"address out of range: {self.type} at {self.address} ends at "
                             f"{self.address + needed - 1}, past the last address 65535")
        if self.type in ("bool", "string") and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale and offset apply to numbers, not to {self.type} points")
        return self

    @property
    def register_count(self) -> int:
        """Registers (or bits, for coil/discrete) this point occupies."""
        if self.table in BIT_TABLES:
            return 1
        return register_count(self.type, self.length)

    @property
    def end(self) -> int:
        """The last address this point occupies."""
        return (self.address or 0) + self.register_count - 1


class SunSpecOptions(BaseModel):
    """SunSpec discovery: where to look for 'SunS' and which models to publish."""

    model_config = ConfigDict(extra="forbid")

    base: Literal["auto"] | int = Field("auto", description="'auto' tries 40000, 0 and 50000; or give the address")
    models: list[int] | Literal["all"] = Field("all", description="model ids to poll and publish, or 'all'")
    publish: Literal["all", "listed"] = Field(
        "all", description="all: every point of the polled models; listed: only the points named under points:"
    )

    @field_validator("base")
    @classmethod
    def _base_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 65535 - 4:
            raise ValueError(f"sunspec base {value} is outside 0..65531")
        return value


class Link(BaseModel):
    """Where a link goes, parsed from ``url``."""

    kind: Literal["tcp", "rtu+tcp", "rtu"]
    host: str = ""
    port: int = 502
    device: str = ""  # serial device path

    @property
    def key(self) -> tuple[str, str, int | str]:
        return (self.kind, self.host, self.port) if self.kind != "rtu" else ("rtu", "", self.device)

    def __str__(self) -> str:
        return f"{self.kind}://{self.host}:{self.port}" if self.kind != "rtu" else f"rtu://{self.device}"


def parse_url(url: str) -> Link:
    """``tcp://host[:port]``, ``rtu+tcp://host[:port]`` (RTU framing over TCP), ``rtu:///dev/ttyX``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("tcp", "modbus", "modbus+tcp"):
        kind = "tcp"
    elif scheme in ("rtu+tcp", "rtu-over-tcp", "rtuovertcp"):
        kind = "rtu+tcp"
    elif scheme in ("rtu", "serial"):
        device = parts.path or parts.netloc
        if not device:
            raise ValueError(f"{url!r}: give the serial device, e.g. rtu:///dev/ttyUSB0")
        return Link(kind="rtu", device=device)
    else:
        raise ValueError(f"{url!r}: unknown scheme {parts.scheme!r}; use tcp://host:502, rtu+tcp://host:4001 or rtu:///dev/ttyUSB0")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host; write e.g. tcp://10.0.0.21:502")
    try:
        port = parts.port or 502
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number in 1..65535") from None
    if parse_qs(parts.query):
        raise ValueError(f"{url!r}: query parameters are not used; put settings in the device entry")
    return Link(kind=kind, host=parts.hostname, port=port)


class ModbusConfig(DeviceConfig):
    """A Modbus device: its link, unit id, timing and how reads are grouped."""

    url: str = Field(description="tcp://host:port, rtu+tcp://host:port (RTU over TCP) or rtu:///dev/ttyUSB0")
    unit: int = Field(1, ge=0, le=255, description="unit (slave) id on the link")
    points: dict[str, ModbusPoint] = Field(default_factory=dict)
    timeout: Duration = Field(1.0, description="time to wait for one answer")
    retries: int = Field(1, ge=0, le=10, description="repeats of a request that timed out")
    request_delay: Duration = Field(0.0, description="pause before each request on the link (slow gateways)")
    max_span: int = Field(MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ, description="most registers per read")
    max_bits: int = Field(MAX_BITS_PER_READ, ge=1, le=MAX_BITS_PER_READ, description="most coils/inputs per read")
    max_gap: int = Field(8, ge=0, le=MAX_REGISTERS_PER_READ, description="unused registers one read may bridge")
    coalesce: bool = Field(True, description="merge nearby points into one read; false reads each point alone")
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    write_function: Literal["auto", "multiple"] = Field(
        "auto", description="auto: FC 5/6 for one coil/register, FC 15/16 otherwise; multiple: always FC 15/16"
    )
    reconnect_initial: Duration = Field(ReconnectPolicy.initial, description="first wait before reconnecting a lost link")
    reconnect_max: Duration = Field(ReconnectPolicy.maximum, description="longest wait between reconnect attempts: "
                                    "a device that returns is read again within this long")
    baudrate: int = Field(19200, description="serial links only")
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    sunspec: SunSpecOptions | None = Field(None, description="discover SunSpec models and publish their points")

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        parse_url(value)
        return value

    @property
    def link(self) -> Link:
        return parse_url(self.url)

    @model_validator(mode="after")
    def _points_fit_the_device(self) -> ModbusConfig:
        problems = []
        plain = {n: p for n, p in self.points.items() if p.sunspec is None}
        if self.sunspec is None:
            listed = [n for n, p in self.points.items() if p.sunspec is not None]
            if listed:
                problems.append(f"points {', '.join(map(repr, listed))} use 'sunspec:' but the device has no "
                                f"'sunspec:' section; add 'sunspec: {{}}' to the device")
        for name, p in plain.items():
            if p.table not in ("coil", "discrete") and p.register_count > self.max_span:
                problems.append(f"point {name!r} spans {p.register_count} registers, more than max_span={self.max_span}; "
                                f"raise max_span or shorten the point")
        # two writable points sharing a register: writing one would overwrite the other
        writable = sorted(((p.table, p.address, p.end, n, p) for n, p in plain.items() if p.writable),
                          key=lambda t: (t[0], t[1], t[2]))
        for i, (table, start, end, name, point) in enumerate(writable):
            for table2, start2, end2, name2, point2 in writable[i + 1:]:
                if table2 != table or start2 > end:
                    break
                if point.bit is not None and point2.bit is not None and point.bit != point2.bit and start == start2 == end == end2:
                    continue  # two flags in one register: written bit by bit, they do not clash
                problems.append(f"writable points {name!r} ({table} {start}..{end}) and {name2!r} "
                                f"({table2} {start2}..{end2}) overlap: a write to one would change the other; "
                                f"move one, or make one read-only (access: r)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def point_orders(self, point: ModbusPoint) -> tuple[str, str]:
        return point.byte_order or self.byte_order, point.word_order or self.word_order
