"""Dispatch that fails safe: a real ``edgeplane run`` curtails the simulated plant, is killed with
SIGKILL mid-curtailment, and every inverter returns to full power on its own revert timer.

inv1 and inv2 are legacy SunSpec inverters (123 controls), inv3 an IEEE 1547-2018 DER (701-704):
the dispatch drives each through the path its scan found.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import yaml

from edgeplane.testing import wait_for

from edgeplane_solar.sites import plant_site
from edgeplane_solar.testing import running_plant

REVERT_S = 3


async def test_killed_host_leaves_no_plant_curtailed(tmp_path):
    async with running_plant(families={"inv3": "der"}) as (plant, ports):
        inverters = plant.inverters
        site = plant_site(ports, forecast=False, interval="300ms")
        del site["solutions"]["diagnosis"]
        site["devices"]["inv3"]["sunspec"]["models"] = [1, 701, 702, 704, 160]
        site["devices"]["plant"]["points"]["limit_pct"]["value"] = 50  # curtail from the start
        site["solutions"]["dispatch"]["revert_after"] = f"{REVERT_S}s"
        site["limits"]["inv*/704.WMaxLimPct"] = {"min": 0, "max": 100}
        site["store"] = {"path": str(tmp_path / "store")}
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump(site))
        host = subprocess.Popen([sys.executable, "-m", "edgeplane.cli", "run", str(path)], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def curtailed() -> bool:
                legacy = all(inverters[n].get("123.WMaxLim_Ena") == 1 for n in ("inv1", "inv2"))
                return legacy and inverters["inv3"].get("704.WMaxLimPctEna") == 1

            await wait_for(curtailed, timeout=30, interval=0.1)
            # each path got its own fail-safe points, and nothing of the other path
            assert inverters["inv1"].get("123.WMaxLimPct_RvrtTms") == REVERT_S
            assert inverters["inv3"].get("704.WMaxLimPctRvrtTms") == REVERT_S
            assert inverters["inv3"].get("704.WMaxLimPctRvrt") == 1000  # back to 100 %
            assert not any(name.startswith("123.") for name, _ in inverters["inv3"].writes)
            assert not any(name.startswith("704.") for name, _ in inverters["inv1"].writes)
            await asyncio.sleep(2 * REVERT_S)  # longer than the timer: the host renews it, nothing reverts
            assert curtailed() and not any(sim.reverts for sim in inverters.values())
            output = sum(sim.get("103.W") or sim.get("701.W") for sim in inverters.values())
            assert output <= 1.02 * 15_000  # 50 % of 30 kW, where the plant would make 25.6 kW at 800 W/m2
        finally:
            host.send_signal(signal.SIGKILL)
            host.wait(10)
        killed = time.monotonic()  # the inverters' timer clock; every renewal was written before this

        await wait_for(lambda: all(sim.reverts for sim in inverters.values()), timeout=REVERT_S + 3, interval=0.05)
        for name, sim in inverters.items():
            control, at = sim.reverts[0]
            assert control == ("704.limit" if name == "inv3" else "123.limit")
            assert killed <= at <= killed + REVERT_S + 0.5  # on its own timer, no later
        assert all(inverters[n].get("123.WMaxLim_Ena") == 0 for n in ("inv1", "inv2"))
        assert inverters["inv3"].get("704.WMaxLimPctEna") == 0
        await asyncio.sleep(0.3)
        output = sum(sim.get("103.W") or sim.get("701.W") for sim in inverters.values())
        assert output > 0.98 * 3 * 10_000 * 1.1 * 0.8 * 0.97  # every inverter at full power again
