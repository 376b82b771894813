"""``edgeplane opcua``: commissioning commands.

* ``edgeplane opcua browse ENDPOINT [--depth N] [--profile-out FILE]`` prints the server's
  endpoints (with certificate thumbprints to pin) and its address space under Objects, and can
  write a device profile for the variables chosen with ``--select``;
* ``edgeplane opcua read ENDPOINT NODE...`` reads nodes given as NodeIds or browse paths.

Both talk to the server with policy None unless ``--policy``/``--mode`` with ``--cert``,
``--key`` and ``--server-thumbprint`` are given. Exit codes: 0 ok, 1 the server could not be
reached or refused, 2 bad usage.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from asyncua import Client, Node, ua

from edgeplane_opcua.addressing import NodeNotFound, PathResolver, variant_type_of
from edgeplane_opcua.config import SecurityConfig
from edgeplane_opcua.security import (
    CertificateRejected,
    apply_security,
    check_server_certificate,
    first_certificate,
    load_identity,
    server_endpoint,
    thumbprint,
)
from edgeplane_opcua.values import as_python, status_name

_POINT_TYPES = {
    ua.VariantType.Boolean: "bool", ua.VariantType.SByte: "int16", ua.VariantType.Byte: "uint16",
    ua.VariantType.Int16: "int16", ua.VariantType.UInt16: "uint16", ua.VariantType.Int32: "int32",
    ua.VariantType.UInt32: "uint32", ua.VariantType.Int64: "int64", ua.VariantType.UInt64: "uint64",
    ua.VariantType.Float: "float32", ua.VariantType.Double: "float64", ua.VariantType.String: "string",
}
_SERVER_OBJECT = ua.NodeId(ua.ObjectIds.Server)


def _connection_options(func):
    options = [
        click.option("--username", help="log in as this user (default: anonymous)"),
        click.option("--password", envvar="EDGEPLANE_OPCUA_PASSWORD", help="the user's password (or set EDGEPLANE_OPCUA_PASSWORD)"),
        click.option("--policy", type=click.Choice(["None", "Basic256Sha256"]), default="None", show_default=True),
        click.option("--mode", type=click.Choice(["None", "Sign", "SignAndEncrypt"]), default="None", show_default=True),
        click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="client certificate (DER or PEM)"),
        click.option("--key", type=click.Path(exists=True, dir_okay=False), help="client private key"),
        click.option("--server-thumbprint", help="SHA-1 thumbprint of the server certificate to trust"),
        click.option("--timeout", type=float, default=5.0, show_default=True, help="seconds per request"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


async def _open(endpoint: str, opts: dict[str, Any]) -> Client:
    client = Client(endpoint, timeout=opts["timeout"])
    if opts["policy"] != "None":
        try:
            security = SecurityConfig(policy=opts["policy"], mode=opts["mode"], certificate=opts["cert"],
                                      private_key=opts["key"], server_thumbprint=opts["server_thumbprint"])
        except ValueError as e:
            raise click.UsageError(str(e).splitlines()[-1]) from None
        identity = load_identity(security, Path.cwd())
        if identity.application_uri:
            client.application_uri = identity.application_uri
        chosen = await server_endpoint(endpoint, security, opts["timeout"])
        check_server_certificate(chosen.ServerCertificate, security, Path.cwd())
        await apply_security(client, security, identity, chosen.ServerCertificate)
    if opts["username"]:
        client.set_user(opts["username"])
        client.set_password(opts["password"] or "")
    await client.connect()
    return client


def _run(coro) -> None:
    try:
        asyncio.run(coro)
    except click.ClickException:
        raise
    except (CertificateRejected, NodeNotFound) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except (OSError, asyncio.TimeoutError, ua.UaError) as e:
        text = status_name(e.code) if isinstance(e, ua.UaStatusCodeError) else (str(e) or type(e).__name__)
        click.echo(f"error: cannot talk to the server: {text}; check the endpoint URL, that the server runs, "
                   "and the security options", err=True)
        sys.exit(1)


@click.group()
def opcua() -> None:
    """Commission OPC UA servers: browse the address space, read nodes, write a device profile."""


async def _print_endpoints(endpoint: str, timeout: float) -> None:
    probe = Client(endpoint, timeout=timeout)
    endpoints = await probe.connect_and_get_server_endpoints()
    click.echo(f"endpoints of {endpoint}:")
    for ep in endpoints:
        cert = first_certificate(ep.ServerCertificate) if ep.ServerCertificate else b""
        policy = ep.SecurityPolicyUri.rsplit("#", 1)[-1]
        tokens = ",".join(sorted({t.TokenType.name for t in ep.UserIdentityTokens or []}))
        shown = f"  server_thumbprint: {thumbprint(cert)}" if cert and policy != "None" else ""
        click.echo(f"  {policy:<16} {ep.SecurityMode.name:<15} users: {tokens}{shown}")


def _point_name(path: list[str], used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", path[-1]).strip("_") or "point"
    name, parent = base, len(path) - 2
    while name in used and parent >= 0:
        name = re.sub(r"[^A-Za-z0-9_]+", "_", path[parent]).strip("_") + "_" + name
        parent -= 1
    while name in used:
        name += "_"
    used.add(name)
    return name


async def _walk(client: Client, node: Node, path: list[str], depth: int, rows: list[dict[str, Any]], include_server: bool) -> None:
    if depth <= 0:
        return
    children = await node.get_children_descriptions()
    variables = [d for d in children if d.NodeClass == ua.NodeClass.Variable]
    values = await client.read_attributes([client.get_node(d.NodeId) for d in variables]) if variables else []
    types = await client.read_attributes([client.get_node(d.NodeId) for d in variables], ua.AttributeIds.DataType) if variables else []
    access = await client.read_attributes([client.get_node(d.NodeId) for d in variables], ua.AttributeIds.UserAccessLevel) if variables else []
    by_id = {d.NodeId: (v, t, a) for d, v, t, a in zip(variables, values, types, access)}
    for d in children:
        if d.NodeId == _SERVER_OBJECT and not include_server:
            continue
        name = f"{d.BrowseName.NamespaceIndex}:{d.BrowseName.Name}"
        row: dict[str, Any] = {"path": path + [name], "node": d.NodeId.to_string(), "class": d.NodeClass.name, "depth": len(path)}
        if d.NodeId in by_id:
            value, dtype, level = by_id[d.NodeId]
            vtype = variant_type_of(dtype.Value.Value) if dtype.Value and isinstance(dtype.Value.Value, ua.NodeId) else None
            row["type"] = vtype.name if vtype else "?"
            row["status"] = status_name(value.StatusCode)
            row["value"] = as_python(value.Value.Value) if value.Value is not None else None
            row["writable"] = bool(level.Value and isinstance(level.Value.Value, int) and level.Value.Value & 0x02)
        rows.append(row)
        if d.NodeClass == ua.NodeClass.Object:
            await _walk(client, client.get_node(d.NodeId), path + [name], depth - 1, rows, include_server)


def _show(value: Any) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= 40 else text[:37] + "..."


@opcua.command()
@click.argument("endpoint")
@click.option("--depth", type=int, default=3, show_default=True, help="how many levels below Objects to show")
@click.option("--start", "start_at", default=None, help="browse from this node (NodeId or browse path) instead of Objects")
@click.option("--include-server", is_flag=True, help="also show the standard Server object (large)")
@click.option("--profile-out", type=click.Path(dir_okay=False, path_type=Path), help="write a device profile YAML here")
@click.option("--profile-name", default=None, help="the profile's name (default: the file's stem)")
@click.option("--select", "selected", multiple=True, help="variables for the profile: glob on the browse path, e.g. '*/Machine/*' (default: all)")
@_connection_options
def browse(endpoint: str, depth: int, start_at: str | None, include_server: bool, profile_out: Path | None,
           profile_name: str | None, selected: tuple[str, ...], **opts: Any) -> None:
    """Print ENDPOINT's endpoints and address space; optionally write a device profile."""

    async def main() -> None:
        await _print_endpoints(endpoint, opts["timeout"])
        client = await _open(endpoint, opts)
        try:
            start = await PathResolver(client).node(start_at) if start_at else client.nodes.objects
            rows: list[dict[str, Any]] = []
            await _walk(client, start, [], depth, rows, include_server)
        finally:
            await client.disconnect()
        click.echo(f"address space of {endpoint} (from {start_at or 'Objects'}, depth {depth}):")
        for row in rows:
            indent = "  " * (row["depth"] + 1)
            label = row["path"][-1]
            if row["class"] == "Variable":
                rw = " rw" if row["writable"] else ""
                click.echo(f"{indent}{label}  [{row['type']}{rw}]  {row['node']}  = {_show(row['value'])}  ({row['status']})")
            else:
                click.echo(f"{indent}{label}  <{row['class']}>  {row['node']}")
        if profile_out is not None:
            chosen = [r for r in rows if r["class"] == "Variable" and
                      (not selected or any(fnmatch.fnmatch("/".join(r["path"]), pattern) for pattern in selected))]
            used: set[str] = set()
            points = {}
            for r in chosen:
                point: dict[str, Any] = {"node": r["node"], "type": _POINT_TYPES.get(getattr(ua.VariantType, r["type"], None), "auto")}
                if r["writable"]:
                    point["access"] = "rw"
                point["description"] = "/".join(r["path"])
                points[_point_name([p.split(":", 1)[-1] for p in r["path"]], used)] = point
            profile = {"profile": profile_name or profile_out.stem, "connector": "opcua",
                       "description": f"made by `edgeplane opcua browse {endpoint}`", "points": points}
            profile_out.write_text(yaml.safe_dump(profile, sort_keys=False))
            click.echo(f"wrote profile {profile['profile']!r} with {len(points)} points to {profile_out}")

    _run(main())


@opcua.command()
@click.argument("endpoint")
@click.argument("nodes", nargs=-1, required=True)
@_connection_options
def read(endpoint: str, nodes: tuple[str, ...], **opts: Any) -> None:
    """Read NODES (NodeIds such as 'ns=2;s=Temp' or browse paths such as 'Machine/Temp')."""

    async def main() -> None:
        client = await _open(endpoint, opts)
        failed = 0
        try:
            resolver = PathResolver(client)
            for text in nodes:
                try:
                    node = await resolver.node(text)
                except NodeNotFound as e:
                    click.echo(f"{text}  error: {e}")
                    failed += 1
                    continue
                value = await node.read_data_value(raise_on_bad_status=False)
                status = status_name(value.StatusCode)
                shown = _show(as_python(value.Value.Value)) if value.Value is not None and value.Value.Value is not None else "-"
                stamp = value.SourceTimestamp.isoformat() if value.SourceTimestamp else "-"
                click.echo(f"{text}  = {shown}  ({status})  source time {stamp}")
                failed += 0 if value.StatusCode is None or value.StatusCode.is_good() else 1
        finally:
            await client.disconnect()
        if failed:
            sys.exit(1)

    _run(main())
