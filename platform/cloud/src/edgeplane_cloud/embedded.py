"""The embedded cloud end: receive site uplinks into SQLite, push signed desired state, show the fleet.

``edgeplane cloud serve`` subscribes to ``<prefix>/+/up/#`` with a persistent QoS 1 session,
checks every envelope (magic, version, the site in the envelope is the site in the topic),
decompresses it and stores each record unless its ``(site, stream, seq)`` is already stored;
the broker's acknowledgement goes out only after the SQLite commit, so a crash of the cloud end
loses nothing either. Data lands in ``<data>/sites/<site>.db`` (tables ``readings``,
``aggregates``, ``events``, each keyed by stream = bus topic); fleet state in ``<data>/cloud.db``.

``edgeplane cloud push`` signs (ed25519) and publishes desired config overlays, models and
commands; ``edgeplane cloud status`` prints sites, last seen, backlog and twin differences.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from edgeplane.sync.codec import EnvelopeError, decode_block, decode_envelope
from edgeplane.sync.signing import load_private_key, sign

from edgeplane_cloud.broker import PublishError, mqtt_client

__all__ = ["CloudServer", "CloudStore", "push_message"]

log = logging.getLogger(__name__)

_SITE_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS records (stream TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, priority INTEGER,
    count INTEGER, created REAL, received REAL, PRIMARY KEY (stream, seq));
CREATE TABLE IF NOT EXISTS readings (stream TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, value, quality INTEGER);
CREATE INDEX IF NOT EXISTS readings_stream_ts ON readings(stream, ts);
CREATE TABLE IF NOT EXISTS aggregates (stream TEXT NOT NULL, seq INTEGER NOT NULL, window REAL, ts REAL, stats TEXT);
CREATE TABLE IF NOT EXISTS events (stream TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL, kind TEXT, source TEXT,
    severity TEXT, data TEXT);
"""

_CLOUD_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS sites (site TEXT PRIMARY KEY, last_seen REAL, envelopes INTEGER DEFAULT 0,
    records INTEGER DEFAULT 0, duplicates INTEGER DEFAULT 0, readings INTEGER DEFAULT 0, rejected INTEGER DEFAULT 0,
    reported TEXT, reported_at REAL);
CREATE TABLE IF NOT EXISTS desired (site TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, id TEXT NOT NULL,
    issued REAL, summary TEXT, PRIMARY KEY (site, kind, name));
CREATE TABLE IF NOT EXISTS revisions (site TEXT NOT NULL, kind TEXT NOT NULL, revision INTEGER NOT NULL,
    PRIMARY KEY (site, kind));
"""


class CloudStore:
    """SQLite storage of the cloud end. Thread-safe (one lock): paho calls it from its thread."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        (self.folder / "sites").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sites: dict[str, sqlite3.Connection] = {}
        self.db = sqlite3.connect(self.folder / "cloud.db", isolation_level=None, check_same_thread=False)
        self.db.executescript(_CLOUD_SCHEMA)

    def site_db(self, site: str) -> sqlite3.Connection:
        db = self._sites.get(site)
        if db is None:
            if not site.replace("-", "").replace("_", "").isalnum():
                raise EnvelopeError(f"site id {site!r} is not a valid site id")
            db = sqlite3.connect(self.folder / "sites" / f"{site}.db", isolation_level=None, check_same_thread=False)
            db.executescript(_SITE_SCHEMA)
            db.execute("PRAGMA synchronous=FULL")
            self._sites[site] = db
        return db

    def query(self, site: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read-only query (SELECT or WITH) on ``site``'s database: tables ``records``,
        ``readings``, ``aggregates``, ``events``. Taken under the store's lock, since paho's thread
        writes meanwhile; for tests, reports and tools that look at what a site delivered."""
        if sql.lstrip().split(None, 1)[0].upper() not in ("SELECT", "WITH"):
            raise ValueError(f"CloudStore.query runs SELECT (or WITH) statements only, not {sql.split(None, 1)[0]!r}")
        with self._lock:
            return self.site_db(site).execute(sql, params).fetchall()

    def store_envelope(self, topic_site: str, payload: bytes, received: float | None = None) -> tuple[int, int]:
        """Store an envelope's new records; returns (stored, duplicates). Raises EnvelopeError."""
        envelope = decode_envelope(payload)
        if envelope.site != topic_site:
            raise EnvelopeError(f"envelope says site {envelope.site!r} but came on site {topic_site!r}'s topic")
        received = time.time() if received is None else received
        with self._lock:
            db = self.site_db(topic_site)
            stored = duplicates = readings = 0
            db.execute("BEGIN IMMEDIATE")
            try:
                for r in envelope.records:
                    cur = db.execute("INSERT OR IGNORE INTO records VALUES (?,?,?,?,?,?,?)",
                                     (r.stream, r.seq, r.kind, r.priority, r.count, r.created, received))
                    if cur.rowcount == 0:
                        duplicates += 1
                        continue
                    stored += 1
                    readings += r.count
                    block = decode_block(r.block)
                    if block["kind"] == "raw":
                        values = block["values"]
                        values = values.tolist() if hasattr(values, "tolist") else values
                        db.executemany("INSERT INTO readings VALUES (?,?,?,?,?)",
                                       zip([r.stream] * r.count, [r.seq] * r.count, block["ts"].tolist(), values,
                                           block["quality"].tolist()))
                    elif block["kind"] == "aggregate":
                        names = list(block["stats"])
                        cols = [block["stats"][n].tolist() for n in names]
                        db.executemany("INSERT INTO aggregates VALUES (?,?,?,?,?)",
                                       [(r.stream, r.seq, block["window"], t, json.dumps(dict(zip(names, row))))
                                        for t, *row in zip(block["ts"].tolist(), *cols)])
                    else:
                        db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)",
                                       [(r.stream, r.seq, e["ts"], e["kind"], e["source"], e.get("severity"),
                                         json.dumps(e.get("data"))) for e in block["events"]])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.db.execute(
                "INSERT INTO sites(site, last_seen, envelopes, records, duplicates, readings) VALUES (?,?,1,?,?,?) "
                "ON CONFLICT(site) DO UPDATE SET last_seen=excluded.last_seen, envelopes=envelopes+1, "
                "records=records+excluded.records, duplicates=duplicates+excluded.duplicates, "
                "readings=readings+excluded.readings", (topic_site, received, stored, duplicates, readings))
        return stored, duplicates

    def store_state(self, site: str, payload: bytes) -> None:
        json.loads(payload)  # refuse what is not JSON
        with self._lock:
            self.db.execute("INSERT INTO sites(site, last_seen, reported, reported_at) VALUES (?,?,?,?) ON CONFLICT(site) "
                            "DO UPDATE SET last_seen=excluded.last_seen, reported=excluded.reported, "
                            "reported_at=excluded.reported_at", (site, time.time(), payload.decode(), time.time()))

    def reject(self, site: str) -> None:
        with self._lock:
            self.db.execute("INSERT INTO sites(site, rejected) VALUES (?, 1) ON CONFLICT(site) DO UPDATE SET "
                            "rejected=rejected+1", (site,))

    def record_desired(self, site: str, kind: str, name: str, message_id: str, issued: float, summary: dict[str, Any]) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO desired VALUES (?,?,?,?,?,?)",
                            (site, kind, name, message_id, issued, json.dumps(summary)))

    def next_revision(self, site: str, kind: str) -> int:
        """The revision for the next ``kind`` message to ``site``: above every earlier one, and at least
        the time in microseconds, so a cloud end whose database was lost still goes up."""
        with self._lock:
            row = self.db.execute("SELECT revision FROM revisions WHERE site=? AND kind=?", (site, kind)).fetchone()
            revision = max((row[0] + 1) if row else 0, time.time_ns() // 1000)
            self.db.execute("INSERT OR REPLACE INTO revisions VALUES (?,?,?)", (site, kind, revision))
        return revision

    def status(self) -> list[dict[str, Any]]:
        """Per site: last seen, counts, backlog (as the site reported it) and twin differences."""
        out = []
        with self._lock:
            rows = self.db.execute("SELECT site, last_seen, envelopes, records, duplicates, readings, rejected, reported "
                                   "FROM sites ORDER BY site").fetchall()
            desired = self.db.execute("SELECT site, kind, name, id FROM desired").fetchall()
        for site, last_seen, envelopes, records, duplicates, readings, rejected, reported in rows:
            rep = json.loads(reported) if reported else {}
            diffs = []
            for d_site, kind, name, message_id in desired:
                if d_site != site:
                    continue
                if kind == "config":
                    cfg = rep.get("config") or {}
                    if cfg.get("applied") != message_id:
                        diffs.append(f"config desired {message_id} reported {cfg.get('applied')} "
                                     f"({cfg.get('status', 'unknown')}{': ' + cfg['error'] if cfg.get('error') else ''})")
                elif kind == "model":
                    m = (rep.get("models") or {}).get(name) or {}
                    if m.get("id") != message_id or m.get("status") != "applied":
                        diffs.append(f"model {name} desired {message_id} reported {m.get('applied')} ({m.get('status', 'unknown')})")
            backlog = {k: v.get("readings", 0) for k, v in (rep.get("outbox") or {}).items()}
            out.append({"site": site, "last_seen": last_seen, "envelopes": envelopes, "records": records,
                        "duplicates": duplicates, "readings": readings, "rejected": rejected, "backlog": backlog,
                        "twin_differences": diffs, "refused": rep.get("refused", {})})
        return out

    def readings(self, site: str, stream: str | None = None) -> list[tuple[str, int, float, Any, int]]:
        with self._lock:
            db = self.site_db(site)
            if stream is None:
                return db.execute("SELECT stream, seq, ts, value, quality FROM readings ORDER BY stream, ts").fetchall()
            return db.execute("SELECT stream, seq, ts, value, quality FROM readings WHERE stream=? ORDER BY ts", (stream,)).fetchall()

    def ping(self) -> str | None:
        """A readiness check: None when the store answers a query, else why not."""
        try:
            with self._lock:
                self.db.execute("SELECT count(*) FROM sites").fetchone()
        except sqlite3.Error as e:
            return f"SQLite store {self.folder / 'cloud.db'}: {e}"
        return None

    def close(self) -> None:
        with self._lock:
            for db in self._sites.values():
                db.close()
            self._sites.clear()
            self.db.close()


class CloudServer:
    """Receives site uplinks into a :class:`CloudStore`. ``start()``/``stop()``; runs on paho's thread."""

    def __init__(self, broker: str, folder: str | Path, *, prefix: str = "edgeplane", client_id: str = "edgeplane-cloud",
                 ca: str | None = None, cert: str | None = None, key: str | None = None, username: str | None = None,
                 password: str | None = None):
        self.store = CloudStore(folder)
        self.prefix = prefix
        self.broker = broker
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker granted the uplink subscription (SUBACK)
        self.rejected = 0
        self.client, self._host, self._port = mqtt_client(broker, client_id, clean=False, ca=ca, cert=cert, key=key,
                                                           username=username, password=password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_disconnect(self, *args: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if all(not code.is_failure for code in reason_codes):
            self.subscribed.set()
        else:
            log.error("cloud: broker refused the subscription to %s/+/up/#: %s", self.prefix, reason_codes)

    def ready_checks(self) -> dict[str, Any]:
        """What ``/readyz`` checks (:class:`edgeplane_cloud.health.HealthServer`): subscribed at the broker, store answering."""
        def broker() -> str | None:
            if self.subscribed.is_set():
                return None
            state = "connected, subscription not granted" if self.connected.is_set() else "not connected"
            return f"{state} to {self.broker} ({self.prefix}/+/up/#)"

        return {"broker": broker, "store": self.store.ping}

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("cloud: broker refused the connection: %s", reason_code)
            return
        client.subscribe(f"{self.prefix}/+/up/#", qos=1)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # runs on paho's thread; returning sends the PUBACK, so store first
        parts = message.topic.split("/")
        if len(parts) < 4:
            return
        site, channel = parts[1], parts[3]
        try:
            if channel == "data":
                stored, dups = self.store.store_envelope(site, bytes(message.payload))
                log.debug("cloud: %s: %d records stored, %d duplicates dropped", site, stored, dups)
            elif channel == "state":
                self.store.store_state(site, bytes(message.payload))
        except (EnvelopeError, ValueError) as e:
            self.rejected += 1
            self.store.reject(site)
            log.warning("cloud: rejected a message on %s: %s", message.topic, e)

    def start(self) -> None:
        self.client.connect_async(self._host, self._port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()


def push_message(broker: str, site: str, kind: str, body: dict[str, Any], key_path: str | Path, *,
                 ttl: float | None = None, prefix: str = "edgeplane", retain: bool | None = None,
                 store: CloudStore | None = None, timeout: float = 10.0, revision: int | None = None,
                 **tls: Any) -> dict[str, Any]:
    """Sign and publish one downlink message; returns its payload summary (id, revision, issued, expires).

    The revision goes up per (site, kind): the store's counter when there is a store, else the
    time in microseconds; a site refuses a revision not above the last it accepted.
    """
    key = load_private_key(key_path)
    if revision is None:
        revision = store.next_revision(site, kind) if store is not None else time.time_ns() // 1000
    payload = sign(key, site=site, kind=kind, body=body, ttl=ttl, revision=revision)
    message = json.loads(base64.b64decode(json.loads(payload)["payload"]))
    client, host, port = mqtt_client(broker, f"edgeplane-push-{message['id'][:8]}", clean=True, **tls)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        # config and models are state: retained, so a site that connects later still gets the latest
        info = client.publish(f"{prefix}/{site}/down/{kind}", payload, qos=1,
                              retain=kind in ("config", "model") if retain is None else retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise PublishError(f"broker {broker} did not acknowledge the {kind} message within {timeout} s")
    finally:
        client.disconnect()
        client.loop_stop()
    if store is not None:
        name = str(body.get("name", "")) if kind == "model" else ""
        store.record_desired(site, kind, name, message["id"], message["issued"],
                             {k: v for k, v in body.items() if k != "data"})
    return message
