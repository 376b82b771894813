"""Plant model, limit sharing, features and the diagnosis logic, without servers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from edgeplane_modbus.simulator import SunSpecInverterSimulator
from edgeplane_solar import features
from edgeplane_solar.diagnosis import DiagnosisConfig, InverterDiagnoser, Snapshot
from edgeplane_solar.dispatch import share
from edgeplane_solar.plant import PlantConfig, PlantModel
from edgeplane_solar.sites import plant_config

PLANT = PlantConfig.model_validate(plant_config(["inv1", "inv2", "inv3"]))


def test_expected_power_matches_the_simulated_inverter():
    model = PlantModel(PLANT)
    sim = SunSpecInverterSimulator(rating_w=10_000, irradiance=650.0, interval=None)
    sim.update(0.0)
    expected = model.ac_from_poa("inv1", np.array([650.0]), 40.0, "module")[0]
    assert expected == pytest.approx(sim.get("103.W"), rel=0.002)
    # and clipping at the AC rating
    assert model.ac_from_poa("inv1", np.array([1100.0]))[0] == 10_000


def test_pvwatts_temperature_and_ghi_transposition():
    cfg = plant_config(["a"])
    cfg["inverters"]["a"].update(gamma_pdc=-0.004, dc_losses=0.1)
    model = PlantModel(PlantConfig.model_validate(cfg))
    hot, cool = model.ac_from_poa("a", np.array([800.0, 800.0]), np.array([60.0, 25.0]), "cell")
    assert hot == pytest.approx(cool * (1 - 0.004 * 35), rel=1e-6)
    noon = pd.DatetimeIndex([pd.Timestamp("2021-06-10 17:00", tz="UTC")])
    poa = model.poa_from_ghi("a", noon, np.array([900.0]))
    assert 850 < poa[0] < 1000  # a 25-degree south-facing plane at solar noon in June sees about GHI


def test_clear_sky_power_follows_the_sun():
    model = PlantModel(PLANT)
    times = pd.DatetimeIndex(pd.to_datetime(["2021-06-10 04:00", "2021-06-10 17:00"], utc=True))
    night, noon = model.clearsky_ac(times)
    assert night == 0 and 24_000 < noon <= 30_000


def test_plant_config_errors_name_the_field():
    bad = plant_config(["inv1"])
    bad["inverters"]["inv1"]["tilt"] = 120
    with pytest.raises(ValidationError, match="tilt"):
        PlantConfig.model_validate(bad)
    bad = plant_config(["inv1"])
    bad["weather"] = {"module_temp": "met/t"}
    with pytest.raises(ValidationError, match="irradiance topic"):
        PlantConfig.model_validate(bad)


def test_share_in_proportion_to_available_power():
    rating = {"a": 10_000.0, "b": 10_000.0, "c": 5_000.0}
    pct = share(10_000, {"a": 8_000, "b": 4_000, "c": 4_000}, rating)
    watts = {k: pct[k] / 100 * rating[k] for k in pct}
    assert sum(watts.values()) == pytest.approx(10_000, rel=0.002)
    assert watts["a"] == pytest.approx(2 * watts["b"], rel=0.01)
    assert share(20_000, {"a": 8_000, "b": 4_000, "c": 4_000}, rating) == {"a": 100.0, "b": 100.0, "c": 100.0}
    tripped = share(10_000, {"a": 8_000, "b": 0.0, "c": 4_000}, rating)
    assert tripped["b"] == 0 and sum(tripped[k] / 100 * rating[k] for k in rating) == pytest.approx(10_000, rel=0.002)


def test_features_use_no_earlier_rows_than_their_own():
    """Row i of the features depends on rows <= i only (the full property test is test_known_at_issue_time.py)."""
    times = pd.date_range("2021-06-10", periods=20, freq="15min", tz="UTC")
    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 0.8, 20)
    cs = np.full(20, 0.9)
    future = np.full((20, features.HORIZONS), 0.9)
    a = features.build(times, p, cs, future, np.full(20, 0.5), None, None, -80)
    p2 = p.copy()
    p2[10:] = 0.0  # change everything from step 10 on
    b = features.build(times, p2, cs, future, np.full(20, 0.5), None, None, -80)
    assert np.array_equal(a.x[:10], b.x[:10]) and not np.array_equal(a.x[10:], b.x[10:])
    assert features.N_FEATURES == a.x.shape[1]
    assert features.horizon_steps("1h") == 4
    with pytest.raises(ValueError, match="multiples of 15min"):
        features.horizon_steps("20min")


def _snapshot(sim: SunSpecInverterSimulator, poa: float, ts: float) -> Snapshot:
    return Snapshot(ts=ts, power_w=float(sim.get("103.W")), status=sim.get("103.St"), events=sim.get("103.Evt1"),
                    limit_enabled=sim.get("123.WMaxLim_Ena") == 1, limit_pct=sim.get("123.WMaxLimPct") / 10,
                    string_currents=[sim.get(f"160.module.{n}.DCA") / 100 for n in (1, 2)], poa=poa,
                    module_temp=40.0, dc_power_w=float(sim.get("103.DCW")))


def _diagnoser(name: str = "inv1") -> InverterDiagnoser:
    model = PlantModel(PLANT)
    cfg = DiagnosisConfig.model_validate({"type": "solar.diagnosis", "plant": plant_config(["inv1", "inv2", "inv3"])})
    return InverterDiagnoser(name, 10_000, 2, lambda poa, t: model.ac_from_poa(name, np.array([poa]), t, "module")[0], cfg)


def test_no_false_alert_over_a_clean_cloudy_week(tmy):
    """A week of real TMY3 weather with broken clouds (2021-05-22..29 of the typical year), 5-min polls."""
    start = pd.Timestamp("2021-05-22", tz="UTC").timestamp()
    sims = {n: SunSpecInverterSimulator(rating_w=10_000, irradiance=lambda t: tmy.at(t)["poa"], interval=None)
            for n in ("inv1", "inv2", "inv3")}
    diags = {n: _diagnoser(n) for n in sims}
    alerts, judged, daily = [], 0, {}
    for step in range(7 * 24 * 12):
        t = start + step * 300
        poa = tmy.at(t - 2)["poa"]  # the station is read a moment apart from the inverters
        for name, sim in sims.items():
            sim.update(t)
            alerts += diags[name].observe(_snapshot(sim, poa, t))
            judged += diags[name].last["state"] == "ok"
        daily[step // 288] = daily.get(step // 288, 0.0) + sims["inv1"].get("103.W") * 300 / 3.6e6
    assert not alerts, alerts[:3]
    assert judged > 3 * 7 * 60  # hours of daylight were really judged
    energies = sorted(daily.values())
    assert energies[0] < 0.6 * energies[-1], f"the week must hold cloudy days: {energies}"


def test_faults_from_the_simulator_raise_the_right_alert_once():
    sim = SunSpecInverterSimulator(rating_w=10_000, irradiance=800.0, interval=None)
    diag = _diagnoser()
    for i in range(3):
        sim.update(i)
        assert diag.observe(_snapshot(sim, 800.0, i)) == []
    sim.lose_string(1)
    raised = [a for i in range(3, 6) for a in diag.observe(_snapshot(sim, 800.0, i))]
    assert [(a.fault, a.active) for a in raised] == [("lost_string", True)]
    assert raised[0].evidence["lost_string"] == 1 and raised[0].evidence["string_currents_a"][0] == 0


def test_curtailment_and_nameplate_clipping_are_not_faults():
    sim = SunSpecInverterSimulator(rating_w=10_000, irradiance=800.0, interval=None)
    diag = _diagnoser()
    sim.put("123.WMaxLimPct", 300)
    sim.put("123.WMaxLim_Ena", 1)
    for i in range(5):
        sim.update(i)
        assert diag.observe(_snapshot(sim, 800.0, i)) == []
    assert diag.last["state"] == "curtailed"
    bright = SunSpecInverterSimulator(rating_w=10_000, irradiance=1050.0, interval=None)
    diag = _diagnoser()
    for i in range(5):
        bright.update(i)
        assert diag.observe(_snapshot(bright, 1050.0, i)) == []
    assert diag.last["state"] == "clipping"


def test_slow_performance_drift_raises_soiling():
    sim = SunSpecInverterSimulator(rating_w=10_000, irradiance=800.0, interval=None)
    diag = _diagnoser()
    diag.config = diag.config.model_copy(update={"soiling_samples": 50})
    sim.update(0)
    healthy = _snapshot(sim, 800.0, 0)
    raised = []
    for i in range(200):  # output sinks to 88 % of expected: too little for 'derating', enough for 'soiling'
        s = Snapshot(**{**healthy.__dict__, "ts": i, "power_w": healthy.power_w * 0.88, "dc_power_w": healthy.dc_power_w + i})
        raised += diag.observe(s)
    assert [a.fault for a in raised] == ["soiling"]


def test_site_errors_name_the_solution_and_the_fix(edgeplane_site):
    from edgeplane.errors import SiteError

    from edgeplane_modbus import plugin as modbus_plugin
    from edgeplane_solar import plugin as solar_plugin
    from edgeplane_solar.sites import plant_site

    site = plant_site({"station": 1, "inv1": 2}, forecast=False)
    del site["solutions"]["diagnosis"]["plant"]["weather"]
    site["solutions"]["dispatch"]["ramp_pct_per_min"] = -5
    with pytest.raises(SiteError) as e:
        edgeplane_site(site, plugins=[modbus_plugin, solar_plugin])
    text = str(e.value)
    assert "solutions.diagnosis" in text and "set plant.weather.poa" in text
    assert "solutions.dispatch.ramp_pct_per_min" in text
