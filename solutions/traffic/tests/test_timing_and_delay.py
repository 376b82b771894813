"""Every controller runs under the same clearances; delay counts every vehicle due; demand is generated."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from edgeplane_traffic.demand import check_route_window, demand_seed, generate_demand, route_departures
from edgeplane_traffic.evaluate import CONTROLLERS, run_episode, tripinfo_delays
from edgeplane_traffic.layout import layout_from_net
from edgeplane_traffic.models import shipped_policy
from edgeplane_traffic.nets import resolve
from edgeplane_traffic.programs import webster_plan
from edgeplane_traffic.shield import ShieldConfig


def clearance_runs(states: list[str]) -> dict[str, set[int]]:
    """Lengths (s) of every complete yellow and all-red interval in a per-second signal record."""
    runs: list[tuple[str, int]] = []
    for state in states:
        kind = "yellow" if "y" in state else "all-red" if set(state) <= set("rs") else "green"
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    found: dict[str, set[int]] = {"yellow": set(), "all-red": set()}
    for kind, length in runs[1:-1]:  # the first and last may be cut by the run's ends
        if kind in found:
            found[kind].add(length)
    return found


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_every_controller_gets_the_same_clearances_on_a_resco_net(controller: str) -> None:
    spec = resolve("cologne1", seconds=420)
    result = run_episode(spec, controller, seed=3, model=shipped_policy("cologne1"), warmup=150, record_states=True)
    # RESCO's own program has 3 s yellows and no all-red: every controller now shows 3 s + 2 s
    assert clearance_runs(result.states) == {"yellow": {3}, "all-red": {2}}, controller
    assert result.due > 50  # the run starts at the net's real begin time (07:00), where its demand is


def test_the_clearances_follow_the_configured_timing() -> None:
    spec = resolve("single-intersection", seconds=300)
    for controller in ("fixed", "max-pressure"):
        result = run_episode(spec, controller, seed=1, timing=ShieldConfig(yellow=4, all_red=1, min_green=8, max_green=40),
                             record_states=True)
        assert clearance_runs(result.states) == {"yellow": {4}, "all-red": {1}}, controller


def test_delay_counts_vehicles_waiting_to_enter_and_skips_those_not_yet_due(tmp_path: Path) -> None:
    tripinfo = tmp_path / "tripinfo.xml"
    tripinfo.write_text("""<tripinfos>
      <tripinfo id="a" depart="10" departDelay="2" arrival="50" timeLoss="8" vType="car"/>
      <tripinfo id="b" depart="20" departDelay="0" arrival="-1" timeLoss="30" vType="car"/>
      <tripinfo id="c" depart="-1" departDelay="40" arrival="-1" timeLoss="0" vType="car"/>
      <tripinfo id="d" depart="-1" departDelay="-5" arrival="-1" timeLoss="0" vType="car"/>
      <tripinfo id="incident" depart="30" departDelay="0" arrival="-1" timeLoss="600" vType="edgeplane-incident"/>
    </tripinfos>""")
    stats = tripinfo_delays(tripinfo)
    assert sorted(stats.delays) == [10.0, 30.0, 40.0] and stats.arrived == 1 and stats.undeparted == 1


def test_an_oversaturated_run_reports_the_vehicles_that_never_entered(tmp_path: Path) -> None:
    spec = resolve("single-intersection", seconds=300)
    heavy = tmp_path / "heavy.rou.xml"
    heavy.write_text(spec.route.read_text().replace('probability="0.2"', 'probability="0.6"').replace('probability="0.5"', 'probability="0.9"'))
    result = run_episode(replace(spec, route=heavy), "fixed", seed=2)
    assert result.undeparted > 20
    assert result.due >= result.throughput + result.undeparted
    assert result.avg_delay_s > 0


def test_a_route_outside_the_run_window_is_a_clear_error(tmp_path: Path) -> None:
    spec = resolve("cologne1")
    with pytest.raises(ValueError, match=r"outside the run 0\.\.3600 s"):
        check_route_window(spec.route, 0, 3600)  # RESCO's cologne1 departs from 25200 (07:00)
    check_route_window(spec.route, spec.begin, spec.begin + 3600)


def test_webster_cycle_and_splits() -> None:
    layout = layout_from_net(resolve("single-intersection").net)
    ns = [lane for lane in layout.lanes if lane.startswith(("n_", "s_"))]
    flows = {lane: (400.0 if lane in ns else 900.0) for lane in layout.lanes}
    timing = ShieldConfig(yellow=3, all_red=2, min_green=5, max_green=60)
    plan = webster_plan(layout, flows, timing)
    ratios = sorted(plan.critical_ratios)
    assert ratios == pytest.approx([400 / 1800, 900 / 1800])
    cycle = (1.5 * 10 + 5) / (1 - sum(ratios))  # lost time: 2 greens x (3 + 2) s
    assert plan.cycle_s == pytest.approx(cycle, abs=0.1)
    assert sum(plan.greens_s) == pytest.approx(cycle - 10, abs=0.2)
    assert max(plan.greens_s) / min(plan.greens_s) == pytest.approx(900 / 400, rel=0.01)


def test_generated_demand_is_reproducible_split_apart_and_inside_the_window(tmp_path: Path) -> None:
    spec = resolve("cologne1")
    lanes = layout_from_net(spec.net).lanes
    patterns = []
    for split, index in (("train", 0), ("train", 0), ("validation", 0), ("evaluation", 0)):
        out = tmp_path / f"{split}-{index}-{len(patterns)}.rou.xml"
        patterns.append((generate_demand(spec.net, spec.route, out, begin=spec.begin, seconds=1800,
                                         seed=demand_seed(split, index), signal_lanes=lanes), out))  # type: ignore[arg-type]
    texts = [out.read_text() for _, out in patterns]
    assert texts[0] == texts[1] and len({texts[1], texts[2], texts[3]}) == 3
    for pattern, out in patterns:
        first, last, count = route_departures(out)
        assert spec.begin <= first and last < spec.begin + 1800 and count == pattern.vehicles + (1 if pattern.incident else 0)
    # over a few patterns: surges and incidents both occur, turning ratios vary
    features = [generate_demand(spec.net, spec.route, tmp_path / f"x{i}.rou.xml", begin=spec.begin, seconds=1800,
                                seed=demand_seed("train", i), signal_lanes=lanes) for i in range(8)]
    assert any(p.surge for p in features) and any(p.incident for p in features)
    assert len({p.level for p in features}) == 8
    incident = next(p for p in features if p.incident)
    root = ET.parse(tmp_path / f"x{features.index(incident)}.rou.xml").getroot()
    stalled = root.find("vehicle[@id='incident']")
    assert stalled is not None and stalled.find("stop").get("lane") == incident.incident["lane"]
    with pytest.raises(ValueError, match="demand split"):
        demand_seed("test", 0)  # type: ignore[arg-type]


def test_webster_from_given_counts_runs_its_plan_from_the_start() -> None:
    spec = resolve("single-intersection", seconds=300)
    layout = layout_from_net(spec.net)
    counts = {lane: (300.0 if lane.startswith(("n_", "s_")) else 800.0) for lane in layout.lanes}
    result = run_episode(spec, "webster", seed=1, counts=counts, record_states=True)
    plan = result.plans["t"]
    assert plan["from"] == "given counts"
    expected = webster_plan(layout, counts, ShieldConfig())
    assert plan["greens_s"] == expected.greens_s
    # the green shown first lasts the plan's first green (rounded to whole seconds by the 1 s step)
    first = next(k for k, state in enumerate(result.states) if "y" in state)
    assert abs(first - expected.greens_s[0]) <= 1


def test_the_demand_command_writes_a_pattern_and_rejects_a_bad_index(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from edgeplane.cli import main as edgeplane_cli

    out = tmp_path / "eval.rou.xml"
    done = CliRunner().invoke(edgeplane_cli, ["traffic", "demand", "--net", "cologne1", "--split", "evaluation", "--index", "3",
                                              "--out", str(out), "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output.strip().splitlines()[-1])
    assert summary["seed"] == 2_000_003 and summary["begin"] == 25200 and out.is_file()
    assert route_departures(out)[2] == summary["vehicles"] + (1 if summary["incident"] else 0)
    bad = CliRunner().invoke(edgeplane_cli, ["traffic", "demand", "--net", "cologne1", "--index", "-1", "--out", str(out)])
    assert bad.exit_code == 2 and "--index" in bad.output
