"""A fleet in one process: many sites' uplinks with the real sync codec over MQTT, and their twins.

Each simulated site has ``points`` streams sampled at 1 Hz; every ``record_readings`` seconds of
simulated time it sends one envelope (the sync layer's format, zstd) holding one record per
stream, with the outbox's identity ``(stream, seq)`` and creation time. Sites share a few MQTT
connections (QoS 1, persistent sessions, spread over the broker nodes): a real site has its own,
but thousands of paho clients in one process would measure threads, not the cloud end.

Each connection has its own producer thread: sites are independent, so the sites on a broker node
that died wait for it while the others go on. :meth:`FleetSimulator.prepare` encodes every envelope
beforehand: in the field each site compresses on its own CPU, and a benchmark of the cloud end on
one machine should not charge the fleet's encoding to it.

A reading counts as **produced** only when the broker acknowledged its envelope (PUBACK), which
is when a real site's outbox deletes it; paho resends what was in flight after a reconnect, as
the outbox does. ``produced == stored`` and no duplicate rows is the end-to-end check.

The twins: one connection subscribes to every site's downlink, verifies each message as a site
does (ed25519 signature with the trusted key, site, revision above the last accepted per kind,
the model's sha256 and manifest), and publishes the site's reported state (retained) the way
:class:`edgeplane.sync.service.SyncService` does, so the cloud's health gate reads it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeplane.bus import Batch
from edgeplane.sync.codec import Record, encode_batch, encode_envelope
from edgeplane.sync.signing import DownlinkRefused, verify

from edgeplane_cloud.broker import mqtt_client

__all__ = ["FleetSimulator", "SimulatorStats"]

@dataclass
class SimulatorStats:
    envelopes_acked: int = 0
    readings_produced: int = 0  # acknowledged by the broker
    readings_published: int = 0  # handed to MQTT (acknowledged or not yet)
    downlink_applied: int = 0
    downlink_refused: dict[str, int] = field(default_factory=dict)


class _Connection:
    def __init__(self, sim: "FleetSimulator", index: int, url: str):
        self.sim = sim
        self.client, host, port = mqtt_client(url, f"{sim.name}-up-{index}", clean=False)
        self.client.max_inflight_messages_set(sim.inflight)
        self.client.max_queued_messages_set(0)
        self.connected = threading.Event()
        self.pending: dict[int, int] = {}  # mid -> readings
        self.early: set[int] = set()  # acknowledged before publish() returned its mid
        self.lock = threading.Lock()
        self.room = threading.Semaphore(sim.inflight * 2)
        self.client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else self.connected.set()
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_publish = self._acked
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()

    def _acked(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self.lock:
            readings = self.pending.pop(mid, None)
            if readings is None:
                self.early.add(mid)
                return
        self.room.release()
        self.sim._count_acked(readings)

    def publish(self, topic: str, payload: bytes, readings: int) -> None:
        self.room.acquire()  # bounded: a producer waits for acknowledgements, as an outbox drains
        # not under self.lock: paho may run on_publish (which takes it) while publish() holds paho's own lock
        info = self.client.publish(topic, payload, qos=1)
        with self.lock:
            if info.mid in self.early:
                self.early.discard(info.mid)
                acked_now = True
            else:
                self.pending[info.mid] = readings
                acked_now = False
        if acked_now:
            self.room.release()
            self.sim._count_acked(readings)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class FleetSimulator:
    """``sites`` simulated sites over ``connections`` MQTT connections spread over ``mqtt_urls``."""

    def __init__(self, mqtt_urls: list[str], *, sites: int = 100, points: int = 100, record_readings: int = 10,
                 connections: int = 6, inflight: int = 64, prefix: str = "edgeplane", site_prefix: str = "sim",
                 trusted_keys: dict[str, Any] | None = None, failing_models: set[tuple[str, str]] | None = None,
                 name: str = "fleetsim", start_time: float | None = None):
        self.urls = mqtt_urls
        self.sites = [f"{site_prefix}-{i:05d}" for i in range(sites)]
        self.points = points
        self.record_readings = record_readings
        self.prefix = prefix
        self.inflight = inflight
        self.name = name
        self.stats = SimulatorStats()
        self._stats_lock = threading.Lock()
        self.trusted = trusted_keys or {}
        self.failing_models = failing_models or set()
        self._conns = [_Connection(self, i, mqtt_urls[i % len(mqtt_urls)]) for i in range(connections)]
        self._seq = 0
        # simulated time: whole records in the past, so the rows land in today's partitions
        self.t0 = float(int(start_time if start_time is not None else time.time() - 3600))
        self._twins: dict[str, dict[str, Any]] = {}
        self._revisions: dict[tuple[str, str], int] = {}
        self._down: Any = None
        self._down_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._prepared: dict[tuple[str, int], tuple[bytes, int]] = {}
        self.streams = [f"dev{p // 10}/p{p % 10}" for p in range(points)]

    def _count_acked(self, readings: int) -> None:
        with self._stats_lock:
            self.stats.envelopes_acked += 1
            self.stats.readings_produced += readings

    def wait_connected(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for c in self._conns:
            if not c.connected.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"simulator connection to the broker not up within {timeout} s")

    # -- uplink ---------------------------------------------------------------------------------

    def envelope(self, site: str, round_: int) -> tuple[bytes, int]:
        """One site's envelope for one round: one record of ``record_readings`` per stream."""
        n = self.record_readings
        start = self.t0 + round_ * n
        ts = start + np.arange(n, dtype=np.float64)
        phase = (hash(site) % 1000) / 100.0
        records = []
        for p, stream in enumerate(self.streams):
            values = np.round(20.0 + 5.0 * np.sin(ts / 60.0 + phase + p), 3)
            block, count = encode_batch(Batch(stream, ts, values))
            records.append(Record(stream, round_, "raw", 1, count, start + n, block))
        return encode_envelope(site, time.time(), records, "zstd"), n * len(self.streams)

    def prepare(self, rounds: int) -> int:
        """Encode every site's envelopes for ``rounds`` rounds now (:meth:`run` then only publishes); returns bytes."""
        for r in range(rounds):
            for site in self.sites:
                self._prepared[(site, r)] = self.envelope(site, r)
        return sum(len(payload) for payload, _ in self._prepared.values())

    def _publish(self, connection: int, site: str, round_: int) -> int:
        prepared = self._prepared.pop((site, round_), None)
        payload, readings = prepared if prepared is not None else self.envelope(site, round_)
        with self._stats_lock:
            self.stats.readings_published += readings
        self._conns[connection].publish(f"{self.prefix}/{site}/up/data", payload, readings)
        return readings

    def publish_round(self, round_: int) -> int:
        """Every site sends its envelope for ``round_``; returns readings handed to MQTT."""
        return sum(self._publish(i % len(self._conns), site, round_) for i, site in enumerate(self.sites))

    def run(self, rounds: int, *, rate: float | None = None) -> None:
        """``rounds`` rounds in background threads, one per connection, together paced to ``rate``
        readings/s if given (:meth:`join`)."""
        def loop(connection: int) -> None:
            mine = self.sites[connection::len(self._conns)]
            share = rate * len(mine) / len(self.sites) if rate else None
            started = time.monotonic()
            sent = 0
            for r in range(rounds):
                for site in mine:
                    if self._stop.is_set():
                        return
                    sent += self._publish(connection, site, r)
                if share:
                    ahead = sent / share - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)

        self._threads = [threading.Thread(target=loop, args=(c,), name=f"{self.name}-producer-{c}", daemon=True)
                         for c in range(len(self._conns))]
        for thread in self._threads:
            thread.start()

    @property
    def producing(self) -> bool:
        """Whether a producer thread of :meth:`run` is still publishing."""
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def wait_acked(self, timeout: float = 120.0) -> None:
        """Until the broker acknowledged everything published (what a site's outbox waits for)."""
        deadline = time.monotonic() + timeout
        while self.stats.readings_produced < self.stats.readings_published:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.stats.readings_published - self.stats.readings_produced} readings "
                                   f"not acknowledged by the broker within {timeout} s")
            time.sleep(0.05)

    # -- twins ----------------------------------------------------------------------------------

    def start_twins(self, url: str) -> None:
        """Answer downlink for every site: verify, apply (or fail), report the twin."""
        client, host, port = mqtt_client(url, f"{self.name}-down", clean=False)
        client.max_inflight_messages_set(200)
        client.max_queued_messages_set(0)
        ready = threading.Event()

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            if not rc.is_failure:
                c.subscribe(f"{self.prefix}/+/down/#", qos=1)
                ready.set()

        client.on_connect = on_connect
        client.on_message = self._on_down
        client.connect_async(host, port, keepalive=10)
        client.loop_start()
        self._down = client
        if not ready.wait(30):
            raise TimeoutError("simulator twin connection not up within 30 s")

    def _on_down(self, client: Any, userdata: Any, message: Any) -> None:
        parts = message.topic.split("/")
        if len(parts) != 4 or parts[1] not in self._site_set:
            return
        site, kind = parts[1], parts[3]
        with self._down_lock:
            twin = self._twins.setdefault(site, {"config": {}, "models": {}, "refused": {}})
            try:
                msg = verify(bytes(message.payload), self.trusted, site=site, now=time.time())
                last = self._revisions.get((site, kind), -1)
                if msg["revision"] <= last:
                    if msg["revision"] == last:
                        return  # the retained copy of what was applied
                    raise DownlinkRefused("replayed", f"revision {msg['revision']} not above {last}")
                self._revisions[(site, kind)] = msg["revision"]
                body = msg.get("body") or {}
                if kind == "config":
                    twin["config"] = {"desired": msg["id"], "revision": msg["revision"], "status": "applied",
                                      "applied": msg["id"], "error": None}
                elif kind == "model":
                    twin["models"][body.get("name", "?")] = self._model_state(site, msg, body)
                with self._stats_lock:
                    self.stats.downlink_applied += 1
            except DownlinkRefused as e:
                twin["refused"][e.reason] = twin["refused"].get(e.reason, 0) + 1
                with self._stats_lock:
                    self.stats.downlink_refused[e.reason] = self.stats.downlink_refused.get(e.reason, 0) + 1
            doc = {"site": site, "ts": time.time(), **twin, "outbox": {"normal": {"records": 0, "readings": 0}}}
        client.publish(f"{self.prefix}/{site}/up/state", json.dumps(doc).encode(), qos=1, retain=True)

    def _model_state(self, site: str, msg: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        state = {"desired": body.get("version"), "id": msg["id"], "revision": msg["revision"]}
        data = base64.b64decode(body.get("data", ""))
        digest = hashlib.sha256(data).hexdigest()
        manifest = body.get("manifest") or {}
        if digest != body.get("sha256") or manifest.get("sha256") != digest:
            return {**state, "status": "failed", "error": "sha256 does not match the manifest"}
        if (site, str(body.get("version"))) in self.failing_models:  # (site, version) that fails to warm up
            return {**state, "status": "failed", "error": "warm-up failed: simulated fault"}
        return {**state, "status": "applied", "applied": body.get("version"), "error": None}

    @property
    def _site_set(self) -> set[str]:
        cached = getattr(self, "_sites_cached", None)
        if cached is None:
            cached = self._sites_cached = set(self.sites)
        return cached

    def serving(self, name: str) -> dict[str, str | None]:
        """Which version of model ``name`` each site serves now."""
        with self._down_lock:
            return {s: (self._twins.get(s, {}).get("models", {}).get(name) or {}).get("applied") for s in self.sites}

    def close(self) -> None:
        self._stop.set()
        self.join(10)
        for c in self._conns:
            c.close()
        if self._down is not None:
            self._down.disconnect()
            self._down.loop_stop()
