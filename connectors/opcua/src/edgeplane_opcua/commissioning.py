"""The site console's OPC UA commissioning: browse a server (``edgeplane opcua browse``'s walk),
and turn a chosen variable into a profile point. Registered through
``edgeplane_register_console_scanners``; answers come from the network, so every walk is bounded
in depth, rows and time."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncua import ua

from edgeplane.console.commissioning import MAX_ROWS, CommissioningError, Scanner, short_value
from edgeplane_opcua.cli import _POINT_TYPES, _open, _walk

__all__ = ["SCANNER", "browse", "point_spec"]


async def browse(params: dict[str, Any]) -> dict[str, Any]:
    """The variables and objects under Objects of ``params["endpoint"]`` (``depth``: 1-6, default 3)."""
    return await opcua_browse(str(params.get("endpoint", "")), depth=int(params.get("depth", 3)))


def point_spec(row: dict[str, Any]) -> dict[str, Any]:
    """A profile point for a browsed variable: its node id and type."""
    if not isinstance(row.get("node"), str):
        raise CommissioningError(f"point {row.get('name')!r} has no OPC UA node id")
    return {"node": row["node"], "type": str(row.get("type") or "auto")}


async def opcua_browse(endpoint: str, *, depth: int = 3, timeout: float = 5.0) -> dict[str, Any]:
    """The variables and objects under Objects, as ``edgeplane opcua browse`` shows them."""
    if not endpoint.startswith("opc.tcp://"):
        raise CommissioningError(f"endpoint {endpoint!r}: write it as opc.tcp://HOST:PORT[/path]")
    depth = max(1, min(int(depth), 6))
    opts = {"timeout": timeout, "policy": "None", "mode": "None", "cert": None, "key": None,
            "server_thumbprint": None, "username": None, "password": None}

    async def walk() -> list[dict[str, Any]]:
        client = await _open(endpoint, opts)
        try:
            rows: list[dict[str, Any]] = []
            await _walk(client, client.nodes.objects, [], depth, rows, False)
            return rows
        finally:
            await client.disconnect()

    try:
        rows = await asyncio.wait_for(walk(), timeout * 4)
    except (TimeoutError, OSError, ua.UaError) as e:
        raise CommissioningError(f"cannot browse {endpoint}: {type(e).__name__}: {e or 'no answer'}; check the "
                                 "endpoint URL and that the server runs (secured servers: use `edgeplane opcua browse`)") from e
    points = []
    for row in rows[:MAX_ROWS]:
        item = {"path": "/".join(row["path"]), "node": row["node"], "class": row["class"]}
        if row["class"] == "Variable":
            item.update(type=_POINT_TYPES.get(getattr(ua.VariantType, row.get("type", "?"), None), "auto"),
                        writable=row.get("writable", False), status=row.get("status"), value=short_value(row.get("value")))
        points.append(item)
    return {"endpoint": endpoint, "connector": "opcua", "rows": points, "truncated": len(rows) > MAX_ROWS}


SCANNER = Scanner("opcua", browse, point_spec)
