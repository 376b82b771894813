"""The NTCIP connector: polls a signal controller's NTCIP 1202 objects over SNMP and commands its phases.

Reading: every ``poll`` one GET (split into requests of ``max_varbinds``) of the configured points,
the phase status groups of ``signal:``, ``volumeOccupancySequence`` (when detector volume or
occupancy points exist) and ``globalTime`` (``time_source: controller``). When detector points exist,
readings are published once per completed volume/occupancy period (a new sequence number), so a
period's counts are never counted twice; skipped periods are counted
(``edgeplane_ntcip_missed_periods_total``). Occupancy above 200 (NTCIP's detector fault codes)
is published with BAD quality.

Commanding (``signal:``): ``<name>.phase`` is the phase-table index a signal solution writes (greens
0..G-1, the yellow of each ordered pair of greens, all-red; see edgeplane-traffic's layout). The
connector turns it into NTCIP phase control and leaves timing to the controller:

* green j while j shows: ``phaseControlGroupHold`` on j's phases (the controller keeps the green);
* anything else towards j (a yellow (i, j), all-red, green j): ``phaseControlGroupForceOff`` on the
  green now shown, ``phaseControlGroupVehCall`` on j, ``phaseControlGroupPhaseOmit`` on every phase
  not in j, so the controller ends the green when its minimum allows, times its own yellow and red
  clearance, and serves j next; once j shows, the hold replaces them.

A write returns what the controller shows (mapped back to the phase table) once it matches, or
after ``confirm_timeout``; the command guard compares it with the request. Control words are
rewritten every ``refresh`` (controllers drop stale central control), and cleared at stop, so the
controller runs on its own when the host is gone.

Failures: a poll that times out publishes BAD quality, counts
``edgeplane_ntcip_request_errors_total{device, reason}``, logs once per change of state, and
retries with the host's :class:`~edgeplane.reconnect.ReconnectPolicy` backoff.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from edgeplane import Batch, Connector, Context, HealthState, PointLimits, Quality
from edgeplane.reconnect import ReconnectPolicy
from edgeplane_ntcip.config import NtcipConfig, NtcipPoint
from edgeplane_ntcip.mib import OBJECTS, bits_to_members, members_to_bits
from edgeplane_ntcip.session import NtcipError, NtcipTimeout, SnmpCredentials, SnmpSession

__all__ = ["NtcipConnector", "poll_wait"]

DEFAULT_POLL = 1.0
REST_FRACTION = 0.6  # of a volume/occupancy period: how long polling rests once a new period is read
REST_MAX_POLLS = 2  # but never longer than this many polls: phase status and control keep their pace
_GOOD = np.array([Quality.GOOD], dtype=np.uint8)
_BAD = np.array([Quality.BAD], dtype=np.uint8)
_STATUS = ("phaseStatusGroupGreens", "phaseStatusGroupYellows", "phaseStatusGroupPhaseNexts")
# the oid of the points 'signal:' makes (<name>.phase, <name>.phase_time): derived from the phase status
# groups, not an object of their own
_SIGNAL_POINT = "0"
_CONTROL = ("phaseControlGroupHold", "phaseControlGroupForceOff", "phaseControlGroupVehCall", "phaseControlGroupPhaseOmit")


def poll_wait(elapsed: float, poll: float, period_wall: float | None) -> float:
    """Seconds to wait before the next poll, ``elapsed`` s after this one began.

    ``period_wall``: the measured wall length of a volume/occupancy period when this poll read a new
    one (else None). The next period cannot come sooner, so polling rests for part of it, leaving the
    event loop to whoever decides on the new readings; but at most REST_MAX_POLLS polls, because the
    phase status and the control it keeps up are read on the same poll, and a field controller's
    volume period is often a minute.
    """
    wait = poll - elapsed
    if period_wall is not None:
        wait = max(wait, min(REST_FRACTION * period_wall, REST_MAX_POLLS * poll) - elapsed)
    return wait


class NtcipConnector(Connector[NtcipConfig, NtcipPoint]):
    """One NTCIP 1202 actuated signal controller."""

    def __init__(self, name: str, config: NtcipConfig, context: Context):
        super().__init__(name, config.model_copy(deep=True), context)
        cfg = self.config
        credentials = SnmpCredentials(cfg.version, cfg.community, cfg.user, cfg.auth_protocol if cfg.auth_key else "none",
                                      cfg.auth_key, cfg.priv_protocol if cfg.priv_key else "none", cfg.priv_key)
        self.session = SnmpSession(name, cfg.host, cfg.port, credentials, cfg.timeout, cfg.retries, cfg.max_varbinds)
        self.reconnect = ReconnectPolicy.of(cfg.reconnect_initial, cfg.reconnect_max)
        self._stages = [frozenset(s) for s in cfg.signal.stages] if cfg.signal else []
        self._phases = sorted(set().union(*self._stages)) if self._stages else []
        self._groups = ((max(self._phases) - 1) // 8 + 1) if self._phases else 0
        self._has_periods = any(p.object in ("detectorVolume", "detectorOccupancy") for p in self.config.points.values())
        self._sequence: int | None = None
        # wall seconds between two consecutive volume/occupancy periods (smoothed), and when the last
        # began: right after a period is read the next cannot come sooner, so the poll loop rests
        # for part of it and leaves the event loop to whoever decides on the new readings
        self._period_wall: float | None = None
        self._period_seen_at: float | None = None
        self._fresh = False
        self._shown: int | None = None  # phase-table index shown at the last poll
        self._shown_since = 0.0
        self._desired: int | None = None  # the green the host asked for
        self._words: dict[str, int] | None = None  # control words last written (group 1.. flattened by OID)
        self._words_at = 0.0
        self._failing: str | None = None
        self._reported: set[str] = set()  # points whose bad value was logged (again once it recovers and fails)
        self._lock = asyncio.Lock()  # one SET sequence at a time (poll loop and writes)
        m = context.metrics
        self._errors = m.counter("edgeplane_ntcip_request_errors_total", "NTCIP requests that failed, by device and reason",
                                 ["device", "reason"])
        self._polls = m.counter("edgeplane_ntcip_polls_total", "NTCIP polls, by result (published, unchanged)", ["device", "result"])
        self._missed = m.counter("edgeplane_ntcip_missed_periods_total",
                                 "volume/occupancy periods completed between two polls and never read", ["device"])
        if cfg.signal is not None:
            greens = len(self._stages)
            self.config.points[f"{cfg.signal.name}.phase"] = NtcipPoint(
                oid=_SIGNAL_POINT, type="int32", access="rw", limits=PointLimits(min=0, max=greens + greens * (greens - 1)),
                description="phase-table index shown (greens, yellows of ordered pairs, all-red); write to command")
            self.config.points[f"{cfg.signal.name}.phase_time"] = NtcipPoint(oid=_SIGNAL_POINT, type="float64", unit="s")

    # ---- the phase table (same order as edgeplane-traffic's layout)
    @property
    def _all_red(self) -> int:
        n = len(self._stages)
        return n + n * (n - 1)

    def _yellow(self, i: int, j: int) -> int:
        n = len(self._stages)
        return n + i * (n - 1) + (j if j < i else j - 1)

    def _kind(self, index: int) -> tuple[str, int | None, int | None]:
        n = len(self._stages)
        if 0 <= index < n:
            return "green", index, index
        if index == self._all_red:
            return "all-red", None, None
        k = index - n
        i, r = divmod(k, n - 1)
        return "yellow", i, (r if r < i else r + 1)

    def _stage_of(self, phases: set[int]) -> int | None:
        for k, stage in enumerate(self._stages):
            if phases == stage:
                return k
        for k, stage in enumerate(self._stages):  # a green stage may show only part of its phases
            if phases and phases <= stage:
                return k
        return None

    def _shown_index(self, status: dict[str, int]) -> int | None:
        def members(name: str) -> set[int]:
            out: set[int] = set()
            for g in range(1, self._groups + 1):
                mask = status[OBJECTS[name].instance(g)]
                if not isinstance(mask, int) or not 0 <= mask <= 255:  # network input: a bit mask or nothing
                    raise NtcipError(f"device {self.name!r} ({self.session.address}) answered {mask!r} for {name}.{g}, "
                                     f"not a bit mask 0..255: is it an NTCIP 1202 controller?")
                out |= bits_to_members(mask, g)
            return out & set(self._phases)

        greens, yellows, nexts = members(_STATUS[0]), members(_STATUS[1]), members(_STATUS[2])
        if greens:
            return self._stage_of(greens)
        if yellows:
            i = self._stage_of(yellows)
            if i is None:
                return None
            j = self._stage_of(nexts) if nexts else None
            if j is None or j == i:
                j = self._desired if self._desired is not None and self._desired != i else (i + 1) % len(self._stages)
            return self._yellow(i, j)
        return self._all_red

    def _status_oids(self) -> list[str]:
        return [OBJECTS[n].instance(g) for n in _STATUS for g in range(1, self._groups + 1)]

    # ---- lifecycle
    async def start(self) -> None:
        self.health.set(HealthState.STARTING, f"contacting {self.session.address}")
        await self.session.open()
        try:
            await self.session.get([OBJECTS["maxPhases"].instance()])
            self.health.set(HealthState.OK, f"NTCIP controller at {self.session.address}")
        except NtcipTimeout as e:  # off-line at start: run() keeps trying, the host keeps running
            self._note_failure("timeout", e)
        self.log.info("device %s: NTCIP 1202 controller at %s (SNMP v%s), %d points%s", self.name, self.session.address,
                      self.config.version, len(self.config.points),
                      f", signal {self.config.signal.name} with {len(self._stages)} greens" if self.config.signal else "")

    async def stop(self) -> None:
        try:
            if self._words is not None:  # hand the intersection back to the controller's own operation
                await asyncio.wait_for(self._set_words({}), self.config.timeout * (self.config.retries + 1) + 0.5)
        except (NtcipError, asyncio.TimeoutError) as e:
            self.log.warning("device %s: could not clear phase control at stop (%s); the controller drops it after its "
                             "own timeout", self.name, e)
        finally:
            self.session.close()

    async def run(self) -> None:
        backoff = self.reconnect.backoff()
        task = asyncio.current_task()
        while True:
            # asyncio.wait_for on Python 3.11 can swallow a cancellation that lands as an answer
            # arrives (the session's backstop uses it): honour the host's stop anyway
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            began = time.monotonic()
            try:
                await self.poll_once()
                backoff.reset()
                wait = poll_wait(time.monotonic() - began, self._period, self._period_wall if self._fresh else None)
            except NtcipError as e:
                reason = type(e).__name__.removeprefix("Ntcip").lower() or "error"
                self._note_failure(reason, e)
                await self._publish_bad()
                wait = backoff.next_delay()
            await asyncio.sleep(max(0.0, wait))

    @property
    def _period(self) -> float:
        """Wall seconds between polls: ``poll`` (0: back to back), 1 s when the site gives none."""
        return DEFAULT_POLL if self.config.poll is None else float(self.config.poll)

    def _note_failure(self, reason: str, error: Exception) -> None:
        self._errors.labels(device=self.name, reason=reason).inc()
        if self._failing != str(error):
            self.log.warning("%s", error)
            self._failing = str(error)
        self.health.set(HealthState.DEGRADED, str(error))

    async def _publish_bad(self) -> None:
        ts = self.context.clock.now()
        await self.context.bus.publish_many([Batch(self.topic(p), np.array([ts]), np.array([np.nan]), _BAD)
                                             for p in self.config.points])

    # ---- polling
    async def poll_once(self) -> None:
        cfg = self.config
        raw = {name: p for name, p in cfg.points.items() if p.oid != _SIGNAL_POINT}
        oids = [p.address for p in raw.values()]
        seq_oid = OBJECTS["volumeOccupancySequence"].instance()
        time_oid = OBJECTS["globalTime"].instance()
        extra = ([seq_oid] if self._has_periods else []) + ([time_oid] if cfg.time_source == "controller" else [])
        extra += self._status_oids() if cfg.signal else []
        values, missing = await self.session.get_many(list(dict.fromkeys([*oids, *extra])))
        if set(missing) & set(extra):
            raise NtcipError(f"device {self.name!r} ({self.session.address}) lacks {sorted(set(missing) & set(extra))}, "
                             f"which this connector needs (phase status, volumeOccupancySequence, globalTime): "
                             f"is it an NTCIP 1202 controller?")
        if self._failing is not None:
            self.log.info("device %s: answering again", self.name)
            self._failing = None
        self.health.set(HealthState.OK, f"NTCIP controller at {self.session.address}")
        if self._has_periods:
            seq = values[seq_oid]
            if not isinstance(seq, int):
                raise NtcipError(f"device {self.name!r} ({self.session.address}) answered {seq!r} for volumeOccupancySequence")
            if seq == self._sequence:
                self._fresh = False
                self._polls.labels(device=self.name, result="unchanged").inc()
                await self._keep_control(values)
                return
            if self._sequence is not None and (seq - self._sequence) % 256 > 1:
                self._missed.labels(device=self.name).inc((seq - self._sequence) % 256 - 1)
            self._note_period(seq)
            self._sequence = seq
        self._polls.labels(device=self.name, result="published").inc()
        controller_time = values.get(time_oid)
        ts = self._timestamp(controller_time if isinstance(controller_time, int) else None)
        batches = []
        for name, point in raw.items():
            value = values.get(point.address)
            bad = not isinstance(value, int) or (point.object == "detectorOccupancy" and value > 200)
            if bad and point.address not in self._reported:  # once per point, not per poll
                self._reported.add(point.address)
                why = "does not exist on the controller: check its object and index" if value is None else \
                    f"read {value!r}: not a value (a detector fault code above 200, or not an integer)"
                self.log.warning("device %s: point %s (%s) %s; published with BAD quality", self.name, name, point.address, why)
            elif not bad:
                self._reported.discard(point.address)
            engineering = np.nan if bad else float(value) * point.scale + point.offset
            batches.append(Batch(self.topic(name), np.array([ts]), np.array([engineering]), _BAD if bad else _GOOD, point.unit))
        if cfg.signal is not None:
            shown = self._shown_index(values)
            if shown != self._shown:
                self._shown, self._shown_since = shown, ts
            key = cfg.signal.name
            batches.append(Batch(self.topic(f"{key}.phase_time"), np.array([ts]), np.array([ts - self._shown_since]), _GOOD, "s"))
            # the phase last: a signal solution treats it as "this period's readings are complete"
            batches.append(Batch(self.topic(f"{key}.phase"), np.array([ts]),
                                 np.array([np.nan if shown is None else float(shown)]), _BAD if shown is None else _GOOD))
        await self.context.bus.publish_many(batches)
        await self._keep_control(values)

    def _note_period(self, seq: int) -> None:
        now = time.monotonic()
        if self._sequence is not None and self._period_seen_at is not None and (seq - self._sequence) % 256 == 1:
            seen = now - self._period_seen_at
            self._period_wall = seen if self._period_wall is None else 0.8 * self._period_wall + 0.2 * seen
        self._period_seen_at = now
        self._fresh = True

    def _timestamp(self, controller_time: int | None) -> float:
        clock = self.context.clock
        if controller_time is None:
            return clock.now()
        ts = float(controller_time)
        if getattr(clock, "simulated", False) and hasattr(clock, "set_time") and ts > clock.now():
            clock.set_time(ts)
        return ts

    # ---- commanding
    def _words_for(self, target: int, shown: int | None) -> dict[str, set[int]]:
        stage = self._stages[target]
        if shown == target:
            return {"phaseControlGroupHold": set(stage)}
        words: dict[str, set[int]] = {"phaseControlGroupVehCall": set(stage),
                                      "phaseControlGroupPhaseOmit": set(self._phases) - stage}
        if shown is not None and shown < len(self._stages):
            words["phaseControlGroupForceOff"] = set(self._stages[shown])
        return words

    async def _set_words(self, words: dict[str, set[int]]) -> None:
        flat = {OBJECTS[n].instance(g): members_to_bits(words.get(n, set()), g)
                for n in _CONTROL for g in range(1, self._groups + 1)}
        async with self._lock:
            await self.session.set(flat)
        self._words, self._words_at = flat, time.monotonic()

    async def _keep_control(self, status: dict[str, int]) -> None:
        """Hold the green the host asked for once it shows; rewrite stale words."""
        if self._desired is None or self.config.signal is None or not set(self._status_oids()) <= set(status):
            return
        shown = self._shown_index(status)
        if shown is not None and shown < len(self._stages):
            wanted = self._words_for(self._desired, shown)
            flat = {OBJECTS[n].instance(g): members_to_bits(wanted.get(n, set()), g)
                    for n in _CONTROL for g in range(1, self._groups + 1)}
            if flat != self._words or time.monotonic() - self._words_at > self.config.refresh:
                await self._set_words(wanted)
        elif time.monotonic() - self._words_at > self.config.refresh and self._words is not None:
            async with self._lock:
                await self.session.set(self._words)
            self._words_at = time.monotonic()

    async def write(self, point: str, value: Any) -> Any:
        spec = self.config.signal
        if spec is not None and point == f"{spec.name}.phase":
            return await self._command_phase(value)
        p = self.config.points.get(point)
        if p is None or not p.writable or p.oid == _SIGNAL_POINT:
            raise ValueError(f"{self.name}/{point} is not writable: declare it with access: rw and a phaseControlGroup "
                             f"object, or write {spec.name + '.phase' if spec else '<signal>.phase'}")
        if float(value) != int(value) or not 0 <= int(value) <= 255:
            raise ValueError(f"{self.name}/{point}: NTCIP control words are whole numbers 0..255 (bit masks), got {value!r}")
        async with self._lock:
            await self.session.set({p.address: int(value)})
        return (await self.session.get([p.address]))[p.address]

    async def _command_phase(self, value: Any) -> int | None:
        index = int(value)
        if float(value) != index or not 0 <= index <= self._all_red:
            raise ValueError(f"{self.name}/{self.config.signal.name}.phase: {value!r} is not in the phase table (0..{self._all_red})")  # type: ignore[union-attr]
        kind, _, target = self._kind(index)
        if target is not None:
            self._desired = target
        if self._desired is None:
            raise ValueError(f"{self.name}: all-red is only reachable on the way to a green; command a yellow first")
        status = await self.session.get(self._status_oids())
        await self._set_words(self._words_for(self._desired, self._shown_index(status)))
        deadline = time.monotonic() + self.config.confirm_timeout
        while True:
            shown = self._shown_index(await self.session.get(self._status_oids()))
            if shown == index or time.monotonic() >= deadline:
                if shown == self._desired:
                    await self._set_words(self._words_for(self._desired, shown))
                return shown
            await asyncio.sleep(min(0.02, self._period / 4))
