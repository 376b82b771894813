"""Fleet operations on the PostgreSQL store: labels, signed desired state, staged rollouts.

* **Labels**: every site carries a JSON object of labels (``region``, ``vertical``, ``hardware``,
  anything); a selector ``region=eu,vertical=solar`` matches sites whose labels have all of them.
* **Desired state** goes out signed (ed25519) and retained on ``<prefix>/<site>/down/<kind>``,
  with a revision per (site, kind) that only goes up (the previous one plus one, at least the time
  in microseconds, as the embedded back end does): a site refuses anything at or below what it
  applied, so an old message replayed cannot roll it back. What was sent is kept in ``desired``.
* **Rollouts** send a config overlay or a model version to a selector: a canary share first,
  then batches. Each batch waits for its health gate: every site's twin (the reported state
  the ingest workers store) says it applied exactly that message, within ``gate_timeout``. A
  site that reports a failure, or the timeout, stops the rollout and rolls back every site it
  changed: each gets what it had before (its previous desired state, re-signed with a new,
  higher revision; an empty overlay, i.e. its own site file, when it had no cloud config).
* **Models** travel with their manifest (sha256, input/output signature, and an ed25519
  signature when a model-signing key is given), so a site whose inference service requires
  signed models can check them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from edgeplane.errors import EdgeplaneError
from edgeplane.sync.signing import load_private_key, sign

__all__ = ["Fleet", "FleetError", "Gate", "parse_selector", "signed_message", "twin_view"]

KINDS = ("config", "model")


class FleetError(EdgeplaneError):
    """A fleet operation cannot be done; the message says why and what to do."""


def signed_message(key: Any, *, site: str, kind: str, body: dict[str, Any], revision: int, ttl: float | None = None
                   ) -> tuple[bytes, dict[str, Any]]:
    """A signed downlink message (wire bytes) and its payload; ``key`` is a private key or its PEM file."""
    if isinstance(key, (str, Path)):
        key = load_private_key(key)
    payload = sign(key, site=site, kind=kind, body=body, ttl=ttl, revision=revision)
    return payload, json.loads(base64.b64decode(json.loads(payload)["payload"]))


def parse_selector(text: str | dict[str, str] | None) -> dict[str, str]:
    """``"region=eu,vertical=solar"`` -> ``{"region": "eu", "vertical": "solar"}``; empty selects every site."""
    if text is None or isinstance(text, dict):
        return dict(text or {})
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise FleetError(f"selector {text!r}: write label=value pairs separated by commas, e.g. region=eu,vertical=solar")
        out[key.strip()] = value.strip()
    return out


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:200]


def twin_view(reported_text: str | None) -> dict[str, Any]:
    """The parts of a reported state the fleet reads, from whatever a site sent: never raises.

    A reported state is the site's word, stored as it came: it may be garbage, or the right
    JSON with the wrong types. Anything that is not the expected shape reads as unknown.
    """
    try:
        rep = json.loads(reported_text) if reported_text else {}
    except (ValueError, TypeError, RecursionError):
        return {"valid": False, "config": {}, "models": {}, "backlog": {}, "refused": {}}
    rep = _obj(rep)
    config = _obj(rep.get("config"))
    models = {str(k)[:200]: _obj(v) for k, v in _obj(rep.get("models")).items()}
    backlog = {}
    for prio, v in _obj(rep.get("outbox")).items():
        readings = _obj(v).get("readings")
        if isinstance(readings, (int, float)) and not isinstance(readings, bool) and math.isfinite(readings):
            backlog[str(prio)[:40]] = int(readings)
    refused = {str(k)[:80]: v for k, v in _obj(rep.get("refused")).items() if isinstance(v, int) and not isinstance(v, bool)}
    return {"valid": isinstance(rep, dict) and bool(rep), "config": config, "models": models, "backlog": backlog,
            "refused": refused}


@dataclass(frozen=True)
class Gate:
    """Where one site is against one desired message: ``ok``, ``failed`` (with error) or ``pending``."""

    state: str
    error: str | None = None


def gate_for(kind: str, name: str, message_id: str, twin: dict[str, Any]) -> Gate:
    part = twin["config"] if kind == "config" else twin["models"].get(name, {})
    reported_id = part.get("applied") if kind == "config" else part.get("id")
    status = part.get("status")
    if kind == "config" and part.get("desired") == message_id and status == "applied" and reported_id == message_id:
        return Gate("ok")
    if kind == "model" and reported_id == message_id and status == "applied":
        return Gate("ok")
    desired = part.get("desired") if kind == "config" else part.get("id")
    if desired == message_id and status == "failed":
        return Gate("failed", _text(part.get("error")) or "the site reports a failure")
    return Gate("pending")


class Fleet:
    """Fleet state in PostgreSQL; ``publish`` sends ``(topic, payload, retain)`` messages to the broker."""

    def __init__(self, dsn: str, *, signing_key: Any = None, publish: Callable[[list[tuple[str, bytes, bool]]], None] | None = None,
                 prefix: str = "edgeplane"):
        import psycopg

        from edgeplane_cloud.pgstore import PgStore

        PgStore.create_schema(dsn)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.key = load_private_key(signing_key) if isinstance(signing_key, (str, Path)) else signing_key
        self.publish = publish
        self.prefix = prefix
        self.publisher: Any = None  # the CLI's MqttPublisher behind ``publish``, closed with the fleet

    def close(self) -> None:
        self.conn.close()

    # -- sites ---------------------------------------------------------------------------------

    def set_labels(self, site: str, labels: dict[str, str]) -> None:
        from psycopg.types.json import Jsonb

        self.conn.execute("INSERT INTO sites (site, labels) VALUES (%s, %s) ON CONFLICT (site) DO UPDATE "
                          "SET labels = sites.labels || excluded.labels", (site, Jsonb(labels)))

    def select(self, selector: dict[str, str] | str | None) -> list[str]:
        from psycopg.types.json import Jsonb

        rows = self.conn.execute("SELECT site FROM sites WHERE labels @> %s ORDER BY site",
                                 (Jsonb(parse_selector(selector)),)).fetchall()
        return [r[0] for r in rows]

    def sites(self, selector: dict[str, str] | str | None = None, *, stale_after: float = 120.0) -> list[dict[str, Any]]:
        """Per site: labels, last seen, counts, backlog, health and twin differences (never raises on a bad twin)."""
        from psycopg.types.json import Jsonb

        rows = self.conn.execute(
            "SELECT site, labels, extract(epoch FROM last_seen), envelopes, records, readings, duplicates, dead, reported "
            "FROM sites WHERE labels @> %s ORDER BY site", (Jsonb(parse_selector(selector)),)).fetchall()
        desired: dict[str, list[tuple[str, str, str, int]]] = {}
        for site, kind, name, message_id, revision in self.conn.execute(
                "SELECT site, kind, name, message_id, revision FROM desired"):
            desired.setdefault(site, []).append((kind, name, message_id, revision))
        now = time.time()
        out = []
        for site, labels, last_seen, envelopes, records, readings, duplicates, dead, reported in rows:
            twin = twin_view(reported)
            diffs = []
            for kind, name, message_id, revision in desired.get(site, []):
                gate = gate_for(kind, name, message_id, twin)
                if gate.state != "ok":
                    what = f"{kind} {name}".strip()
                    diffs.append(f"{what}: desired revision {revision} ({message_id[:8]}), site {gate.state}"
                                 + (f": {gate.error}" if gate.error else ""))
            seen = float(last_seen) if last_seen is not None else None
            if seen is None:
                health = "never seen"
            elif now - seen > stale_after:
                health = "stale"
            elif any("failed" in d for d in diffs):
                health = "failed"
            elif diffs:
                health = "converging"
            else:
                health = "ok"
            out.append({"site": site, "labels": labels, "last_seen": seen, "envelopes": envelopes, "records": records,
                        "readings": readings, "duplicates": duplicates, "dead_letters": dead, "backlog": twin["backlog"],
                        "health": health, "twin_valid": twin["valid"], "twin_differences": diffs,
                        "refused": twin["refused"]})
        return out

    # -- desired state ---------------------------------------------------------------------------

    def next_revisions(self, sites: list[str], kind: str) -> dict[str, int]:
        floor = time.time_ns() // 1000
        rows = self.conn.execute(
            "SELECT s, greatest(coalesce(max(d.revision) + 1, 0), %s) FROM unnest(%s::text[]) AS s "
            "LEFT JOIN desired d ON d.site = s AND d.kind = %s GROUP BY s", (floor, sites, kind)).fetchall()
        return {site: int(rev) for site, rev in rows}

    def send(self, sites: list[str], kind: str, body: dict[str, Any], *, name: str = "", rollout: int | None = None
             ) -> dict[str, dict[str, Any]]:
        """Sign, publish (retained) and record ``body`` for each site; returns each site's message."""
        from psycopg.types.json import Jsonb

        if self.key is None or self.publish is None:
            raise FleetError("sending desired state needs --signing-key and --broker")
        revisions = self.next_revisions(sites, kind)
        messages, wire = {}, []
        for site in sites:
            payload, message = signed_message(self.key, site=site, kind=kind, body=body, revision=revisions[site])
            messages[site] = message
            wire.append((f"{self.prefix}/{site}/down/{kind}", payload, True))
        self.publish(wire)
        summary = {k: v for k, v in body.items() if k != "data"}
        with self.conn.transaction():
            self.conn.cursor().executemany(
                "INSERT INTO desired (site, kind, name, revision, message_id, issued, body, rollout) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (site, kind, name) DO UPDATE SET "
                "revision = excluded.revision, message_id = excluded.message_id, issued = excluded.issued, "
                "body = excluded.body, rollout = excluded.rollout",
                [(site, kind, name, m["revision"], m["id"], datetime.fromtimestamp(m["issued"], timezone.utc),
                  Jsonb(summary), rollout) for site, m in messages.items()])
        return messages

    # -- models ---------------------------------------------------------------------------------

    def add_model(self, path: str | Path, name: str, version: str, *, model_key: Any = None) -> dict[str, Any]:
        """Keep a model version (bytes and manifest) to roll out; signs the manifest with ``model_key``."""
        from psycopg.types.json import Jsonb

        from edgeplane.inference.manifest import ModelManifest, Provenance, read_onnx_signature
        from edgeplane.inference.trust import load_private_key as load_model_key, sign_manifest

        path = Path(path)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        try:
            inputs, outputs = read_onnx_signature(path)
        except Exception as e:  # noqa: BLE001 - onnx's own errors vary
            raise FleetError(f"{path}: not a readable ONNX model ({e}): give the .onnx file to roll out") from None
        manifest = ModelManifest(name=name, version=version, file=path.name, sha256=digest, size=len(data), inputs=inputs,
                                 outputs=outputs, provenance=Provenance(source=f"fleet store: {path.name}"))
        if model_key is not None:
            manifest = sign_manifest(manifest, load_model_key(Path(model_key)) if isinstance(model_key, (str, Path)) else model_key)
        doc = json.loads(manifest.to_json())
        self.conn.execute("INSERT INTO artifacts (name, version, sha256, filename, manifest, data) VALUES (%s,%s,%s,%s,%s,%s) "
                          "ON CONFLICT (name, version) DO UPDATE SET sha256 = excluded.sha256, filename = excluded.filename, "
                          "manifest = excluded.manifest, data = excluded.data",
                          (name, version, digest, path.name, Jsonb(doc), data))
        return doc

    def model_body(self, name: str, version: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT sha256, filename, manifest, data FROM artifacts WHERE name = %s AND version = %s",
                                (name, version)).fetchone()
        if row is None:
            raise FleetError(f"model {name} {version} is not in the fleet store: add it first (edgeplane fleet model-add)")
        sha256, filename, manifest, data = row
        return {"name": name, "version": version, "filename": filename, "sha256": sha256, "manifest": manifest,
                "data": base64.b64encode(bytes(data)).decode()}

    # -- rollouts -------------------------------------------------------------------------------

    def start_rollout(self, kind: str, target: dict[str, Any], selector: dict[str, str] | str | None, *,
                      canary: float = 0.05, batch_size: int = 100, gate_timeout: float = 60.0) -> int:
        """Plan a rollout (canary batch, then batches); returns its id. :meth:`run_rollout` carries it out."""
        from psycopg.types.json import Jsonb

        if kind not in KINDS:
            raise FleetError(f"rollout kind {kind!r}: use config or model")
        if kind == "model":
            self.model_body(str(target.get("name")), str(target.get("version")))  # fails early when unknown
        elif not isinstance(target.get("overlay"), dict):
            raise FleetError("a config rollout needs an overlay mapping")
        if not 0 <= canary <= 1 or batch_size < 1:
            raise FleetError("canary is a share from 0 to 1 and batch size at least 1")
        sel = parse_selector(selector)
        sites = self.select(sel)
        if not sites:
            raise FleetError(f"selector {sel} matches no site: see `edgeplane fleet sites`")
        n_canary = max(1, math.ceil(len(sites) * canary)) if canary > 0 else 0
        batches = [0] * n_canary + [1 + i // batch_size for i in range(len(sites) - n_canary)]
        with self.conn.transaction():
            row = self.conn.execute(
                "INSERT INTO rollouts (kind, target, selector, canary, batch_size, gate_timeout, state) "
                "VALUES (%s,%s,%s,%s,%s,%s,'planned') RETURNING id",
                (kind, Jsonb(target), Jsonb(sel), canary, batch_size, gate_timeout)).fetchone()
            assert row is not None  # INSERT ... RETURNING gives the new row
            rid = row[0]
            self.conn.cursor().executemany(
                "INSERT INTO rollout_sites (rollout, site, batch, state) VALUES (%s,%s,%s,'planned')",
                [(rid, site, b) for site, b in zip(sites, batches)])
        self._event("info", f"rollout {rid}: {kind} to {len(sites)} sites ({n_canary} canary, batches of {batch_size})")
        return int(rid)

    def _event(self, severity: str, message: str) -> None:
        self.conn.execute("INSERT INTO events (severity, message) VALUES (%s, %s)", (severity, message))

    def _body(self, kind: str, target: dict[str, Any]) -> tuple[dict[str, Any], str]:
        if kind == "model":
            return self.model_body(target["name"], target["version"]), str(target["name"])
        return {"overlay": target["overlay"]}, ""

    def run_rollout(self, rollout: int, *, poll: float = 0.25, on_batch: Callable[[int, str], None] | None = None) -> str:
        """Carry out a planned rollout batch by batch; returns ``done`` or ``rolled_back``."""
        from psycopg.types.json import Jsonb

        row = self.conn.execute("SELECT kind, target, gate_timeout, state FROM rollouts WHERE id = %s", (rollout,)).fetchone()
        if row is None:
            raise FleetError(f"no rollout {rollout}: see `edgeplane fleet status`")
        kind, target, gate_timeout, state = row
        if state not in ("planned", "running"):
            raise FleetError(f"rollout {rollout} is {state}; start a new one")
        body, name = self._body(kind, target)
        self.conn.execute("UPDATE rollouts SET state = 'running' WHERE id = %s", (rollout,))
        batches = [b for (b,) in self.conn.execute(
            "SELECT DISTINCT batch FROM rollout_sites WHERE rollout = %s AND state = 'planned' ORDER BY batch", (rollout,))]
        for batch in batches:
            sites = [s for (s,) in self.conn.execute(
                "SELECT site FROM rollout_sites WHERE rollout = %s AND batch = %s ORDER BY site", (rollout, batch))]
            previous = {site: body_ for site, body_ in self.conn.execute(
                "SELECT site, body FROM desired WHERE kind = %s AND name = %s AND site = ANY(%s)", (kind, name, sites))}
            messages = self.send(sites, kind, body, name=name, rollout=rollout)
            with self.conn.transaction():
                self.conn.cursor().executemany(
                    "UPDATE rollout_sites SET state = 'sent', revision = %s, message_id = %s, previous = %s, "
                    "started = now() WHERE rollout = %s AND site = %s",
                    [(m["revision"], m["id"], Jsonb(previous.get(site)), rollout, site) for site, m in messages.items()])
            failure = self._wait_gate(rollout, kind, name, messages, gate_timeout, poll)
            if on_batch is not None:
                on_batch(batch, "failed" if failure else "passed")
            if failure:
                self.conn.execute("UPDATE rollouts SET state = 'failed', error = %s WHERE id = %s", (failure, rollout))
                self._event("error", f"rollout {rollout}: batch {batch} failed its health gate: {failure}; rolling back")
                self.rollback(rollout, reason=failure)
                return "rolled_back"
            self._event("info", f"rollout {rollout}: batch {batch} ({len(sites)} sites) passed its health gate")
        self.conn.execute("UPDATE rollouts SET state = 'done', finished = now() WHERE id = %s", (rollout,))
        self._event("info", f"rollout {rollout}: done")
        return "done"

    def _wait_gate(self, rollout: int, kind: str, name: str, messages: dict[str, dict[str, Any]], timeout: float,
                   poll: float) -> str | None:
        """None when every site reported the message applied; else why the gate failed."""
        waiting = set(messages)
        deadline = time.monotonic() + timeout
        while waiting:
            rows = self.conn.execute("SELECT site, reported FROM sites WHERE site = ANY(%s)", (sorted(waiting),)).fetchall()
            done, failed = [], []
            for site, reported in rows:
                gate = gate_for(kind, name, messages[site]["id"], twin_view(reported))
                if gate.state == "ok":
                    done.append(site)
                elif gate.state == "failed":
                    failed.append((site, gate.error))
            if done:
                self.conn.cursor().executemany(
                    "UPDATE rollout_sites SET state = 'applied', done = now() WHERE rollout = %s AND site = %s",
                    [(rollout, s) for s in done])
                waiting -= set(done)
            if failed:
                self.conn.cursor().executemany(
                    "UPDATE rollout_sites SET state = 'failed', error = %s, done = now() WHERE rollout = %s AND site = %s",
                    [(err, rollout, s) for s, err in failed])
                return f"site {failed[0][0]}: {failed[0][1]}"
            if waiting and time.monotonic() > deadline:
                self.conn.cursor().executemany(
                    "UPDATE rollout_sites SET state = 'timeout', error = 'not applied within the gate timeout' "
                    "WHERE rollout = %s AND site = %s", [(rollout, s) for s in waiting])
                return f"{len(waiting)} site(s) did not report the change applied within {timeout:g} s (e.g. {min(waiting)})"
            if waiting:
                time.sleep(poll)
        return None

    def rollback(self, rollout: int, reason: str = "requested") -> int:
        """Give every site this rollout changed what it had before; returns how many sites were rolled back."""
        row = self.conn.execute("SELECT kind, target FROM rollouts WHERE id = %s", (rollout,)).fetchone()
        if row is None:
            raise FleetError(f"no rollout {rollout}: see `edgeplane fleet status`")
        kind, target = row
        name = str(target.get("name", "")) if kind == "model" else ""
        changed = self.conn.execute("SELECT site, previous FROM rollout_sites WHERE rollout = %s AND state IN "
                                    "('sent', 'applied', 'failed', 'timeout')", (rollout,)).fetchall()
        by_body: dict[str, tuple[dict[str, Any], list[str]]] = {}
        kept: list[str] = []
        for site, previous in changed:
            if kind == "config":
                body = {"overlay": (previous or {}).get("overlay") or {}}  # none before: the site's own file
            elif previous:
                body = self.model_body(name, str(previous["version"]))
            else:
                kept.append(site)  # no earlier cloud model to go back to: said so, not hidden
                continue
            key = json.dumps(body, sort_keys=True)
            by_body.setdefault(key, (body, []))[1].append(site)
        for body, sites in by_body.values():
            self.send(sites, kind, body, name=name)
        if kept:
            self.conn.execute("UPDATE rollout_sites SET state = 'kept', error = 'no earlier cloud version to return to' "
                              "WHERE rollout = %s AND site = ANY(%s)", (rollout, kept))
        self.conn.execute("UPDATE rollout_sites SET state = 'rolled_back' WHERE rollout = %s AND state IN "
                          "('sent', 'applied', 'failed', 'timeout')", (rollout,))
        self.conn.execute("UPDATE rollout_sites SET state = 'skipped' WHERE rollout = %s AND state = 'planned'", (rollout,))
        self.conn.execute("UPDATE rollouts SET state = 'rolled_back', error = coalesce(error, %s), finished = now() "
                          "WHERE id = %s", (reason, rollout))
        self._event("warning", f"rollout {rollout}: rolled back {len(changed) - len(kept)} sites ({reason})"
                    + (f"; {len(kept)} had no earlier cloud version and keep this one" if kept else ""))
        return len(changed) - len(kept)

    def rollouts(self, rollout: int | None = None) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT r.id, r.kind, r.target - 'data', r.selector, r.state, r.error, extract(epoch FROM r.created), "
            "extract(epoch FROM r.finished), count(s.site), count(s.site) FILTER (WHERE s.state = 'applied'), "
            "count(s.site) FILTER (WHERE s.state IN ('failed', 'timeout')), "
            "count(s.site) FILTER (WHERE s.state = 'rolled_back'), coalesce(max(s.batch), 0), "
            "count(s.site) FILTER (WHERE s.state = 'kept') "
            "FROM rollouts r LEFT JOIN rollout_sites s ON s.rollout = r.id "
            "WHERE %s::bigint IS NULL OR r.id = %s GROUP BY r.id ORDER BY r.id DESC", (rollout, rollout)).fetchall()
        return [{"id": r[0], "kind": r[1], "target": r[2], "selector": r[3], "state": r[4], "error": r[5],
                 "created": float(r[6]), "finished": float(r[7]) if r[7] is not None else None, "sites": r[8],
                 "applied": r[9], "failed": r[10], "rolled_back": r[11], "batches": r[12] + 1, "kept": r[13]} for r in rows]

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT extract(epoch FROM at), severity, message FROM events ORDER BY id DESC LIMIT %s",
                                 (limit,)).fetchall()
        dead = self.conn.execute("SELECT extract(epoch FROM received), site, reason FROM dead_letters ORDER BY id DESC "
                                 "LIMIT %s", (limit,)).fetchall()
        out = [{"at": float(a), "severity": s, "message": m} for a, s, m in rows]
        out += [{"at": float(a), "severity": "warning", "message": f"dead letter from {site or '?'}: {reason}"}
                for a, site, reason in dead]
        return sorted(out, key=lambda e: -e["at"])[:limit]

    def series(self, site: str, stream: str, limit: int = 5000) -> list[tuple[float, float]]:
        """The latest ``limit`` numeric readings of a stream, oldest first, for plots."""
        rows = self.conn.execute(
            "SELECT t, v FROM (SELECT u.t, u.v FROM records r, unnest(r.ts, r.vals) AS u(t, v) "
            "WHERE r.site = %s AND r.stream = %s AND r.kind = 'raw' AND r.vals IS NOT NULL "
            "ORDER BY u.t DESC LIMIT %s) x ORDER BY t", (site, stream, limit)).fetchall()
        return [(float(t), float(v)) for t, v in rows if v is not None and math.isfinite(v)]

    def streams(self, site: str) -> list[str]:
        return [s for (s,) in self.conn.execute("SELECT DISTINCT stream FROM records WHERE site = %s ORDER BY stream",
                                                 (site,))]
