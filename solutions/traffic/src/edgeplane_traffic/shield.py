"""The safety shield: every controller's wish passes through it before reaching the signal.

It is a state machine driven by what the signal is *observed* to show (the phase-table index the
connector reports and how long it has shown it), not by its own timers, so a late command can
only lengthen a phase, never shorten a clearance. Rules, with the reason counted when a wish is
corrected:

* a green is held at least ``min_green`` s (``min_green``);
* a change of green goes green -> its yellow (``yellow`` s) -> all-red (``all_red`` s, if > 0)
  -> the new green; no other sequence is ever commanded;
* a green held ``max_green`` s is ended even if the controller wants to keep it (``max_green``);
* a wish for a phase that does not exist (``invalid_phase``) or a transition the site forbids
  (``invalid_transition``) keeps the current green.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from edgeplane_traffic.layout import IntersectionLayout

__all__ = ["ShieldConfig", "ShieldStep", "SafetyShield", "unsafe_transitions"]


@dataclass(frozen=True)
class ShieldConfig:
    # what a cabinet runs (ITE: 3-6 s yellow, 1-2 s red clearance); every controller gets the same
    min_green: float = 5.0
    yellow: float = 3.0
    all_red: float = 2.0
    max_green: float = 50.0
    # green -> greens it may change to; None: any other green
    allowed: dict[int, tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        if self.min_green < 0 or self.yellow <= 0 or self.all_red < 0:
            raise ValueError("shield: min_green and all_red must be >= 0 and yellow > 0")
        if self.max_green < self.min_green:
            raise ValueError(f"shield: max_green ({self.max_green}) is below min_green ({self.min_green}): raise max_green")


@dataclass
class ShieldStep:
    command: int | None  # the phase-table index to command now, or None to leave the signal as it is
    corrections: list[str] = field(default_factory=list)
    target: int | None = None  # the green being moved to, during a change


class SafetyShield:
    """Turns wished-for greens into a safe sequence of phase-table commands."""

    def __init__(self, layout: IntersectionLayout, config: ShieldConfig | None = None):
        self.layout = layout
        self.config = config or ShieldConfig()
        self.target: int | None = None
        self.interventions: Counter[str] = Counter()
        if self.config.allowed is not None:
            for src, dsts in self.config.allowed.items():
                for dst in (src, *dsts):
                    if not 0 <= dst < layout.num_greens:
                        raise ValueError(f"shield.allowed names green {dst}; signal {layout.tls!r} has greens 0..{layout.num_greens - 1}")

    def allowed(self, src: int, dst: int) -> bool:
        if src == dst:
            return False
        if self.config.allowed is None:
            return True
        return dst in self.config.allowed.get(src, ())

    def _next_allowed(self, green: int) -> int | None:
        n = self.layout.num_greens
        for k in range(1, n):
            candidate = (green + k) % n
            if self.allowed(green, candidate):
                return candidate
        return None

    def current_green(self, phase: int) -> int | None:
        """The green the controller should consider current (the target during a change)."""
        kind = self.layout.phase_kind(phase)
        if kind == "green":
            return phase
        return self.target

    def step(self, phase: int, elapsed: float, wish: int | None) -> ShieldStep:
        """What to command given the observed ``phase`` held for ``elapsed`` s and the controller's ``wish``.

        ``wish`` is a green index, or None when the controller made no new decision this tick.
        """
        cfg = self.config
        kind = self.layout.phase_kind(phase)
        corrections: list[str] = []
        if kind == "yellow":
            src, dst = self.layout.yellow_target(phase)
            self.target = dst
            if elapsed + 1e-9 >= cfg.yellow:
                return ShieldStep(self.layout.all_red_phase if cfg.all_red > 0 else dst, corrections, dst)
            return ShieldStep(None, corrections, dst)
        if kind == "all-red":
            dst = self.target if self.target is not None else (wish if wish is not None and 0 <= wish < self.layout.num_greens else 0)
            if elapsed + 1e-9 >= cfg.all_red:
                return ShieldStep(dst, corrections, dst)
            return ShieldStep(None, corrections, dst)
        # green
        green = phase
        self.target = None
        if wish is not None and not (isinstance(wish, int) and 0 <= wish < self.layout.num_greens):
            corrections.append("invalid_phase")
            wish = green
        change_to: int | None = None
        if wish is not None and wish != green:
            if not self.allowed(green, wish):
                corrections.append("invalid_transition")
            elif elapsed + 1e-9 < cfg.min_green:
                corrections.append("min_green")
            else:
                change_to = wish
        if change_to is None and elapsed + 1e-9 >= cfg.max_green:
            forced = self._next_allowed(green)
            if forced is not None:
                corrections.append("max_green")
                change_to = forced
        self.interventions.update(corrections)
        if change_to is None:
            return ShieldStep(None, corrections, None)
        self.target = change_to
        return ShieldStep(self.layout.yellow_phase(green, change_to), corrections, change_to)


def unsafe_transitions(layout: IntersectionLayout, phases: list[int], *, all_red: bool = False) -> list[str]:
    """Check a sequence of commanded phase-table indices; return what breaks the transition rules.

    Allowed: green i -> yellow (i, j); yellow (i, j) -> green j (or all-red when ``all_red``);
    all-red -> the green its yellow announced. Used on the audit log by tests and the demo.
    """
    problems: list[str] = []
    for k in range(1, len(phases)):
        a, b = phases[k - 1], phases[k]
        kind_a, kind_b = layout.phase_kind(a), layout.phase_kind(b)
        if kind_a == "green":
            ok = kind_b == "yellow" and layout.yellow_target(b)[0] == a
        elif kind_a == "yellow":
            dst = layout.yellow_target(a)[1]
            ok = b == (layout.all_red_phase if all_red else dst)
        else:
            prev = phases[k - 2] if k >= 2 else None
            ok = kind_b == "green" and (prev is None or layout.phase_kind(prev) != "yellow" or layout.yellow_target(prev)[1] == b)
        if not ok:
            problems.append(f"{kind_a} {a} -> {kind_b} {b} at command {k}")
    return problems
