"""The guarded command path: every write to a device goes through :class:`CommandGuard`.

Before any connector writes, the guard checks that the device and point exist, that the point
is writable, and the point's limits (from its profile and from the site's ``limits:`` patterns):
min/max, allowed values, and the rate of change since the last commanded value. Then it asks the
connector to write and read back, with a timeout. Every command, carried out or not, gets a
:class:`CommandResult` and a row in the append-only audit log.
"""

from __future__ import annotations

import asyncio
import difflib
import enum
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeplane.bus import topic_matches
from edgeplane.config import PointLimits, PointSpec

if TYPE_CHECKING:
    from edgeplane.clock import Clock
    from edgeplane.components import AnyConnector
    from edgeplane.metrics import Metrics
    from edgeplane.store import LocalStore

log = logging.getLogger(__name__)

_INTEGER_TYPES = {"int16", "uint16", "int32", "uint32", "int64", "uint64"}
_INTEGER_RANGES = {
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
}


class CommandStatus(str, enum.Enum):  # noqa: UP042 - StrEnum changes str() of a member, which callers may print
    OK = "ok"  # written and confirmed by read-back (or written, where no read-back exists)
    REJECTED = "rejected"  # refused by the guard; nothing was written
    FAILED = "failed"  # the connector raised, or the read-back differs
    TIMEOUT = "timeout"  # the connector did not answer in time; the device state is unknown


@dataclass(frozen=True)
class CommandResult:
    device: str
    point: str
    value: Any
    status: CommandStatus
    message: str
    ts: float
    source: str
    readback: Any = None

    @property
    def ok(self) -> bool:
        return self.status is CommandStatus.OK

    def __str__(self) -> str:
        return f"command {self.device}/{self.point}={self.value!r} from {self.source}: {self.status.value}: {self.message}"


class CommandGuard:
    """Checks and carries out commands. The host owns one; connectors never get writes otherwise."""

    def __init__(
        self,
        *,
        # device name -> its connector (None: the device is in the site but its connector could not be made)
        connectors: Callable[[], Mapping[str, AnyConnector | None]],
        site_limits: Callable[[], dict[str, PointLimits]],
        clock: Clock,
        metrics: Metrics,
        store: LocalStore | None,
    ):
        self._connectors = connectors
        self._site_limits = site_limits
        self.clock = clock
        self.metrics = metrics
        self.store = store
        self._last: dict[str, tuple[float, float]] = {}  # topic -> (time, value) of the last good write
        self._started = clock.now()

    async def execute(
        self, device: str, point: str, value: Any, *, source: str, timeout: float = 5.0, reason: str = ""
    ) -> CommandResult:
        """Check, write and confirm one command. Never raises for a bad command: see the result."""
        now = self.clock.now()
        connector = self._connectors().get(device)
        readback = None
        if connector is None:
            known = list(self._connectors())
            close = difflib.get_close_matches(device, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; devices: {', '.join(sorted(known)) or 'none'}"
            status, message = CommandStatus.REJECTED, f"unknown device {device!r}{hint}"
        else:
            spec = connector.point_specs().get(point)
            problem = self._check(connector, device, point, spec, value, now)
            if problem:
                status, message = CommandStatus.REJECTED, problem
            else:
                assert spec is not None  # _check refuses a point without a spec
                status, message, readback = await self._write(connector, device, point, spec, value, timeout)
                if status is CommandStatus.OK and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._last[f"{device}/{point}"] = (now, float(value))
        result = CommandResult(device, point, value, status, message, now, source, readback)
        self.metrics.commands.labels(device=device, status=status.value).inc()
        level = logging.INFO if result.ok else logging.WARNING
        log.log(level, "%s", result)
        if self.store is not None:
            try:
                await self.store.append_audit(
                    {"ts": now, "device": device, "point": point, "value": _jsonable(value), "source": source,
                     "status": status.value, "message": message, "readback": _jsonable(readback), "reason": reason}
                )
            except Exception:  # noqa: BLE001 - a full disk must not stop a safety-relevant write result
                self.metrics.errors.labels(part="commands", kind="audit_write").inc()
                log.exception("could not append command to the audit log")
        return result

    def limits_for(self, device: str, point: str, spec: PointSpec | None) -> list[PointLimits]:
        """Every limit that applies to a point: its own, and each matching site pattern."""
        found = [spec.limits] if spec is not None and spec.limits is not None else []
        topic = f"{device}/{point}"
        found += [lim for pattern, lim in self._site_limits().items() if topic_matches(pattern, topic)]
        return found

    def _check(self, connector: AnyConnector, device: str, point: str, spec: PointSpec | None, value: Any, now: float) -> str | None:
        if spec is None:
            known = list(connector.point_specs())
            close = difflib.get_close_matches(point, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"points: {', '.join(sorted(known)) or 'none'}"
            return f"device {device!r} has no point {point!r}; {hint}"
        if not spec.writable:
            return (f"point {device}/{point} is read-only (access: {spec.access}); set 'access: rw' in its profile "
                    f"if the device accepts writes")
        numeric = _is_number(value)
        shown = _shown(value)
        all_limits = self.limits_for(device, point, spec)
        if spec.type == "bool" and not isinstance(value, bool) and not (numeric and value in (0, 1)):
            return f"point {device}/{point} is bool; got {type(value).__name__} {shown}"
        if spec.type in _INTEGER_TYPES or spec.type in ("float32", "float64"):
            if not numeric:
                return f"point {device}/{point} is {spec.type}; got {type(value).__name__} {shown}"
        if numeric and not math.isfinite(value) and not any(lim.allow_non_finite for lim in all_limits):
            return (f"point {device}/{point}: {shown} is not a finite number; set 'allow_non_finite: true' in the "
                    f"point's limits if the device takes it")
        if spec.type in _INTEGER_TYPES and numeric:
            raw = (value - spec.offset) / spec.scale if spec.scale else value
            lo, hi = _INTEGER_RANGES[spec.type]
            if not math.isfinite(raw) or not lo <= round(raw) <= hi:
                return f"point {device}/{point}: {shown} does not fit {spec.type} (raw {raw:g} outside {lo}..{hi})"
        for limits in all_limits:
            if limits.allowed is not None and not _one_of(value, limits.allowed):
                return f"point {device}/{point}: {shown} is not one of the allowed values {limits.allowed}"
            bounded = limits.min is not None or limits.max is not None or limits.max_rate is not None
            if bounded and not numeric:
                # whatever the point's type (auto too): a string, a bool or a mapping has no place on a bounded point
                return (f"point {device}/{point} has limits (min {limits.min}, max {limits.max}, max_rate "
                        f"{limits.max_rate}): a write must be a number; got {type(value).__name__} {shown}")
            if numeric and math.isfinite(value):
                if limits.min is not None and value < limits.min:
                    return f"point {device}/{point}: {value!r} is below the minimum {limits.min:g}"
                if limits.max is not None and value > limits.max:
                    return f"point {device}/{point}: {value!r} is above the maximum {limits.max:g}"
                if limits.max_rate is not None:
                    previous = self._previous(connector, device, point)
                    if previous is not None:
                        then, before = previous
                        elapsed = max(now - then, 1e-9)
                        rate = abs(value - before) / elapsed
                        if rate > limits.max_rate:
                            return (f"point {device}/{point}: change from {before:g} to {value:g} in {elapsed:.3g} s is "
                                    f"{rate:.3g}/s, above max_rate {limits.max_rate:g}/s; step towards it more slowly")
        return None

    def _previous(self, connector: AnyConnector, device: str, point: str) -> tuple[float, float] | None:
        """The base a rate of change is measured from: the last good command, else the value
        the device reports now, held since the guard started (a setpoint polled every second
        has not changed every second)."""
        topic = f"{device}/{point}"
        if topic in self._last:
            return self._last[topic]
        latest = connector.context.bus.latest(topic)
        if latest is not None and isinstance(latest[1], (int, float)) and math.isfinite(latest[1]):
            return min(self._started, latest[0]), float(latest[1])
        return None

    async def _write(self, connector: AnyConnector, device: str, point: str, spec: PointSpec, value: Any,
                     timeout: float) -> tuple[CommandStatus, str, Any]:
        try:
            readback = await asyncio.wait_for(connector.write(point, value), timeout)
        except TimeoutError:
            return CommandStatus.TIMEOUT, f"device {device!r} did not confirm within {timeout:g} s; its state is unknown", None
        except NotImplementedError as e:
            return CommandStatus.REJECTED, str(e), None
        except Exception as e:  # noqa: BLE001 - any connector failure becomes a failed result
            return CommandStatus.FAILED, f"device {device!r} refused the write: {type(e).__name__}: {e}", None
        if readback is None:
            return CommandStatus.OK, "written (the device offers no read-back)", None
        if _same(value, readback, spec):
            return CommandStatus.OK, "written and confirmed by read-back", readback
        return CommandStatus.FAILED, f"written, but read back {readback!r} instead of {value!r}", readback


def _same(wanted: Any, got: Any, spec: PointSpec) -> bool:
    if isinstance(wanted, (int, float)) and isinstance(got, (int, float)):
        # integer registers hold scaled values: a read-back within half a step is the same value
        tolerance = abs(spec.scale) / 2 if spec.type in _INTEGER_TYPES else 1e-9
        return math.isclose(float(wanted), float(got), rel_tol=1e-6, abs_tol=tolerance)
    return bool(wanted == got)


def _is_number(value: Any) -> bool:
    """A real number, not a bool (``True == 1`` in Python): numpy scalars count."""
    if isinstance(value, bool) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "b"):
        return False
    if isinstance(value, (int, float)):
        return True
    return hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iuf" and getattr(value, "ndim", 1) == 0


def _one_of(value: Any, allowed: list[Any]) -> bool:
    """``value in allowed``, with bools, numbers and strings never equal to each other."""
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "b" and getattr(value, "ndim", 1) == 0:
        value = bool(value)
    if isinstance(value, bool):
        return any(isinstance(a, bool) and a is value for a in allowed)
    if _is_number(value):
        return any(_is_number(a) and a == value for a in allowed)
    if isinstance(value, str):
        return any(isinstance(a, str) and a == value for a in allowed)
    return False


def _shown(value: Any) -> str:
    """A value for a message, bounded (a command can come from the network)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)
