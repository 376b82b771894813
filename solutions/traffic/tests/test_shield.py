"""The safety shield, checked for every transition and under random wishes and command delays."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeplane_traffic.layout import IntersectionLayout, Movement, layout_from_net
from edgeplane_traffic.nets import resolve
from edgeplane_traffic.shield import SafetyShield, ShieldConfig


def three_green_layout() -> IntersectionLayout:
    greens = ["GGrrrr", "rrGGrr", "rrrrGG"]
    return IntersectionLayout(
        tls="j", lanes=["a", "b", "c"], lane_lengths=[100.0] * 3, out_lanes=["x"], out_lane_lengths=[100.0],
        green_states=greens, movements=[Movement(i, "abc"[i // 2], "x") for i in range(6)],
        fixed_program=[(s, 30.0) for s in greens],
    )


LAYOUTS = {
    "three": three_green_layout(),
    "cologne1": layout_from_net(resolve("cologne1").net),
    "single": layout_from_net(resolve("single-intersection").net),
}


def simulate(layout: IntersectionLayout, config: ShieldConfig, wishes: list[int | None], delays: list[int]):
    """Drive a signal (1 s steps) by the shield; a command reaches the signal ``delay`` steps late.

    Returns the shown phase per second and the shield.
    """
    shield = SafetyShield(layout, config)
    phase, held = 0, 0.0
    in_flight: list[tuple[int, int]] = []  # (due step, phase)
    shown = []
    for step, wish in enumerate(wishes):
        # commands arriving now are applied before this second
        for due, cmd in [c for c in in_flight if c[0] <= step]:
            in_flight.remove((due, cmd))
            if cmd != phase:
                phase, held = cmd, 0.0
        held += 1.0
        shown.append(phase)
        result = shield.step(phase, held, wish)
        if result.command is not None and not in_flight:
            in_flight.append((step + 1 + delays[step % len(delays)], result.command))
    return shown, shield


def check_sequence(layout: IntersectionLayout, config: ShieldConfig, shown: list[int]) -> None:
    runs = [(phase, len(list(group))) for phase, group in itertools.groupby(shown)]
    for k, (phase, length) in enumerate(runs):
        kind = layout.phase_kind(phase)
        last = k == len(runs) - 1
        if k + 1 < len(runs):
            nxt = runs[k + 1][0]
            if kind == "green":
                assert layout.phase_kind(nxt) == "yellow", f"green {phase} went straight to {nxt}"
                assert layout.yellow_target(nxt)[0] == phase, "the yellow must be the yellow of the green it ends"
                if k > 0:  # the first green starts at time 0 without a history
                    assert length >= config.min_green, f"green {phase} held {length} s < min green"
            elif kind == "yellow":
                src, dst = layout.yellow_target(phase)
                assert length >= config.yellow, f"yellow held {length} s"
                if config.all_red > 0:
                    assert nxt == layout.all_red_phase, "yellow must be followed by all-red"
                else:
                    assert nxt == dst, f"yellow {src}->{dst} was followed by {nxt}"
            else:
                assert length >= config.all_red
                prev_yellow = runs[k - 1][0]
                assert nxt == layout.yellow_target(prev_yellow)[1], "all-red must lead to the green the yellow announced"
        if kind == "green" and not last:
            # max green, plus up to one decision step and the command delay
            assert length <= config.max_green + 6, f"green held {length} s > max green"


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("all_red", [0.0, 2.0])
def test_every_transition_goes_through_its_yellow_and_clearance(name: str, all_red: float) -> None:
    layout = LAYOUTS[name]
    config = ShieldConfig(min_green=5, yellow=3, all_red=all_red, max_green=40)
    for src, dst in itertools.permutations(range(layout.num_greens), 2):
        shield = SafetyShield(layout, config)
        # hold src for 10 s, then wish dst every second
        phase, held = src, 10.0
        step = shield.step(phase, held, dst)
        assert step.command == layout.yellow_phase(src, dst)
        phase, held = step.command, 0.0
        seen = [phase]
        for _ in range(20):
            held += 1
            step = shield.step(phase, held, None)
            if step.command is not None:
                phase, held = step.command, 0.0
                seen.append(phase)
            if phase == dst:
                break
        expected = [layout.yellow_phase(src, dst), *([layout.all_red_phase] if all_red else []), dst]
        assert seen == expected
        # every link that loses its green shows yellow; none that stays red gets green
        yellow = layout.yellow_states[layout.yellow_pairs.index((src, dst))]
        a, b = layout.green_states[src], layout.green_states[dst]
        for s in range(len(a)):
            if a[s] in "Gg" and b[s] in "rs":
                assert yellow[s] == "y"
            if yellow[s] in "Gg":
                assert a[s] in "Gg" and b[s] in "Gg"


def test_min_green_and_invalid_wishes_are_corrected_and_counted() -> None:
    layout = LAYOUTS["three"]
    shield = SafetyShield(layout, ShieldConfig(min_green=5, yellow=2, max_green=50, allowed={0: (1,), 1: (2,), 2: (0,)}))
    assert shield.step(0, 2.0, 1).command is None  # too early
    assert shield.step(0, 6.0, 2).command is None  # 0 -> 2 not allowed
    assert shield.step(0, 6.0, 7).command is None  # no such green
    assert shield.step(0, 6.0, 1).command == layout.yellow_phase(0, 1)
    assert dict(shield.interventions) == {"min_green": 1, "invalid_transition": 1, "invalid_phase": 1}


def test_max_green_ends_a_green_the_controller_keeps() -> None:
    layout = LAYOUTS["three"]
    shield = SafetyShield(layout, ShieldConfig(min_green=5, yellow=2, max_green=30))
    assert shield.step(1, 29.0, 1).command is None
    step = shield.step(1, 30.0, 1)
    assert step.command == layout.yellow_phase(1, 2) and step.corrections == ["max_green"]
    assert shield.interventions["max_green"] == 1


def test_bad_shield_settings_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="raise max_green"):
        ShieldConfig(min_green=10, max_green=5)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(list(LAYOUTS)),
    all_red=st.sampled_from([0.0, 1.0, 3.0]),
    min_green=st.integers(1, 15),
    yellow=st.integers(1, 4),
    extra=st.integers(0, 40),
    wishes=st.lists(st.one_of(st.none(), st.integers(-2, 9)), min_size=50, max_size=400),
    delays=st.lists(st.integers(0, 3), min_size=1, max_size=8),
)
def test_any_wishes_with_any_command_delay_give_a_safe_signal(name, all_red, min_green, yellow, extra, wishes, delays) -> None:
    layout = LAYOUTS[name]
    config = ShieldConfig(min_green=min_green, yellow=yellow, all_red=all_red, max_green=min_green + extra)
    shown, shield = simulate(layout, config, wishes, delays)
    check_sequence(layout, config, shown)
    invalid = sum(1 for w in wishes if w is not None and not 0 <= w < layout.num_greens)
    assert shield.interventions["invalid_phase"] <= invalid
