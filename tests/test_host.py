"""The host: lifecycle, supervision with backoff, solutions fed from the bus, reload, health."""

from __future__ import annotations

import asyncio

import pytest

from edgeplane import Batch, Connector, HealthState, LifecycleError, Solution, SolutionConfig, hookimpl
from edgeplane.testing import wait_for, wait_for_batch

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}


def memory_site(**extra):
    site = {
        "site": {"id": "t1"},
        "devices": {"m1": {"connector": "memory", "points": {"temp": {"type": "float64", "value": 20.0},
                                                             "sp": {"type": "float64", "access": "rw", "value": 1.0}}}},
        "supervision": FAST,
    }
    site.update(extra)
    return site


async def test_memory_device_publishes_and_host_is_ready(edgeplane_host):
    async with edgeplane_host(memory_site()) as host:
        assert host.ready
        assert host.bus.latest("m1/temp")[1] == 20.0
        sub = host.bus.subscribe("m1/#")
        await host.device("m1").set("temp", 21.5)
        batch = await wait_for_batch(sub)
        assert (batch.topic, batch.values[0]) == ("m1/temp", 21.5)
        assert host.health()["device:m1"]["state"] == "ok"
    assert host.state.value == "stopped"


async def test_stopped_host_cannot_start_again(edgeplane_host):
    async with edgeplane_host(memory_site()) as host:
        pass
    with pytest.raises(LifecycleError, match="cannot start a host that is stopped"):
        await host.start()


class Flaky(Connector):
    """Fails to start twice, then runs; then crashes in run() once."""

    starts = 0
    stops = 0

    async def start(self):
        type(self).starts += 1
        if type(self).starts <= 2:
            raise ConnectionRefusedError("device not answering")

    async def run(self):
        if type(self).starts == 3:
            raise RuntimeError("lost the link")
        await super().run()

    async def stop(self):
        type(self).stops += 1


class FlakyPlugin:
    __name__ = "flaky"

    @hookimpl
    def edgeplane_register_connectors(self, register):
        register("flaky", Flaky)


async def test_supervisor_restarts_with_backoff_and_counts(edgeplane_host):
    Flaky.starts = Flaky.stops = 0
    site = {"site": {"id": "t"}, "devices": {"f": {"connector": "flaky"}}, "supervision": FAST}
    async with edgeplane_host(site, plugins=[FlakyPlugin()]) as host:
        await wait_for(lambda: Flaky.starts >= 4 and host.health()["device:f"]["state"] == "ok")
        health = host.health()["device:f"]
        assert health["restarts"] == 3
        assert Flaky.stops == 3  # stop() after each failure, before the retry
        assert host.metrics.value("edgeplane_restarts_total", part="device:f") == 3
        assert host.ready


class Collector(Solution):
    class Config(SolutionConfig):
        pattern: str = "#"

    def __init__(self, *a):
        super().__init__(*a)
        self.seen = []

    def subscriptions(self):
        return [self.config.pattern]

    async def on_batch(self, batch: Batch):
        if batch.values[0] < 0:
            raise ValueError("negative reading")
        self.seen.append(float(batch.values[0]))


class CollectorPlugin:
    __name__ = "collector"

    @hookimpl
    def edgeplane_register_solutions(self, register):
        register("collector", Collector)


async def test_a_failing_batch_is_counted_and_the_solution_goes_on(edgeplane_host):
    site = memory_site(solutions={"c": {"type": "collector", "pattern": "m1/temp"}})
    async with edgeplane_host(site, plugins=[CollectorPlugin()]) as host:
        m1 = host.device("m1")
        for v in (1.0, -1.0, 2.0):
            await m1.set("temp", v)
        solution = host.solution("c")
        await wait_for(lambda: solution.seen[-1:] == [2.0])
        assert solution.seen == [20.0, 1.0, 2.0]  # the initial value, then the good ones
        assert host.metrics.value("edgeplane_errors_total", part="solution:c", kind="on_batch") == 1
        assert host.metrics.value("edgeplane_dropped_total", part="solution:c", reason="handler_error") == 1
        assert host.health()["solution:c"]["state"] == "degraded"


async def test_reload_restarts_only_what_changed(edgeplane_host, edgeplane_site):
    site = memory_site(solutions={"c": {"type": "collector", "pattern": "m1/temp"}})
    site["devices"]["m2"] = {"connector": "memory", "points": {"x": {"value": 1.0}}}
    async with edgeplane_host(site, plugins=[CollectorPlugin()]) as host:
        m1_before, solution_before = host.device("m1"), host.solution("c")
        changed = memory_site(solutions={"c": {"type": "collector", "pattern": "m*/x"}})
        changed["devices"]["m3"] = {"connector": "memory", "points": {"x": {"value": 3.0}}}
        plan = await host.reload(edgeplane_site(changed, plugins=[CollectorPlugin()]))
        assert plan == {"added": ["device:m3"], "removed": ["device:m2"], "restarted": ["solution:c"],
                        "kept": ["device:m1"]}
        assert host.device("m1") is m1_before  # untouched: same object, never stopped
        assert host.solution("c") is not solution_before
        with pytest.raises(KeyError, match="device:m2 is not running"):
            host.device("m2")
        await wait_for(lambda: 3.0 in host.solution("c").seen)


async def test_parts_stop_in_reverse_order(edgeplane_host):
    order = []

    class Recorder(Solution):
        async def stop(self):
            order.append("solution")

    class RecorderDevice(Connector):
        async def stop(self):
            order.append("device")

    class P:
        __name__ = "rec"

        @hookimpl
        def edgeplane_register_solutions(self, register):
            register("rec", Recorder)

        @hookimpl
        def edgeplane_register_connectors(self, register):
            register("recdev", RecorderDevice)

    site = {"site": {"id": "t"}, "devices": {"d": {"connector": "recdev"}}, "solutions": {"s": {"type": "rec"}}}
    async with edgeplane_host(site, plugins=[P()]):
        pass
    assert order == ["solution", "device"]


async def test_metrics_and_health_over_http(edgeplane_host):
    import aiohttp

    async with edgeplane_host(memory_site(), http_port=0) as host:
        host_name, port = host.http_address
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host_name}:{port}/readyz") as r:
                assert r.status == 200 and (await r.json())["ready"] is True
            async with http.get(f"http://{host_name}:{port}/healthz") as r:
                body = await r.json()
                assert r.status == 200 and body["parts"]["device:m1"]["state"] == "ok"
            async with http.get(f"http://{host_name}:{port}/metrics") as r:
                text = await r.text()
                assert "edgeplane_bus_points_total" in text
                assert 'edgeplane_part_up{part="device:m1",state="ok"} 1.0' in text


async def test_readyz_waits_for_a_part_that_cannot_start(edgeplane_host):
    import aiohttp

    class Never(Connector):
        async def start(self):
            raise OSError("no route to device")

    class P:
        __name__ = "never"

        @hookimpl
        def edgeplane_register_connectors(self, register):
            register("never", Never)

    site = {"site": {"id": "t"}, "devices": {"n": {"connector": "never"}}, "supervision": FAST}
    async with edgeplane_host(site, plugins=[P()], http_port=0) as host:
        assert host.state.value == "running" and not host.ready
        _, port = host.http_address
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                assert r.status == 503 and (await r.json())["waiting"] == ["device:n"]
        assert host.health()["device:n"]["state"] in ("failed", "starting")
        assert "no route to device" in host.health()["device:n"]["detail"] or host.health()["device:n"]["restarts"] > 0


async def test_a_solution_that_cannot_start_never_stalls_the_publishers(edgeplane_host):
    class Broken(Collector):
        async def start(self):
            raise RuntimeError("model file missing")

    class P:
        __name__ = "brokensol"

        @hookimpl
        def edgeplane_register_solutions(self, register):
            register("broken", Broken)

    site = memory_site(solutions={"b": {"type": "broken", "pattern": "m1/temp", "queue_size": 10, "overflow": "block"}})
    async with edgeplane_host(site, plugins=[P()]) as host:
        m1 = host.device("m1")
        await asyncio.wait_for(asyncio.gather(*(m1.set("temp", float(i)) for i in range(100))), 5)
        await wait_for(lambda: host.metrics.value("edgeplane_dropped_total", part="solution:b", reason="solution_down") >= 90)
        assert host.solution("b").seen == []


async def test_solution_queue_policy_from_the_site_file(edgeplane_host, fake_clock):
    site = memory_site(solutions={"c": {"type": "collector", "pattern": "m1/temp", "queue_size": 7}})
    async with edgeplane_host(site, plugins=[CollectorPlugin()], clock=fake_clock) as host:
        sub = next(s for s in host.bus.subscriptions if s.name == "solution:c")
        assert sub.maxsize == 7 and sub.overflow.value == "block"  # a simulation waits, never drops
    async with edgeplane_host(site, plugins=[CollectorPlugin()]) as host:
        sub = next(s for s in host.bus.subscriptions if s.name == "solution:c")
        assert sub.overflow.value == "drop_oldest"  # live: the solution's own default


async def test_stop_does_not_hang_on_a_part_that_swallows_cancellation(edgeplane_host):
    class Stubborn(Connector):
        released = False

        async def run(self):
            while not self.released:
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    continue  # what a library racing wait_for can do

    class P:
        __name__ = "stubborn"

        @hookimpl
        def edgeplane_register_connectors(self, register):
            register("stubborn", Stubborn)

    site = {"site": {"id": "t"}, "devices": {"s": {"connector": "stubborn"}}, "supervision": {"stop_timeout": 0.2}}
    async with edgeplane_host(site, plugins=[P()]) as host:
        part = host.parts["device:s"]
    assert host.state.value == "stopped"
    assert not part.task.done()  # abandoned, not awaited forever
    part.obj.released = True  # let the test's loop end cleanly
    await asyncio.wait_for(part.task, 5)


async def test_stop_is_bounded_when_the_uplink_hangs(edgeplane_host):
    """An uplink that takes messages and never acknowledges them, and whose close never returns
    (a link gone silent): the host still stops, flushing for a bounded time."""

    class SilentUplink:
        def __init__(self, config, *, client_id, base_dir):
            self.connected = False
            self.last_error = None

        async def connect(self, on_link):
            self.connected = True
            on_link(True)

        async def publish(self, topic, payload, *, retain=False):
            await asyncio.Event().wait()  # no acknowledgement, ever

        async def subscribe(self, topic, handler):
            pass

        async def close(self):
            await asyncio.Event().wait()  # a close that hangs (a library stuck on a dead socket)

    class P:
        __name__ = "silent-uplink"

        @hookimpl
        def edgeplane_register_transports(self, register):
            register("silent", SilentUplink)

    site = memory_site(sync={"uplink": {"url": "mqtt://127.0.0.1:9", "transport": "silent"},
                             "policy": [{"topics": "m1/#", "priority": "low"}]})
    host_cm = edgeplane_host(site, plugins=[P()])
    host = await host_cm.__aenter__()
    await host.bus.publish(Batch.of("m1/temp", [1.0], [2.0]))
    await asyncio.wait_for(host_cm.__aexit__(None, None, None), 60)  # before: waited for ever
    assert host.state.value == "stopped"
