"""One policy for every signal of a multi-signal net (train --shared): the environment it learns in."""

from __future__ import annotations

import numpy as np
import pytest

from edgeplane_traffic.nets import resolve
from edgeplane_traffic.shield import ShieldConfig
from edgeplane_traffic.training import DECISION_PERIOD
from edgeplane_traffic.training_shared import _vec_env_class, controllable_signals


def test_a_shared_policy_needs_signals_of_one_structure() -> None:
    assert len(controllable_signals(resolve("grid4x4").net)) == 16
    with pytest.raises(ValueError, match="differ in lanes or greens .* train one policy per signal"):
        controllable_signals(resolve("cologne8").net)


def test_every_signal_is_a_sub_environment_with_its_own_reward() -> None:
    spec = resolve("grid4x4")
    env = _vec_env_class()(spec, ShieldConfig(), first_index=0, seconds=20)
    try:
        obs = env.reset()
        size = env.layouts[0].observation_size_detectors
        assert obs.shape == (16, size) and obs.dtype == np.float32
        assert np.all(obs[:, :8].sum(axis=1) == 1)  # each signal's own green, one-hot
        wishes = np.arange(16) % 8  # a different green wished at each signal
        env.step(wishes)
        # each signal's own shield carried out its wish: green 0 kept where wished, left everywhere else
        assert [env.phase[k] == 0 for k in range(16)] == [w == 0 for w in wishes]
        seen_done = False
        for _ in range(int(20 / DECISION_PERIOD)):
            obs, rewards, dones, infos = env.step(wishes)
            assert obs.shape == (16, size) and rewards.shape == (16,) and np.all(rewards <= 0)
            if dones.all():
                seen_done = True
                assert all("terminal_observation" in i and "episode" in i for i in infos)
                break
        assert seen_done and env.index == 2  # the next episode is the next train pattern
    finally:
        env.close()


async def test_the_shipped_shared_policy_loads_at_every_grid_signal(edgeplane_host) -> None:
    import edgeplane_traffic.plugin as plugin
    from edgeplane_traffic.models import shipped_policy

    assert shipped_policy("grid4x4") is not None
    layouts = controllable_signals(resolve("grid4x4").net)
    site = {"site": {"id": "grid"}, "devices": {"ctl": {"connector": "memory", "points": {}}},
            "solutions": {f"s{k}": {"type": "traffic-signal", "device": "ctl", "net": "grid4x4", "tls": x.tls,
                                    "controller": "rl", "model": "traffic-grid4x4", "fallback": "fixed"}
                          for k, x in enumerate(layouts)}}
    async with edgeplane_host(site, plugins=[plugin]) as host:
        for k in range(len(layouts)):
            solution = host.solution(f"s{k}")
            assert solution.model_name == "traffic-grid4x4"
            # the layout check passed for every signal; only the missing inference section holds it back
            assert "no inference section" in solution.health.detail
