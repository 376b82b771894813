"""A simulated machine on a real OPC UA server (asyncua), for tests, benchmarks and demos.

``python -m edgeplane_opcua.simulator --port 4840`` serves, under ``Objects/Machine``
(namespace ``urn:edgeplane:sim``, string NodeIds ``ns=2;s=Machine.<Name>``):

* ``Temperature`` (Double, changes every ``--period``), ``Speed`` (Int32), ``Running`` (Boolean),
  ``Name`` (String), ``Counter`` (UInt32, +1 per period);
* ``Setpoint`` (Double) and ``Mode`` (UInt16), writable;
* ``Vibration`` (Double[``--window``]), a waveform window that changes every period;
* ``Broken`` (status BadSensorFailure) and ``Drifting`` (status UncertainLastUsableValue);
* method ``Scale(value: Double, factor: Double) -> Double`` on ``Machine``;
* with ``--items N``, a folder ``Bench`` of ``N`` Doubles (``ns=2;s=Bench.<i>``) all changed
  every period (the benchmark's load).

With ``--cert``/``--key`` the server also offers Basic256Sha256 Sign and SignAndEncrypt; with
``--user NAME:PASSWORD`` that user may log in (anonymous stays allowed unless
``--no-anonymous``). It prints ``READY <port>`` on stdout when it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import math
import sys
import time

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole

NAMESPACE = "urn:edgeplane:sim"


class _Users:
    def __init__(self, users: dict[str, str], anonymous: bool):
        self.users = users
        self.anonymous = anonymous

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username is None:
            return User(role=UserRole.User) if self.anonymous else None
        if self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


async def build(port: int, *, cert: str | None = None, key: str | None = None, users: dict[str, str] | None = None,
                anonymous: bool = True, window: int = 256, items: int = 0) -> tuple[Server, dict[str, object]]:
    """Make (not start) the server and its nodes; returns the server and its nodes by name."""
    server = Server(user_manager=_Users(users or {}, anonymous))
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/edgeplane/sim/")
    server.set_server_name("edgeplane simulated machine")
    policies = [ua.SecurityPolicyType.NoSecurity]
    if cert and key:
        await server.load_certificate(cert)
        await server.load_private_key(key)
        policies += [ua.SecurityPolicyType.Basic256Sha256_Sign, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
    server.set_security_policy(policies)
    tokens = [ua.UserNameIdentityToken] + ([ua.AnonymousIdentityToken] if anonymous else [])
    server.set_identity_tokens(tokens)
    idx = await server.register_namespace(NAMESPACE)
    machine = await server.nodes.objects.add_object(ua.NodeId("Machine", idx), ua.QualifiedName("Machine", idx))

    async def var(name: str, value, vtype: ua.VariantType, writable: bool = False):
        node = await machine.add_variable(ua.NodeId(f"Machine.{name}", idx), ua.QualifiedName(name, idx),
                                          ua.Variant(value, vtype))
        if writable:
            await node.set_writable()
        return node

    nodes: dict[str, object] = {
        "Temperature": await var("Temperature", 20.0, ua.VariantType.Double),
        "Speed": await var("Speed", 1500, ua.VariantType.Int32),
        "Running": await var("Running", True, ua.VariantType.Boolean),
        "Name": await var("Name", "press-7", ua.VariantType.String),
        "Counter": await var("Counter", 0, ua.VariantType.UInt32),
        "Setpoint": await var("Setpoint", 50.0, ua.VariantType.Double, writable=True),
        "Mode": await var("Mode", 1, ua.VariantType.UInt16, writable=True),
        "Vibration": await var("Vibration", [0.0] * window, ua.VariantType.Double),
        "Broken": await var("Broken", 0.0, ua.VariantType.Double),
        "Drifting": await var("Drifting", 1.0, ua.VariantType.Double),
    }
    await nodes["Vibration"].write_value_rank(1)  # type: ignore[attr-defined]
    await nodes["Broken"].write_value(ua.DataValue(ua.Variant(0.0, ua.VariantType.Double),  # type: ignore[attr-defined]
                                                   StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)))
    await nodes["Drifting"].write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double),  # type: ignore[attr-defined]
                                                     StatusCode=ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)))

    async def scale(parent, value, factor):
        return [ua.Variant(value.Value * factor.Value, ua.VariantType.Double)]

    def argument(name: str) -> ua.Argument:
        arg = ua.Argument()
        arg.Name = name
        arg.DataType = ua.NodeId(ua.ObjectIds.Double)
        arg.ValueRank = -1
        return arg

    nodes["Scale"] = await machine.add_method(ua.NodeId("Machine.Scale", idx), ua.QualifiedName("Scale", idx), scale,
                                              [argument("value"), argument("factor")], [argument("result")])
    if items:
        bench = await server.nodes.objects.add_folder(ua.NodeId("Bench", idx), ua.QualifiedName("Bench", idx))
        nodes["bench"] = [
            await bench.add_variable(ua.NodeId(f"Bench.{i}", idx), ua.QualifiedName(f"V{i}", idx), ua.Variant(0.0, ua.VariantType.Double))
            for i in range(items)
        ]
    return server, nodes


async def animate(server: Server, nodes: dict[str, object], period: float, window: int) -> None:
    """Change the values every ``period`` seconds, as a running machine would."""
    step = 0
    bench = nodes.get("bench") or []
    names = [n.nodeid for n in bench]  # type: ignore[attr-defined]
    temperature = nodes["Temperature"].nodeid  # type: ignore[attr-defined]
    counter = nodes["Counter"].nodeid  # type: ignore[attr-defined]
    vibration = nodes["Vibration"].nodeid  # type: ignore[attr-defined]
    def value(v, vtype: ua.VariantType, now: dt.datetime) -> ua.DataValue:
        return ua.DataValue(ua.Variant(v, vtype), SourceTimestamp=now, ServerTimestamp=now)

    while True:
        step += 1
        now = dt.datetime.now(dt.timezone.utc)
        await server.write_attribute_value(temperature, value(20.0 + 5 * math.sin(step / 10), ua.VariantType.Double, now))
        await server.write_attribute_value(counter, value(step, ua.VariantType.UInt32, now))
        wave = [math.sin(2 * math.pi * 50 * (i / 1000.0) + step) for i in range(window)]
        await server.write_attribute_value(vibration, value(wave, ua.VariantType.Double, now))
        for i, nodeid in enumerate(names):
            await server.write_attribute_value(nodeid, value(float(step * 1000 + i), ua.VariantType.Double, now))
        await asyncio.sleep(period)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4840)
    parser.add_argument("--cert", help="server certificate (DER or PEM): enables Basic256Sha256")
    parser.add_argument("--key", help="server private key (PEM)")
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD of a user who may log in")
    parser.add_argument("--no-anonymous", action="store_true")
    parser.add_argument("--period", type=float, default=0.05, help="seconds between value changes")
    parser.add_argument("--window", type=int, default=256, help="samples in the Vibration array")
    parser.add_argument("--items", type=int, default=0, help="extra Bench variables, all changed every period")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    users = dict(u.split(":", 1) for u in args.user)
    server, nodes = await build(args.port, cert=args.cert, key=args.key, users=users, anonymous=not args.no_anonymous,
                                window=args.window, items=args.items)
    async with server:
        print(f"READY {args.port}", flush=True)
        started = time.monotonic()
        try:
            await animate(server, nodes, args.period, args.window)
        finally:
            print(f"ran {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
