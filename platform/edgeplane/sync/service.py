"""The sync service: bus -> policy -> durable outbox -> transport, and the downlink back.

The host makes one per site with a ``sync:`` section, starts it before the connectors (so no
early reading is missed) and stops it after them (so it can flush what they published).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from edgeplane.bus import Bus, Overflow
from edgeplane.components import Health, HealthState
from edgeplane.errors import LifecycleError
from edgeplane.plugins import Plugins
from edgeplane.ratelimit import TokenBucket
from edgeplane.sync.codec import Record, encode_envelope
from edgeplane.sync.downlink import ApplyConfig, ApplyModel, Downlink, ExecuteCommand
from edgeplane.sync.outbox import PRIORITY_NAMES, Outbox, OutboxFull
from edgeplane.sync.pacing import LinkPacer
from edgeplane.sync.policy import PolicyMapper
from edgeplane.sync.config import SyncConfig
from edgeplane.sync.signing import load_public_key, key_id
from edgeplane.sync.transport import Transport, UplinkSite

__all__ = ["SyncService"]

log = logging.getLogger(__name__)

_INGEST_ROUND = 5000  # bus messages per outbox transaction at most


async def _within(awaitable: Any, timeout: float) -> bool:
    """Await for at most ``timeout`` seconds; False (and the task cancelled and abandoned) when it
    did not finish: unlike wait_for, never waits on a task that ignores its cancellation."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        return False
    if not task.cancelled() and task.exception() is not None:
        log.debug("sync: %r ended with %r while stopping", task, task.exception())
    return True


class SyncService:
    """Store-and-forward uplink and signed downlink for one site.

    ``apply_config(site_dict)`` validates and applies a whole site document (raise
    :class:`~edgeplane.errors.SiteError` when it is invalid); ``apply_model(name=, version=,
    path=, sha256=)`` hands a verified model file to the inference service;
    ``execute_command(device, point, value)`` runs a guarded write. Each is optional.
    """

    def __init__(self, config: SyncConfig, *, site_id: str, bus: Bus, clock: Any, metrics: Any, store_dir: str | Path,
                 apply_config: ApplyConfig | None = None, apply_model: ApplyModel | None = None,
                 execute_command: ExecuteCommand | None = None,
                 base_site: dict[str, Any] | None = None, base_dir: str | Path | None = None,
                 transport: Transport | None = None, transports: dict[str, type] | None = None,
                 devices: Any = None, queue_size: int = 10_000, flush_timeout: float = 5.0):
        self.config = config
        self.site_id = site_id
        self.bus = bus
        self.clock = clock
        self.metrics = metrics
        self.store_dir = Path(store_dir)
        self.base_dir = Path(base_dir or ".")
        self.flush_timeout = flush_timeout
        self.queue_size = queue_size
        prefix = config.uplink.topic_prefix
        self.topic_data = f"{prefix}/{site_id}/up/data"
        self.topic_state = f"{prefix}/{site_id}/up/state"
        self.topic_down = f"{prefix}/{site_id}/down/#"
        if transport is None:
            if transports is None:  # a service made outside a host: the built-in plugin's transports
                transports = Plugins.load(entry_points=False).registry.transports
            cls = transports.get(config.uplink.transport)
            if cls is None:
                raise LifecycleError(f"sync.uplink.transport: no transport {config.uplink.transport!r} is registered "
                                     f"(known: {', '.join(sorted(transports))}); install its plugin")
            uplink = config.uplink
            model = getattr(cls, "Config", None)
            if model is not None and not isinstance(uplink, model):
                # validated without the registry (no context): validate by the transport's own model now
                uplink = model.model_validate(uplink.model_dump())
            transport = cls(uplink, client_id=uplink.client_id or f"edgeplane-{site_id}", base_dir=self.base_dir)
        self.transport = transport
        if isinstance(transport, Transport):
            # devices: a mapping, or a callable returning the current one (a reload may change it)
            transport.attach(UplinkSite(
                site_id=site_id, sync=config, store_dir=self.store_dir, clock=clock, metrics=metrics,
                devices=devices if callable(devices) else (lambda: devices or {}), execute_command=execute_command))
        self._native = getattr(transport, "native_envelope", True)
        self.outbox = Outbox(self.store_dir / "outbox.db", quota=config.quota, durability=config.durability)
        self.mapper = PolicyMapper(config)
        self.health = Health()
        trusted = {}
        for path in config.trust.keys:
            key = load_public_key(self.base_dir / path)
            trusted[key_id(key)] = key
        self.downlink = Downlink(site_id=site_id, store_dir=self.store_dir, trusted=trusted, base_site=base_site,
                                 apply_config=apply_config, apply_model=apply_model, execute_command=execute_command,
                                 on_refused=self._refused)
        self._subscription: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._senders: set[asyncio.Task[Any]] = set()
        self._work = asyncio.Event()
        self._link = asyncio.Event()
        self._window = asyncio.Semaphore(config.uplink.inflight)
        self.pacer = LinkPacer(keepalive=config.uplink.keepalive, max_envelope_bytes=config.uplink.max_envelope_bytes)
        rate = config.uplink.backlog_rate
        # backlog readings per second, at most a second's worth at once
        self._backlog_bucket = TokenBucket(rate, burst=rate) if rate else None
        self._reported: dict[str, int] = {}
        self.bytes_sent = 0
        self.envelopes_sent = 0
        self.link_drops = 0
        self._store_problem: str | None = None  # why the outbox last refused records; None: it stores
        self.state = "created"
        self._metrics()

    # -- metrics --------------------------------------------------------------------------------

    def _metrics(self) -> None:
        m = self.metrics
        self._m_readings = m.counter("edgeplane_sync_readings_total", "Readings through the sync outbox, by stage",
                                     ["stage", "priority"])
        self._m_bytes = m.counter("edgeplane_sync_sent_bytes_total", "Envelope bytes acknowledged by the broker")
        self._m_refused = m.counter("edgeplane_sync_downlink_refused_total", "Downlink messages refused", ["reason"])
        self._m_backlog = m.gauge("edgeplane_sync_backlog_readings", "Readings waiting in the outbox", ["priority"])
        self._m_link = m.gauge("edgeplane_sync_link_up", "1 while the uplink is connected")
        self._m_drops = m.counter("edgeplane_sync_link_drops_total", "Times a connected uplink went down")

    def _sync_counters(self) -> None:
        """Move the outbox's persistent counters into the metrics (by difference)."""
        for name, value in list(self.outbox.counters.items()):
            delta = value - self._reported.get(name, 0)
            if delta <= 0:
                continue
            self._reported[name] = value
            stage, _, prio = name.partition(":")
            if not stage.endswith("_readings"):
                continue
            stage = stage[: -len("_readings")]
            self._m_readings.labels(stage=stage, priority=prio or "all").inc(delta)
            if stage in ("evicted", "expired"):
                self.metrics.dropped.labels(part="sync", reason="quota" if stage == "evicted" else "ttl").inc(delta)

    def _refused(self, reason: str, message: str) -> None:
        self._m_refused.labels(reason=reason).inc()
        self.metrics.errors.labels(part="sync", kind=f"downlink_{reason}").inc()
        log.warning("sync downlink: %s", message)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.state != "created":
            raise LifecycleError(f"cannot start a sync service that is {self.state}: make a new one")
        self.state = "starting"
        await self.outbox.call(self.outbox.open)
        if self.outbox.recovered:
            log.error("sync: %s", self.outbox.recovered)
            self.metrics.errors.labels(part="sync", kind="outbox_damaged").inc()
        # counters persisted by earlier runs are history, not this process's metrics
        self._reported = dict(self.outbox.counters)
        patterns = [rule.topics for rule in self.config.policy]
        if patterns:
            # acknowledged: a producer's publish returns only once the outbox has committed it
            self._subscription = self.bus.subscribe(patterns, name="sync", maxsize=self.queue_size, overflow=Overflow.BLOCK,
                                                    acknowledged=True, multipoint=True)
        await self.transport.subscribe(self.topic_down, self._on_downlink)
        await self.transport.connect(self._on_link)
        self._tasks = [asyncio.create_task(self._ingest(), name="sync:ingest"),
                       asyncio.create_task(self._drain(), name="sync:drain"),
                       asyncio.create_task(self._housekeeping(), name="sync:housekeeping"),
                       asyncio.create_task(self._downlink_loop(), name="sync:downlink")]
        self.state = "running"
        self.health.set(HealthState.DEGRADED, f"connecting to {self.config.uplink.url}")

    async def stop(self) -> None:
        """Store what the bus still holds, flush aggregates, send what the link takes in time."""
        if self.state in ("stopping", "stopped", "created"):
            self.state = "stopped"
            return
        self.state = "stopping"
        if self._subscription is not None:
            self._subscription.close()  # the ingest task stores what is queued, then ends
        opened = self.outbox._db is not None  # start() may have failed before or while opening it
        if self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._tasks[0]), self.flush_timeout)
        items = self.mapper.flush(self.clock.now(), force=True)
        if items and opened:
            await self._store(items)
            self._work.set()
        if self.transport.connected and opened:
            deadline = time.monotonic() + self.flush_timeout
            while time.monotonic() < deadline and self.transport.connected:
                waiting = await self.outbox.call(self.outbox.backlog)
                if not any(v["records"] for v in waiting.values()):
                    break
                self._work.set()
                await asyncio.sleep(0.05)
        tasks = [*self._tasks, *self._senders]
        for task in tasks:
            task.cancel()
        # bounded: a task whose wait_for raced the cancellation (Python 3.11) may swallow it once
        for _ in range(3):
            _, pending = await asyncio.wait(tasks, timeout=self.flush_timeout) if tasks else (set(), set())
            if not pending:
                break
            for task in pending:
                task.cancel()
            tasks = list(pending)
        else:
            log.warning("sync: %d tasks ignored cancellation; abandoning them", len(tasks))
        # a healthy close takes milliseconds; one stuck on a dead socket is abandoned
        close_timeout = min(self.flush_timeout, 3.0)
        if not await _within(self.transport.close(), close_timeout):
            log.warning("sync: the uplink did not close within %g s; abandoning it", close_timeout)
        await self.outbox.call(self.outbox.close)
        self._sync_counters()
        self.state = "stopped"
        self.health.set(HealthState.STOPPED)

    async def enqueue(self, messages: list[Any]) -> int:
        """Store bus messages durably now (for producers that need the acknowledgement); returns items stored."""
        items = self.mapper.map(messages, self.clock.now())
        stored = await self.outbox.call(self.outbox.put_many, items) if items else 0
        self._work.set()
        return stored

    def status(self) -> dict[str, Any]:
        """Link, backlog (per priority) and counters, for health pages and the CLI."""
        return {"link": "up" if self.transport.connected else "down", "url": self.config.uplink.url,
                "last_error": self.transport.last_error, "outbox_bytes": self.outbox.size, "quota": self.outbox.quota,
                "counters": dict(self.outbox.counters), "filtered_readings": self.mapper.filtered,
                "envelopes_sent": self.envelopes_sent, "bytes_sent": self.bytes_sent,
                "link_drops": self.link_drops, "link_rate_bytes_s": self.pacer.rate, "twin": self.downlink.twin,
                "outbox_recovered": self.outbox.recovered}

    # -- uplink ---------------------------------------------------------------------------------

    def _on_link(self, up: bool) -> None:
        self._m_link.set(1 if up else 0)
        if up:
            self._link.set()
            self.health.set(HealthState.OK, f"connected to {self.config.uplink.url}")
            asyncio.get_running_loop().create_task(self._link_came_up())
        else:
            if self._link.is_set():
                self.link_drops += 1
                self._m_drops.inc()
                self.pacer.dropped()
            self._link.clear()
            self.health.set(HealthState.DEGRADED, f"uplink down ({self.transport.last_error}); storing in the outbox")

    async def _link_came_up(self) -> None:
        await self.outbox.call(self.outbox.link_up)
        self._work.set()
        await self._report()

    async def _ingest(self) -> None:
        sub = self._subscription
        if sub is None:
            return
        while True:
            try:
                first = await sub.get()
            except StopAsyncIteration:
                return
            messages = [first]
            while len(messages) < _INGEST_ROUND:
                message = sub.get_nowait()
                if message is None:
                    break
                messages.append(message)
            items = self.mapper.map(messages, self.clock.now())
            if items:
                await self._store(items)
                self._work.set()
            # stored (or counted as dropped): the producers may go on. Readings folded into an
            # aggregate window that is still open are held in memory until the window closes.
            sub.acknowledge(len(messages))

    async def _store(self, items: list[Any]) -> None:
        """Put items in the outbox; a failure is counted as dropped with its reason and logged
        once per change of state (full, then stored again), never once per round."""
        try:
            await self.outbox.call(self.outbox.put_many, items)
        except Exception as e:  # noqa: BLE001 - a full or broken disk must not stop the host
            reason = "disk_full" if isinstance(e, OutboxFull) else "outbox_error"
            self.metrics.dropped.labels(part="sync", reason=reason).inc(sum(i.count for i in items))
            problem = f"{reason}: {e}"
            if problem.split(":", 1)[0] != (self._store_problem or "").split(":", 1)[0]:
                log.error("sync: readings are dropped (counted as reason=%s) until the outbox can store again: %s",
                          reason, e)
                self.health.set(HealthState.DEGRADED, f"outbox cannot store: {e}")
            self._store_problem = problem
            return
        if self._store_problem is not None:
            log.warning("sync: the outbox stores again (space is back); readings were dropped meanwhile, "
                        "see edgeplane_dropped_total{part=\"sync\"}")
            self._store_problem = None
            self.health.set(HealthState.OK if self.transport.connected else HealthState.DEGRADED, "outbox stores again")

    def _backlog_budget(self) -> int | None:
        return None if self._backlog_bucket is None else int(self._backlog_bucket.available())

    def _take_envelope(self, max_bytes: int, budget: int | None, now: float) -> tuple[list[Record], bytes | None]:
        records = self.outbox.take(max_bytes, backlog_readings=budget, now=now)
        if not records or not self._native:
            return records, None  # a foreign-format transport formats the records itself
        return records, encode_envelope(self.site_id, now, records, self.config.compression)

    async def _drain(self) -> None:
        while True:
            await self._link.wait()
            await self._window.acquire()
            await self.pacer.wait_for_room()
            budget = self._backlog_budget()
            records, payload = await self.outbox.call(self._take_envelope, self.pacer.envelope_body_limit(), budget,
                                                      self.clock.now())
            if not records:
                self._window.release()
                self._work.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that races its timeout, and stop() would wait for this task in vain
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2 if budget is not None else 1.0):
                        await self._work.wait()
                continue
            if self._backlog_bucket is not None:
                watermark = self.outbox._watermark
                self._backlog_bucket.spend(sum(r.count for r in records if r.seq <= watermark))
            body = sum(len(r.block) for r in records)
            wire = len(payload) if payload is not None else body
            self.pacer.sent(wire, body)
            task = asyncio.create_task(self._send(records, payload, wire))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send(self, records: list[Record], payload: bytes | None, wire: int) -> None:
        try:
            if payload is None:
                sent = await self.transport.send_records(records, self.clock.now())
            else:
                await self.transport.publish(self.topic_data, payload)
                sent = len(payload)
        except BaseException as e:
            self.pacer.lost(wire)
            if not isinstance(e, (ConnectionError, OSError)):
                raise
            await self.outbox.call(self.outbox.rewind, [r.seq for r in records])
            log.debug("sync: %d records not acknowledged (%s); they stay in the outbox", len(records), e)
            return
        finally:
            self._window.release()
        self.pacer.acknowledged(wire)
        await self.outbox.call(self.outbox.acknowledge, records)
        self.bytes_sent += sent
        self.envelopes_sent += 1
        self._m_bytes.inc(sent)
        self._sync_counters()

    async def _housekeeping(self) -> None:
        last_report = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            try:
                last_report = await self._housekeeping_round(last_report)
            except Exception as e:  # noqa: BLE001 - one failed round (a disk error) must not end the task
                self.metrics.errors.labels(part="sync", kind="housekeeping").inc()
                log.warning("sync: housekeeping failed (%s: %s); trying again in 1 s", type(e).__name__, e)

    async def _housekeeping_round(self, last_report: float) -> float:
        """Expire, flush closed aggregate windows, update the backlog gauges, report the state."""
        now = self.clock.now()
        expired = await self.outbox.call(self.outbox.expire, now)
        if expired:
            log.warning("sync: %d readings expired in the outbox before the link took them", expired)
        items = self.mapper.flush(now)
        if items:
            await self._store(items)
            self._work.set()
        backlog = await self.outbox.call(self.outbox.backlog)
        for name in PRIORITY_NAMES:
            self._m_backlog.labels(priority=name).set(backlog[name]["readings"])
        self._sync_counters()
        if time.monotonic() - last_report >= self.config.report_interval:
            last_report = time.monotonic()
            await self._report(backlog)
        return last_report

    async def _report(self, backlog: dict[str, Any] | None = None) -> None:
        """Publish the reported state (retained), best effort: the next report repeats it."""
        import json

        self.downlink.flush()  # refusals counted since the last save reach twin.json with the report
        if backlog is None:
            backlog = await self.outbox.call(self.outbox.backlog)
        doc = {"site": self.site_id, "ts": self.clock.now(), **self.downlink.twin, "outbox": backlog,
               "counters": dict(self.outbox.counters)}
        if not self._native:
            return  # the far end speaks another protocol; the twin stays on the site (status())
        with contextlib.suppress(ConnectionError, OSError):
            await self.transport.publish(self.topic_state, json.dumps(doc, default=str).encode(), retain=True)

    # -- downlink -------------------------------------------------------------------------------

    def _on_downlink(self, topic: str, payload: bytes) -> None:
        self.downlink.submit(payload)  # bounded: a flood is dropped and counted, never queued without end

    async def _downlink_loop(self) -> None:
        reported, verified = 0.0, self.downlink.verified
        while True:
            payload = await self.downlink.next()
            try:
                handled = await self.downlink.handle(payload, self.clock.now())
            except Exception:  # noqa: BLE001 - one bad message must not stop the downlink
                log.exception("sync: downlink message failed")
                handled = None
            # refusals are reported once per burst and at most once a second (the periodic report
            # catches up): a flood of junk must not become a flood of fsyncs and state publishes
            if not self.downlink.pending and (self.downlink.verified != verified or time.monotonic() - reported >= 1.0):
                reported, verified = time.monotonic(), self.downlink.verified
                await self._report()
            if handled is not None:
                log.info("sync: applied downlink %s %s", handled.get("kind"), handled.get("id"))
