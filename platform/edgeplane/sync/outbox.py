"""The durable outbox: SQLite (WAL) rows that wait for the broker's acknowledgement.

A record is written (and, with ``durability="power"``, fsynced) before :meth:`Outbox.put_many`
returns, and deleted only after the broker acknowledged it (:meth:`Outbox.acknowledge`), so a
SIGKILL or a power cut loses nothing that was acknowledged to its producer.

Deletions are written in bulk: an acknowledged record is never taken again at once, but its
row is deleted in the next :meth:`Outbox.put_many`'s transaction (one commit, one fsync, for
both), or on its own once ``ack_delay`` seconds or ``ack_batch`` records have piled up (checked by
:meth:`Outbox.acknowledge` and by :meth:`Outbox.expire`, which the sync service's housekeeping
calls every second), or by :meth:`Outbox.flush` and :meth:`Outbox.close`. A crash before that
only means the broker gets those records again: at least once, and the cloud end drops the
duplicates on (site, stream, seq). The sent counters move when the
deletion is committed, never before.

Drain order (:meth:`Outbox.take`): priority class first (high, normal, low); within a class,
records queued since the link came back ("live") before the backlog, and the backlog may be
limited to a number of readings per call so a long backlog never starves live data.

When the payload would exceed the quota, the lowest-priority, oldest records are evicted first;
a new record is refused instead when only higher-priority data is left. The quota shrinks to what
the disk has free (less ``disk_reserve``), so the outbox makes room by eviction before the disk
fills. When the disk fills anyway (something else wrote it full), :meth:`Outbox.put_many` raises
:class:`OutboxFull` and keeps what it stored; acknowledged records are still deleted (after a WAL
checkpoint gives SQLite room to write the deletion, or later, when it can), so the outbox frees
space and takes new records again without a restart. TTL expiry deletes what
waited too long. Both are counted in the ``counters`` table (they survive restarts) and reported.

A damaged file (overwritten, truncated: SQLite says "not a database" or "malformed") is moved
aside to ``outbox.db.damaged-<UTC time>``, kept for recovery by hand, and a new outbox is started
in its place: :attr:`Outbox.recovered` says what happened, so the service can report it.

The class is thread-confined: call it from one thread (:meth:`call` runs a method on the
outbox's own thread, for asyncio code).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from edgeplane.dbthread import DatabaseThread
from edgeplane.errors import EdgeplaneError
from edgeplane.sync.codec import Record

__all__ = ["Outbox", "OutboxFull", "OutboxItem"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: the cloud end deduplicates on it
    stream TEXT NOT NULL,
    priority INTEGER NOT NULL,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_drain ON outbox(priority, seq);
CREATE INDEX IF NOT EXISTS outbox_expiry ON outbox(expires);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

PRIORITY_NAMES = ("high", "normal", "low")


class OutboxFull(EdgeplaneError):
    """The disk under the outbox is full: the records were not stored (what was stored is kept)."""


def _disk_full(error: BaseException) -> bool:
    return isinstance(error, sqlite3.Error) and (getattr(error, "sqlite_errorname", "") == "SQLITE_FULL"
                                                  or "disk is full" in str(error))


@dataclass(slots=True)
class OutboxItem:
    """What a producer hands the outbox: one block of one stream."""

    stream: str
    priority: int
    kind: str
    count: int
    created: float
    expires: float
    block: bytes


class Outbox:
    def __init__(self, path: str | Path, *, quota: int = 256_000_000, durability: str = "power",
                 disk_reserve: int = 16_000_000, ack_delay: float = 1.0, ack_batch: int = 10_000):
        self.path = Path(path)
        self.quota = quota
        # bytes of the disk the outbox leaves free: room for its WAL (up to ~4 MB between
        # checkpoints), for writing deletions, and for everything else on the disk
        self.disk_reserve = disk_reserve
        self.durability = durability
        self._db: sqlite3.Connection | None = None
        self._thread = DatabaseThread(f"outbox {str(self.path)!r}", thread_name="edgeplane-outbox")
        self.size = 0  # payload bytes stored
        self._inflight: set[int] = set()
        self._acked: dict[int, Record] = {}  # acknowledged, the deletion not written yet
        # acknowledged deletions wait at most this long / this many for a put_many to carry them
        self.ack_delay = ack_delay
        self.ack_batch = ack_batch
        self._acked_since = 0.0  # monotonic time of the oldest acknowledgement not yet written
        self._watermark = 0  # highest seq when the link last came up: older records are backlog
        self._live_cursor = [0, 0, 0]
        self._backlog_cursor = [0, 0, 0]
        # per priority class: whether a lane may hold something to take. A lane read to its end is
        # skipped (no query) until a put_many adds to its class (live) or link_up/rewind (both)
        self._live_more = [True, True, True]
        self._backlog_more = [True, True, True]
        self.counters: dict[str, int] = defaultdict(int)
        self.recovered: str | None = None  # what open() did with a damaged file, if it found one

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the outbox; a damaged file is moved aside and a new one started."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", "") not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                raise
            if self._db is not None:
                self._db.close()
                self._db = None
            kept = self._move_aside()
            self.recovered = (f"outbox {str(self.path)!r} was damaged ({e}); moved aside to {str(kept)!r} for "
                              f"recovery and started a new one: what it held was not sent")
            self.counters.clear()
            self._open()

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(self.path) + suffix)
            if part.exists():
                part.rename(Path(str(kept) + suffix))
        return kept

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db = db  # closed by close() if the checks below find the file damaged
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'power' else 'NORMAL'}")
        # a checkpointed WAL shrinks back to this size: it must not keep disk space the outbox freed
        db.execute("PRAGMA journal_size_limit=4000000")
        db.executescript(_SCHEMA)
        if db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone() is None:
            # a new outbox (first start, or its file was lost) starts its sequence at a random
            # point of a 2**62 space: the cloud end deduplicates on (site, stream, seq), so a
            # restart from 1 would make it drop new readings as old duplicates
            start = secrets.randbelow(2**62 - 2**41) + 2**40
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (start,))
        self.size = db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0]
        self.counters.update(dict(db.execute("SELECT name, value FROM counters")))
        self.link_up()

    def close(self) -> None:
        if self._db is not None:
            try:
                self.flush()
            except sqlite3.Error as e:
                # not written: those records are sent again after the restart (at least once)
                log.warning("outbox %s: closing without writing %d acknowledged deletions (%s); "
                            "the broker gets those records again after the restart", self.path, len(self._acked), e)
            self._db.close()
            self._db = None
        self._thread.stop(wait=False)

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` (a method of this outbox) on the outbox's own thread."""
        self._thread.start()
        return await self._thread.run(func, *args)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"outbox {str(self.path)!r} is not open: call open() first")
        return self._db

    # -- writing ------------------------------------------------------------------------------

    def put_many(self, items: Iterable[OutboxItem]) -> int:
        """Store items durably (one transaction); returns how many were stored, not refused.

        Raises :class:`OutboxFull` when the disk is full: nothing of this call is stored.
        """
        items = list(items)
        if not items:
            return 0
        db = self.db
        added = sum(len(i.block) for i in items)
        counts: dict[str, int] = defaultdict(int)
        stored = 0
        for priority in {i.priority for i in items}:
            self._live_more[priority] = True
        try:
            db.execute("BEGIN IMMEDIATE")
            # acknowledged records' deletions ride along in this transaction: one commit for both
            written = self._write_acknowledged(counts)
            limit = self._limit()
            if self.size + added <= limit:
                db.executemany(
                    "INSERT INTO outbox(stream, priority, kind, count, created, expires, size, body) VALUES (?,?,?,?,?,?,?,?)",
                    [(i.stream, i.priority, i.kind, i.count, i.created, i.expires, len(i.block), i.block) for i in items],
                )
                self.size += added
                stored = len(items)
                for i in items:
                    counts["enqueued_records"] += 1
                    counts["enqueued_readings"] += i.count
            else:
                for i in items:
                    if self._make_room(len(i.block), i.priority, counts, limit):
                        db.execute(
                            "INSERT INTO outbox(stream, priority, kind, count, created, expires, size, body) VALUES (?,?,?,?,?,?,?,?)",
                            (i.stream, i.priority, i.kind, i.count, i.created, i.expires, len(i.block), i.block),
                        )
                        self.size += len(i.block)
                        stored += 1
                        counts["enqueued_records"] += 1
                        counts["enqueued_readings"] += i.count
                    else:
                        name = PRIORITY_NAMES[i.priority]
                        counts["enqueued_records"] += 1
                        counts["enqueued_readings"] += i.count
                        counts[f"evicted_records:{name}"] += 1
                        counts[f"evicted_readings:{name}"] += i.count
            self._bump(counts)
            db.execute("COMMIT")
        except BaseException as e:
            self._rollback()
            self.size = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0]
            if _disk_full(e):
                # the deletions alone (after a WAL checkpoint) free space for the next call
                self._retry_acknowledged()
                raise OutboxFull(f"the disk under the outbox {str(self.path)!r} is full "
                                 f"({self._free():,} bytes free): {len(items)} records not stored; "
                                 f"free space there or lower sync.quota") from None
            raise
        self._count(counts)
        self._forget_acknowledged(written)
        return stored

    def _rollback(self) -> None:
        # SQLite rolls back by itself on some errors (SQLITE_FULL among them): a second ROLLBACK
        # would raise "no transaction is active" and hide the real error
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def _free(self) -> int:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return 0

    def _limit(self) -> int:
        """The quota, or less when the disk has less room: a payload byte may need a WAL page and
        a database page before a checkpoint, hence half the free space (less the reserve)."""
        return min(self.quota, self.size + max(0, self._free() - self.disk_reserve) // 2)

    def _make_room(self, size: int, priority: int, counts: dict[str, int], limit: int) -> bool:
        """Evict same-or-lower-priority records, oldest first, until ``size`` fits. False: refuse it."""
        need = self.size + size - limit
        if need <= 0:
            return True
        if size > limit:
            return False
        victims: list[tuple[int, int, int, int]] = []
        freed = 0
        rows = self.db.execute(
            "SELECT seq, size, count, priority FROM outbox WHERE priority >= ? ORDER BY priority DESC, seq ASC", (priority,)
        )
        for seq, vsize, vcount, vprio in rows:
            if seq in self._inflight or seq in self._acked:
                continue  # the broker may already have it: evicting it would double count
            victims.append((seq, vsize, vcount, vprio))
            freed += vsize
            if freed >= need:
                break
        if freed < need:
            return False
        self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(v[0],) for v in victims])
        self.size -= freed
        for _, _, vcount, vprio in victims:
            name = PRIORITY_NAMES[vprio]
            counts[f"evicted_records:{name}"] += 1
            counts[f"evicted_readings:{name}"] += vcount
        return True

    def _bump(self, counts: dict[str, int]) -> None:
        """Add to the persistent counters, inside the caller's transaction."""
        if counts:
            self.db.executemany(
                "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                list(counts.items()),
            )

    def _count(self, counts: dict[str, int]) -> None:
        """Mirror committed counters in memory: only after COMMIT, so they never run ahead of the disk."""
        for k, v in counts.items():
            self.counters[k] += v

    # -- draining -----------------------------------------------------------------------------

    def link_up(self) -> None:
        """The link came (back) up: what is queued now is backlog, what comes after is live."""
        self._watermark = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        self._live_cursor = [self._watermark] * 3
        self._backlog_cursor = [0, 0, 0]
        self._live_more = [True, True, True]
        self._backlog_more = [True, True, True]

    def rewind(self, seqs: Iterable[int]) -> None:
        """Sending these failed: they are no longer in flight and will be taken again."""
        self._inflight.difference_update(seqs)
        self._live_cursor = [self._watermark] * 3
        self._backlog_cursor = [0, 0, 0]
        self._live_more = [True, True, True]
        self._backlog_more = [True, True, True]

    def take(self, max_bytes: int, max_records: int = 10_000, backlog_readings: int | None = None,
             now: float | None = None) -> list[Record]:
        """The next records to send, marked in flight. ``backlog_readings`` caps backlog readings."""
        out: list[Record] = []
        used = 0
        budget = backlog_readings
        for prio in (0, 1, 2):
            lanes: list[tuple[str, list[int], int | None, list[bool]]] = [("live", self._live_cursor, None, self._live_more)]
            lanes.append(("backlog", self._backlog_cursor, self._watermark, self._backlog_more))
            for lane, cursor, upper, more in lanes:
                if not more[prio] or (lane == "backlog" and budget is not None and budget <= 0):
                    continue
                sql = "SELECT seq, stream, kind, priority, count, created, expires, body FROM outbox WHERE priority = ? AND seq > ?"
                args: list[Any] = [prio, cursor[prio]]
                if upper is not None:
                    sql += " AND seq <= ?"
                    args.append(upper)
                sql += " ORDER BY seq LIMIT ?"
                limit = max_records - len(out) + len(self._inflight) + len(self._acked)
                args.append(limit)
                fetched = 0
                for seq, stream, kind, priority, count, created, expires, body in self.db.execute(sql, args):
                    fetched += 1
                    if seq in self._acked:
                        cursor[prio] = seq  # never taken again: a rescan after a rewind need not see it
                        continue
                    if seq in self._inflight:
                        continue
                    if now is not None and expires < now:
                        cursor[prio] = seq
                        continue  # expire() deletes and counts it
                    if out and (used + len(body) > max_bytes or len(out) >= max_records):
                        return self._mark(out)
                    if lane == "backlog" and budget is not None:
                        if budget <= 0:
                            break
                        budget -= count
                    out.append(Record(stream, seq, kind, priority, count, created, body))
                    used += len(body)
                    cursor[prio] = seq
                else:
                    if fetched < limit:
                        more[prio] = False  # read to its end: nothing more in this lane for now
                if used >= max_bytes or len(out) >= max_records:
                    return self._mark(out)
        return self._mark(out)

    def _mark(self, records: list[Record]) -> list[Record]:
        self._inflight.update(r.seq for r in records)
        return records

    def acknowledge(self, records: list[Record]) -> None:
        """The broker has these: they are never taken again, and their rows are deleted with the
        next :meth:`put_many` or :meth:`flush` (at the latest once ``ack_delay`` seconds or
        ``ack_batch`` records have piled up, at this call). On a full disk the deletion is retried
        (after a WAL checkpoint, then at later calls)."""
        self._inflight.difference_update(r.seq for r in records)
        if not self._acked:
            self._acked_since = time.monotonic()
        self._acked.update((r.seq, r) for r in records)
        self._flush_due()

    def _flush_due(self) -> None:
        """Write the acknowledged deletions if they waited ``ack_delay`` or ``ack_batch`` piled up."""
        if self._acked and (len(self._acked) >= self.ack_batch
                            or time.monotonic() - self._acked_since >= self.ack_delay):
            self._retry_acknowledged()

    def flush(self) -> None:
        """Write the deletion of every acknowledged record now (and count them as sent)."""
        self._retry_acknowledged()

    def _retry_acknowledged(self) -> None:
        if not self._acked:
            return
        for attempt in (1, 2):
            try:
                if attempt == 2:
                    # the WAL may hold the space: write it back and truncate it, then try again
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._delete_acknowledged()
                return
            except sqlite3.Error as e:
                self._rollback()
                if not _disk_full(e):
                    raise
        # still no room: the records stay marked as sent (never taken again) and the deletion is
        # written at a later call, once space returns; the sent counters move only then

    def _delete_acknowledged(self) -> None:
        db = self.db
        counts: dict[str, int] = defaultdict(int)
        size_before = self.size
        db.execute("BEGIN IMMEDIATE")
        try:
            written = self._write_acknowledged(counts)
            self._bump(counts)
            db.execute("COMMIT")
        except BaseException:
            self.size = size_before
            raise
        self._count(counts)
        self._forget_acknowledged(written)

    def _write_acknowledged(self, counts: dict[str, int]) -> int:
        """Inside the caller's transaction: delete every acknowledged record's row (one statement
        run in bulk), add them to ``counts`` and take their bytes off ``size`` (the caller puts it
        back if the transaction fails). Returns how many were written, for
        :meth:`_forget_acknowledged` after the commit."""
        if not self._acked:
            return 0
        records = list(self._acked.values())
        db = self.db
        before = db.total_changes
        db.executemany("DELETE FROM outbox WHERE seq = ?", [(r.seq,) for r in records])
        if db.total_changes - before == len(records):
            self.size -= sum(len(r.block) for r in records)
        else:  # some rows were already gone: count what is really left
            self.size = db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0]
        counts["sent_records"] += len(records)
        counts["sent_readings"] += sum(r.count for r in records)
        return len(records)

    def _forget_acknowledged(self, written: int) -> None:
        """After the commit of :meth:`_write_acknowledged`: those deletions are on disk."""
        if written:
            self._acked.clear()

    def expire(self, now: float) -> int:
        """Delete records whose time to live has passed (and write acknowledged deletions that are
        due); returns how many readings expired."""
        db = self.db
        self._flush_due()
        rows = [r for r in db.execute("SELECT seq, size, count, priority FROM outbox WHERE expires < ?", (now,))
                if r[0] not in self._inflight and r[0] not in self._acked]
        if not rows:
            return 0
        counts: dict[str, int] = defaultdict(int)
        for _, _, count, prio in rows:
            counts[f"expired_records:{PRIORITY_NAMES[prio]}"] += 1
            counts[f"expired_readings:{PRIORITY_NAMES[prio]}"] += count
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(r[0],) for r in rows])
            self._bump(counts)
            db.execute("COMMIT")
        except BaseException as e:
            self._rollback()
            if _disk_full(e):
                return 0  # tried again at the next call; the records wait meanwhile
            raise
        self._count(counts)
        self.size -= sum(r[1] for r in rows)
        return sum(r[2] for r in rows)

    # -- reporting ----------------------------------------------------------------------------

    def backlog(self) -> dict[str, dict[str, int]]:
        """Per priority class: records, readings and bytes waiting."""
        out = {name: {"records": 0, "readings": 0, "bytes": 0} for name in PRIORITY_NAMES}
        for prio, records, readings, size in self.db.execute(
            "SELECT priority, COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(size), 0) FROM outbox GROUP BY priority"
        ):
            out[PRIORITY_NAMES[prio]] = {"records": records, "readings": readings, "bytes": size}
        for r in self._acked.values():  # sent, waiting only for room to write the deletion
            waiting = out[PRIORITY_NAMES[r.priority]]
            waiting["records"] -= 1
            waiting["readings"] -= r.count
            waiting["bytes"] -= len(r.block)
        return out

    def integrity(self) -> str:
        """SQLite's own check of the database file: ``"ok"`` when it is intact."""
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    def total(self, counter_prefix: str) -> int:
        """Sum of the counters named ``<prefix>`` or ``<prefix>:<class>``."""
        return sum(v for k, v in self.counters.items() if k == counter_prefix or k.startswith(counter_prefix + ":"))
