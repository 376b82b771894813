"""The overview page's data: parts, links, sync, models, config: read from the running host."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from edgeplane.components import Connector, PartKey

if TYPE_CHECKING:
    from edgeplane.console.live import LiveData
    from edgeplane.host import Host

__all__ = ["devices", "overview"]

_PRIORITIES = ("high", "normal", "low")


def overview(host: Host, live: LiveData) -> dict[str, Any]:
    parts = []
    for key, part in host.parts.items():
        health = part.health.as_dict()
        parts.append({"key": str(key), "kind": key.kind, "name": key.name, **health})
    links = [{"device": p["name"], "connector": getattr(host.site.devices.get(p["name"]), "connector", "?"),
              "state": "up" if p["state"] in ("ok", "degraded") else "down", "detail": p["detail"]}
             for p in parts if p["kind"] == "device"]
    return {
        "site": {"id": host.site.id, "name": host.site.core.site.name, "timezone": host.site.core.site.timezone,
                 "state": host.state.value, "ready": host.ready,
                 "uptime_s": None if host.started_at is None else time.monotonic() - host.started_at},
        "parts": parts,
        "links": links,
        "sync": _sync(host, live),
        "inference": _inference(host),
        "config": _config(host),
    }


def _sync(host: Host, live: LiveData) -> dict[str, Any] | None:
    sync = host.sync
    if sync is None:
        return None
    status = sync.status()
    backlog = {p: int(host.metrics.value("edgeplane_sync_backlog_readings", priority=p)) for p in _PRIORITIES}
    return {"link": status["link"], "url": status["url"], "last_error": status["last_error"],
            "backlog_readings": backlog, "outbox_bytes": status["outbox_bytes"], "quota_bytes": status["quota"],
            "envelopes_sent": status["envelopes_sent"], "last_ack": live.last_ack}


def _inference(host: Host) -> dict[str, Any] | None:
    service = host.inference
    if service is None:
        return None
    models = [{"name": name, "version": model.version, "providers": list(getattr(model, "providers", [])),
               "trust": getattr(model, "trust", None)} for name, model in sorted(service.loaded().items())]
    return {"providers": service.providers, "models": models}


def _config(host: Host) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(host.local_site, sort_keys=True, default=str).encode()).hexdigest()[:12]
    cloud = None
    if host.sync is not None:
        state = host.sync.downlink.twin.get("config") or {}
        if state:
            cloud = {"revision": state.get("revision"), "id": state.get("applied") or state.get("desired"),
                     "status": state.get("status"), "error": state.get("error")}
    from_cloud = bool(cloud and cloud.get("status") == "applied")
    return {"source": host.site.source, "local_digest": digest, "from_cloud": from_cloud,
            "revision": cloud.get("revision") if from_cloud and cloud else None, "cloud": cloud}


def devices(host: Host) -> list[dict[str, Any]]:
    """Every device with its points: unit, access, limits (its own and the site's patterns)."""
    out = []
    for name, config in host.site.devices.items():
        part = host.parts.get(PartKey.device(name))
        connector = part.obj if part is not None and part.obj is not None else None
        # a running connector may know more points than its entry (SunSpec discovery): show those
        points = connector.point_specs() if isinstance(connector, Connector) else config.points
        rows = []
        for point, spec in points.items():
            limits = host.commands.limits_for(name, point, spec)
            merged: dict[str, Any] = {}
            for lim in limits:
                for key in ("min", "max", "max_rate", "allowed"):
                    value = getattr(lim, key)
                    if value is not None:
                        merged[key] = value
            rows.append({"point": point, "topic": f"{name}/{point}", "type": spec.type, "unit": spec.unit,
                         "access": spec.access, "writable": spec.writable, "limits": merged,
                         "description": spec.description})
        out.append({"device": name, "connector": config.connector,
                    "state": part.health.state.value if part is not None else "stopped", "points": rows})
    return out
