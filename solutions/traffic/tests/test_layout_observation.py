"""The layout and observation are sumo-rl's: what the policy saw in training is what it sees live."""

from __future__ import annotations

import numpy as np
import pytest

from edgeplane_traffic.layout import IntersectionLayout, layout_from_net, point_name
from edgeplane_traffic.nets import resolve
from edgeplane_traffic.observation import build_observation, make_layout_observation
from edgeplane_traffic.sumo_runtime import ensure_sumo_home


@pytest.mark.parametrize("net", ["single-intersection", "cologne1", "ingolstadt1"])
def test_layout_and_observation_match_sumo_rl(net: str) -> None:
    ensure_sumo_home()
    import sumo_rl

    spec = resolve(net)
    layout = layout_from_net(spec.net)
    env = sumo_rl.SumoEnvironment(net_file=str(spec.net), route_file=str(spec.route), single_agent=True,
                                  begin_time=spec.begin, num_seconds=200, sumo_warnings=False, sumo_seed=3,
                                  additional_sumo_cmd="--no-step-log")
    try:
        obs, _ = env.reset()
        ts = env.traffic_signals[env.ts_ids[0]]
        assert ts.id == layout.tls
        assert ts.lanes == layout.lanes
        assert [p.state for p in ts.green_phases] == layout.green_states
        assert sorted(ts.out_lanes) == layout.out_lanes
        assert [p.state for p in ts.all_phases] == layout.phase_states[:-1]  # we add all-red at the end
        ours_fn = make_layout_observation(layout)(ts)
        rng = np.random.default_rng(0)
        compared = 0
        for _ in range(30):
            theirs = ts.compute_observation()
            np.testing.assert_allclose(ours_fn(), theirs, rtol=0, atol=1e-6)
            sumo = ts.sumo
            live = build_observation(  # the controller's path: plain numbers, as read from bus points
                layout, ts.green_phase, ts.time_since_last_phase_change >= ts.min_green + ts.yellow_time,
                [float(sumo.lane.getLastStepVehicleNumber(x)) for x in layout.lanes],
                [float(sumo.lane.getLastStepHaltingNumber(x)) for x in layout.lanes],
                [float(sumo.lane.getLastStepLength(x)) for x in layout.lanes],
            )
            np.testing.assert_allclose(live, theirs, rtol=0, atol=1e-6)
            compared += int(theirs[layout.num_greens + 1:].sum() > 0)
            env.step(int(rng.integers(layout.num_greens)))
        assert compared > 0, "traffic should have reached the lanes"
    finally:
        env.close()


def test_layout_round_trips_and_names_are_topic_safe(tmp_path) -> None:
    layout = layout_from_net(resolve("cologne1").net)
    layout.save(tmp_path / "layout.json")
    again = IntersectionLayout.load(tmp_path / "layout.json")
    assert again.to_dict() == layout.to_dict() and again.fingerprint() == layout.fingerprint()
    assert layout.observation_size == len(layout.observation_names()) == layout.num_greens + 1 + 2 * len(layout.lanes)
    assert point_name("360082#1_0") == "360082_1_0" and point_name(":a/b+c.d") == "_a_b_c_d"
    assert layout.phase_kind(layout.all_red_phase) == "all-red" and set(layout.all_red_state) == {"r"}
    with pytest.raises(ValueError, match="not in the phase table"):
        layout.phase_kind(layout.all_red_phase + 1)


def test_unknown_net_and_missing_route_errors_name_the_fix(tmp_path) -> None:
    with pytest.raises(ValueError, match="neither a known scenario"):
        resolve("atlantis")
    net = tmp_path / "x.net.xml"
    net.write_text("<net/>")
    with pytest.raises(ValueError, match="--route"):
        resolve(net)


def test_observation_rejects_wrong_lane_counts() -> None:
    layout = layout_from_net(resolve("single-intersection").net)
    with pytest.raises(ValueError, match="values per lane"):
        build_observation(layout, 0, True, [1.0], [0.0], [5.0])
    obs = build_observation(layout, 1, False, [1000.0] * 4, [0.0] * 4, [5.0] * 4)
    assert obs[1] == 1 and obs[2] == 0 and np.all(obs[3:7] == 1.0)  # densities clip at 1
