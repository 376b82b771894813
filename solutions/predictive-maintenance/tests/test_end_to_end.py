"""The whole vertical over OPC UA: line simulator -> opcua connector -> pdm solution -> inference -> alerts."""

from __future__ import annotations

import asyncio

from edgeplane import Event
from edgeplane.testing import wait_for

from edgeplane_pdm.testing import line_server, line_site


async def next_event(subscription, kind: str, timeout: float) -> Event:
    async def get() -> Event:
        while True:
            message = await subscription.get()
            if isinstance(message, Event) and message.kind == kind:
                return message

    return await asyncio.wait_for(get(), timeout)


def solution_classes(host) -> set[str]:
    return {"Normal", "B007", "B014", "B021", "IR007", "IR014", "IR021", "OR007@6", "OR014@6", "OR021@6"}


async def test_degrading_machine_raises_one_explained_alert(edgeplane_host, plugins):
    async with line_server(2, degrade_after=5.0, degrade_over=6.0) as url:
        async with edgeplane_host(line_site(url, 2), plugins=plugins) as host:
            alerts = host.bus.subscribe("alerts/#", name="test-alerts")
            health = host.bus.subscribe("pdm/+/health", name="test-health")
            solution = host.solution("pdm")
            event = await next_event(alerts, "alert", timeout=120)
            # the degrading machine is the last one; the healthy one stays quiet
            assert event.data["machine"] == "m2"
            assert event.topic == "alerts/pdm/m2"
            assert event.severity in ("warning", "critical")
            evidence = event.data["evidence"]
            assert evidence["fault_frequency"]["name"] == "BPFO"
            assert abs(evidence["fault_frequency"]["hz"] - 107.3) < 1.0
            assert evidence["fault_frequency"]["envelope_db"] > evidence["fault_frequency"]["baseline_db"] + 3
            assert evidence["features"] and {"feature", "z", "value", "baseline"} <= set(evidence["features"][0])
            # at onset the fault is faint and mixed with healthy vibration: the classifier gives its call, right or not
            assert evidence["classifier"]["class"] in solution_classes(host)
            assert 0 < evidence["classifier"]["probability"] <= 1
            status = solution.status()
            assert status["m2"]["health"] < status["m1"]["health"]
            assert status["m1"]["alert"] is None
            # de-duplication: no second 'alert' for m2 while it is open (escalation is a different kind)
            seen = solution.machines["m2"].windows
            await wait_for(lambda: solution.machines["m2"].windows >= seen + 8, timeout=60)
            assert solution.machines["m2"].alert.raised == 1
            assert solution.machines["m2"].alert.active
            batch = await asyncio.wait_for(health.get(), 10)
            assert 0 <= float(batch.values[0]) <= 100
            assert solution.bytes_read > 0
