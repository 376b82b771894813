"""Ingest workers: JetStream pull consumer (on ``$MQTT_msgs``) -> decode -> PostgreSQL COPY -> commit -> ack.

Run as many worker processes as the database keeps up with (``edgeplane cloud ingest``, one
worker per process); they all bind to the one durable consumer, so JetStream spreads messages
over them. A worker fetches at most ``batch`` messages, decodes them with the sync codec (whose
bounds refuse bombs and truncated blocks), writes the whole batch in one transaction and only
then acknowledges. Fetching and decoding the next batch overlaps the database's work on the
current one (two stages, one decoded batch waiting at most). If it dies before the acknowledgement, JetStream redelivers the batch to
another worker after ``ack_wait``, and the primary key drops what was already committed. If the
database is away, the batch is negatively acknowledged (redelivered after a delay) and the
worker reconnects with backoff; the stream holds the backlog meanwhile.

Nothing stops a worker: a message it cannot decode or store is written to ``dead_letters`` with
the reason, counted (``sites.dead``) and acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from edgeplane.metrics import Metrics
from edgeplane.sync.codec import RawColumns, decode_block, decode_envelope, decode_raw_blocks

from edgeplane_cloud.broker import (INGEST_CONSUMER, UPLINK_STREAM, UPLINK_SUBJECT_PREFIX, BrokerConfigError,
                                    StreamSettings, ensure_stream)
from edgeplane_cloud.pgstore import DeadLetter, PgStore, RecordRow, SiteCounts, json_text

__all__ = ["IngestStats", "IngestWorker", "decode_uplink", "main"]

log = logging.getLogger(__name__)

_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()
# the sync codec decompresses with one module-wide zstandard decompressor, which must not be used by
# two threads at once (it crashes the process): a worker decodes on one thread, but the fallback
# after a refused batch and several workers in one process (tests) would overlap
_CODEC_LOCK = threading.Lock()
_FUTURE_SLACK_S = 2 * 86400


def valid_site_id(site: str) -> bool:
    return 0 < len(site) <= 128 and site.replace("-", "").replace("_", "").isalnum()


def _created(value: float, what: str) -> float:
    if not math.isfinite(value) or not _EARLIEST <= value <= time.time() + _FUTURE_SLACK_S:
        raise ValueError(f"{what}: created time {value!r} is not a plausible UNIX time (2000 .. now + 2 days)")
    return float(value)


def _record_row(site: str, r: Any, columns: RawColumns | None = None, finite: bool = False) -> RecordRow:
    """One record of an envelope as a row; readings stay the codec's numpy arrays (no Python float per reading).

    ``columns``: the record's numeric raw block already decoded (:func:`decode_raw_blocks`, a whole
    envelope at once); ``finite``: its timestamps are known to be finite numbers.
    """
    what = f"site {site} stream {r.stream!r} seq {r.seq}"
    if not isinstance(r.stream, str) or not r.stream or len(r.stream) > 512:
        raise ValueError(f"{what}: the stream must be a non-empty string of at most 512 characters")
    r.stream.encode()  # a lone surrogate cannot be stored as text: this message's fault, a dead letter
    if not (0 <= r.seq < 2**63 and -2**15 <= r.priority < 2**15 and 0 <= r.count < 2**31):
        raise ValueError(f"{what}: seq, priority or count out of range (seq and count >= 0, priority a 16-bit integer)")
    if columns is not None:
        created = _created(r.created, what)
        ts, values, quality = columns
        if not finite and not np.isfinite(ts).all():
            raise ValueError(f"{what} timestamps: not every timestamp is a finite number")
        if len(ts) != r.count:
            raise ValueError(f"{what}: the index says {r.count} readings, the block holds {len(ts)}")
        return RecordRow(site, r.stream, r.seq, created, "raw", r.priority, r.count, ts, values, quality, None)
    block = decode_block(r.block)
    created = _created(r.created, what)
    if block["kind"] == "raw":
        ts = block["ts"]
        if not np.isfinite(ts).all():
            raise ValueError(f"{what} timestamps: not every timestamp is a finite number")
        values = block["values"]
        quality = block["quality"]
        if len(ts) != r.count or len(values) != r.count or len(quality) != r.count:
            raise ValueError(f"{what}: the index says {r.count} readings, the block holds {len(ts)}")
        if isinstance(values, np.ndarray):
            return RecordRow(site, r.stream, r.seq, created, "raw", r.priority, r.count, ts, values, quality, None)
        # a JSON block: scalars (text, booleans) are kept as JSON; a mapping or list is not a reading
        for v in values:
            if isinstance(v, (dict, list)):
                raise ValueError(f"{what}: a {type(v).__name__} value where a reading belongs "
                                 "(readings are numbers, text or booleans)")
        return RecordRow(site, r.stream, r.seq, created, "raw", r.priority, r.count, ts, None, quality,
                         json_text({"values": values}))
    if block["kind"] == "aggregate":
        stats = {name: col.tolist() for name, col in block["stats"].items()}
        if not np.isfinite(block["ts"]).all():
            raise ValueError(f"{what} window starts: not every start is a finite number")
        return RecordRow(site, r.stream, r.seq, created, "aggregate", r.priority, r.count, block["ts"], None, None,
                         json_text({"window": block["window"], "stats": stats}))
    events = block["events"]
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise ValueError(f"{what}: an events block must be a list of objects")
    return RecordRow(site, r.stream, r.seq, created, "events", r.priority, r.count, None, None, None,
                     json_text({"events": events}))


def _record_rows(site: str, records: list[Any]) -> list[RecordRow]:
    """Every record of one envelope as rows: numeric raw blocks decoded together, a few numpy
    operations for the whole envelope instead of several per record."""
    decoded = decode_raw_blocks([r.block for r in records])
    present = [c[0] for c in decoded if c is not None]
    # one check of every timestamp; only when one is not finite does each record check its own (and name it)
    finite = bool(np.isfinite(np.concatenate(present)).all()) if present else True
    return [_record_row(site, r, columns, finite) for r, columns in zip(records, decoded, strict=True)]


def _nats_subject(stored: str) -> str:
    """The uplink's own subject (``edgeplane.<site>.up.data``) from its subject in ``$MQTT_msgs``."""
    return stored[len(UPLINK_SUBJECT_PREFIX):] if stored.startswith(UPLINK_SUBJECT_PREFIX) else stored


def decode_uplink(subject: str, payload: bytes, counts: dict[str, SiteCounts], prefix: str = "edgeplane"
                  ) -> tuple[list[RecordRow], DeadLetter | None]:
    """One uplink message as rows to store, or a dead letter with the reason; updates ``counts``."""
    parts = subject.split(".")
    site = parts[1] if len(parts) > 1 else None
    if len(parts) != 4 or parts[0] != prefix or parts[2] != "up" or not valid_site_id(parts[1]):
        return [], DeadLetter(subject, None, f"subject {subject!r} is not {prefix}.<site>.up.<data|state>", payload)
    assert site is not None
    c = counts.setdefault(site, SiteCounts())
    c.last_seen = time.time()
    try:
        if parts[3] == "data":
            envelope = decode_envelope(payload)
            if envelope.site != site:
                raise ValueError(f"envelope says site {envelope.site!r} but came on site {site!r}'s topic")
            rows = _record_rows(site, envelope.records)
            c.envelopes += 1
            return rows, None
        if parts[3] == "state":
            state = json.loads(payload)
            if not isinstance(state, dict):
                raise ValueError(f"reported state is a JSON {type(state).__name__}, not an object")
            c.reported = json_text(state)
            return [], None
        raise ValueError(f"unknown uplink channel {parts[3]!r} (data or state)")
    except Exception as e:  # noqa: BLE001 - whatever decoding raises, it is this message's fault: dead letter
        c.dead += 1
        return [], DeadLetter(subject, site, f"{type(e).__name__}: {e}"[:1000], payload)


@dataclass
class _Decoded:
    messages: list[tuple[str, bytes]]
    rows: list[RecordRow] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    counts: dict[str, SiteCounts] = field(default_factory=dict)


@dataclass
class IngestStats:
    batches: int = 0
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    readings: int = 0
    database_errors: int = 0
    started: float = field(default_factory=time.monotonic)


class IngestWorker:
    """One worker: fetch, decode, COPY, commit, ack. ``await run()`` until :meth:`stop`."""

    def __init__(self, nats_urls: list[str], dsn: str, *, batch: int = 256, prefix: str = "edgeplane",
                 stream: StreamSettings | None = None, name: str | None = None):
        self.nats_urls = nats_urls
        self.dsn = dsn
        self.batch = batch
        self.prefix = prefix
        self.stream = stream or StreamSettings(prefix=prefix)
        self.name = name or f"ingest-{os.getpid()}"
        self.stats = IngestStats()
        self.metrics = Metrics()
        self._m_messages = self.metrics.counter("edgeplane_cloud_ingest_messages_total", "Uplink messages taken from the stream")
        self._m_records = self.metrics.counter("edgeplane_cloud_ingest_records_total",
                                               "Uplink records by outcome (stored, duplicate)", ["outcome"])
        self._m_readings = self.metrics.counter("edgeplane_cloud_ingest_readings_total", "Readings stored")
        self._m_db_errors = self.metrics.counter("edgeplane_cloud_ingest_database_errors_total",
                                                 "Batches returned to the stream because the database was unavailable")
        self._stop = asyncio.Event()
        self._store: PgStore | None = None
        self._nc: Any = None
        self._bound = False  # bound to the durable consumer

    def ready_checks(self) -> dict[str, Any]:
        """What ``/readyz`` checks (:class:`edgeplane_cloud.health.HealthServer`): NATS, the consumer, PostgreSQL."""
        def nats_connected() -> str | None:
            return None if self._nc is not None and self._nc.is_connected else \
                f"not connected to NATS ({', '.join(self.nats_urls)})"

        def consumer() -> str | None:
            return None if self._bound else f"not bound to the durable consumer {UPLINK_STREAM}/{INGEST_CONSUMER} yet"

        def database() -> str | None:
            import psycopg

            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error as e:
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                return f"PostgreSQL {self.dsn.split('@')[-1]}: {reason}"
            return None

        return {"nats": nats_connected, "consumer": consumer, "database": database}

    def stop(self) -> None:
        self._stop.set()

    def _decode(self, messages: list[tuple[str, bytes]]) -> _Decoded:
        """Runs in a thread: a batch's messages as rows, dead letters and per-site counts."""
        decoded = _Decoded(messages)
        for subject, payload in messages:
            with _CODEC_LOCK:
                got, letter = decode_uplink(subject, payload, decoded.counts, self.prefix)
            decoded.rows += got
            if letter is not None:
                decoded.dead.append(letter)
        return decoded

    def _write(self, decoded: _Decoded) -> Any:
        """Runs in a thread: store a decoded batch in one transaction."""
        import psycopg

        if self._store is None:
            self._store = PgStore(self.dsn)
        messages = decoded.messages
        try:
            return self._store.write(decoded.rows, decoded.dead, decoded.counts)
        except psycopg.OperationalError:
            raise
        except (psycopg.Error, struct.error, ValueError) as e:
            # a row the database refuses: store the batch message by message, dead-lettering the bad ones
            log.warning("%s: batch refused by the database (%s); storing message by message", self.name, e)
            return self._write_one_by_one(messages)

    def _write_one_by_one(self, messages: list[tuple[str, bytes]]) -> Any:
        import psycopg

        assert self._store is not None
        total = None
        for subject, payload in messages:
            counts: dict[str, SiteCounts] = {}
            with _CODEC_LOCK:
                rows, letter = decode_uplink(subject, payload, counts, self.prefix)
            try:
                result = self._store.write(rows, [letter] if letter else [], counts)
            except psycopg.OperationalError:
                raise
            except (psycopg.Error, struct.error, ValueError) as e:
                parts = subject.split(".")
                site = parts[1] if len(parts) > 1 and valid_site_id(parts[1]) else None
                counts = {site: SiteCounts(dead=1)} if site else {}
                result = self._store.write([], [DeadLetter(subject, site, f"database refused: {e}"[:1000], payload)], counts)
            if total is None:
                total = result
            else:
                total.stored += result.stored
                total.duplicates += result.duplicates
                total.dead += result.dead
                total.readings += result.readings
        return total

    def _drop_store(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
            self._store = None

    async def _fetch(self, sub: Any, ready: asyncio.Queue[tuple[list[Any], _Decoded] | None]) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        while not self._stop.is_set():
            try:
                msgs = await sub.fetch(self.batch, timeout=1.0)
            except NatsTimeout:
                continue
            except Exception as e:  # noqa: BLE001 - a node went away mid-fetch; the client reconnects
                log.warning("%s: fetch failed (%s: %s); retrying", self.name, type(e).__name__, e)
                await asyncio.sleep(0.2)
                continue
            decoded = await asyncio.to_thread(self._decode, [(_nats_subject(m.subject), m.data) for m in msgs])
            await ready.put((msgs, decoded))
        await ready.put(None)

    async def _store_batches(self, nc: Any, ready: asyncio.Queue[tuple[list[Any], _Decoded] | None]) -> None:
        import psycopg

        backoff = 0.2
        while (item := await ready.get()) is not None:
            msgs, decoded = item
            try:
                result = await asyncio.to_thread(self._write, decoded)
            except psycopg.Error as e:
                # OperationalError: the database is away, restarting, or the transaction lost a
                # deadlock or lock wait; anything else escaping _write (which dead-letters what
                # the database refuses per message) is not the messages' fault either: the batch
                # goes back to the stream, the worker goes on
                self.stats.database_errors += 1
                self._m_db_errors.inc()
                log.warning("%s: database unavailable (%s: %s); batch of %d returned, retry in %.1f s", self.name,
                            type(e).__name__, e, len(msgs), backoff)
                await asyncio.to_thread(self._drop_store)
                for m in msgs:
                    try:
                        await m.nak(delay=backoff)
                    except Exception:  # noqa: BLE001 - redelivered after ack_wait anyway
                        pass
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            # acknowledged only now, after the commit; a crash before this line means redelivery
            for m in msgs:
                try:
                    await m.ack()
                except Exception:  # noqa: BLE001 - not acknowledged: redelivered, the key drops it
                    pass
            try:
                await nc.flush(timeout=5)
            except Exception:  # noqa: BLE001 - same as above
                pass
            s = self.stats
            s.batches += 1
            s.messages += len(msgs)
            s.stored += result.stored
            s.duplicates += result.duplicates
            s.dead += result.dead
            s.readings += result.readings
            self._m_messages.inc(len(msgs))
            self._m_records.labels("stored").inc(result.stored)
            self._m_records.labels("duplicate").inc(result.duplicates)
            self._m_readings.inc(result.readings)
            if result.dead:
                self.metrics.dropped.labels("ingest", "dead_letter").inc(result.dead)

    async def run(self) -> None:
        import nats

        nc = self._nc = await nats.connect(servers=self.nats_urls, name=self.name, max_reconnect_attempts=-1,
                                           reconnect_time_wait=0.25, connect_timeout=2, ping_interval=5,
                                           max_outstanding_pings=2)
        js = nc.jetstream(timeout=10)
        await asyncio.to_thread(PgStore.create_schema, self.dsn)
        while True:
            try:
                await ensure_stream(js, self.stream)
                sub = await js.pull_subscribe_bind(INGEST_CONSUMER, UPLINK_STREAM)
                self._bound = True
                break
            except BrokerConfigError:
                await nc.close()
                raise
            except Exception as e:  # noqa: BLE001 - the cluster is electing a leader: try again
                log.warning("%s: stream not ready (%s); retrying", self.name, e)
                await asyncio.sleep(0.5)
        log.info("%s: consuming %s/%s into %s", self.name, UPLINK_STREAM, INGEST_CONSUMER, self.dsn.split("@")[-1])
        # two stages: while one batch is in the database (the GIL released, waiting on libpq), the
        # next one is fetched and decoded; one decoded batch waits at most (bounded in flight)
        ready: asyncio.Queue[tuple[list[Any], _Decoded] | None] = asyncio.Queue(maxsize=1)
        fetcher = asyncio.create_task(self._fetch(sub, ready))
        try:
            await self._store_batches(nc, ready)
        finally:
            fetcher.cancel()
            try:
                await fetcher
            except asyncio.CancelledError:
                pass
        self._bound = False
        await nc.close()
        await asyncio.to_thread(self._drop_store)


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeplane_cloud.ingest --nats URL ... --dsn DSN``: one worker until SIGTERM."""
    parser = argparse.ArgumentParser(prog="edgeplane cloud ingest", description=main.__doc__)
    parser.add_argument("--nats", action="append", required=True, help="nats:// URL of a cluster node (repeat)")
    parser.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    parser.add_argument("--batch", type=int, default=256, help="messages fetched per transaction")
    parser.add_argument("--prefix", default="edgeplane")
    parser.add_argument("--replicas", type=int, default=3,
                        help="replicas the uplink stream ($MQTT_msgs) must have (mqtt { stream_replicas } on the servers)")
    parser.add_argument("--ack-wait", type=float, default=30.0, help="seconds before a dead worker's batch is redelivered")
    parser.add_argument("--max-ack-pending", type=int, default=2048, help="messages in flight across all workers")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    parser.add_argument("--health-port", type=int, default=None,
                        help="serve /healthz and /readyz (NATS, consumer, PostgreSQL) on this port of 127.0.0.1")
    args = parser.parse_args(argv)
    run_worker(args.nats, args.dsn, batch=args.batch, prefix=args.prefix, metrics_port=args.metrics_port,
               health_port=args.health_port,
               stream=StreamSettings(prefix=args.prefix, replicas=args.replicas, ack_wait_s=args.ack_wait,
                                     max_ack_pending=args.max_ack_pending))
    return 0


def run_worker(nats_urls: list[str], dsn: str, *, metrics_port: int | None = None, health_port: int | None = None,
               **kwargs: Any) -> IngestStats:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    worker = IngestWorker(nats_urls, dsn, **kwargs)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=worker.metrics.registry)
    if health_port is not None:
        from edgeplane_cloud.health import HealthServer

        HealthServer(worker.ready_checks(), health_port).start()

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(go())
    s = worker.stats
    log.info("%s: %d messages, %d records stored, %d duplicates dropped, %d dead letters, %d database errors",
             worker.name, s.messages, s.stored, s.duplicates, s.dead, s.database_errors)
    return s


if __name__ == "__main__":
    raise SystemExit(main())
