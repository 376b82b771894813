"""Which SunSpec family an inverter speaks, chosen once for every solar solution.

Two families reach the plant: legacy inverters (103 measurements and state, 123 controls) and
IEEE 1547-2018 DER inverters (701 measurements and state, 704 controls; SunSpec's newer
information model, which is what new inverters ship). A solution's ``controls`` setting forces
one (``legacy`` / ``der``) or, with ``auto``, takes what the inverter's SunSpec scan published:
an inverter that publishes any 701 point is a DER. Dispatch (which points it writes) and
diagnosis (which points it judges) both ask :func:`family_for`, so they never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgeplane_solar.plant import PlantConfig

ControlsChoice = Literal["auto", "legacy", "der"]
CONTROLS_DESCRIPTION = "auto: 701/704 for inverters whose scan found the DER models (701), else 103/123"

ST_FAULT = 7  # 103.St
INV_ST_FAULT = 6  # 701.InvSt


def is_der_point(point: str) -> bool:
    """A point only an IEEE 1547-2018 DER inverter publishes (its scan found model 701)."""
    return point.startswith("701.")


def family_for(controls: ControlsChoice, seen_family: str | None) -> str:
    """``"der"`` or ``"legacy"``: forced by ``controls``, else what the inverter's scan published."""
    if controls == "der" or (controls == "auto" and seen_family == "der"):
        return "der"
    return "legacy"


@dataclass(frozen=True)
class ControlPoints:
    """The points one control path writes and reads."""

    power: str
    status: str
    fault: int
    limit_pct: str
    limit_enable: str
    limit_revert_s: str
    pf: str
    pf_enable: str
    pf_revert_s: str
    ramp: str  # 123: ramp time in s; 704: WRmp, % of rating per second
    family: str


DER = ControlPoints(power="701.W", status="701.InvSt", fault=INV_ST_FAULT, limit_pct="704.WMaxLimPct",
                    limit_enable="704.WMaxLimPctEna", limit_revert_s="704.WMaxLimPctRvrtTms", pf="704.PFWInj.PF",
                    pf_enable="704.PFWInjEna", pf_revert_s="704.PFWInjRvrtTms", ramp="704.WRmp", family="der")


def legacy_controls(plant: PlantConfig, pf_setpoint: str = "123.OutPFSet",
                    pf_enable: str = "123.OutPFSet_Ena") -> ControlPoints:
    """The legacy path, with the plant's own point names (``plant.points``) for measurements and limits."""
    pts = plant.points
    return ControlPoints(power=pts.power, status=pts.status, fault=ST_FAULT, limit_pct=pts.limit_pct,
                         limit_enable=pts.limit_enable, limit_revert_s="123.WMaxLimPct_RvrtTms", pf=pf_setpoint,
                         pf_enable=pf_enable, pf_revert_s="123.OutPFSet_RvrtTms", ramp="123.WMaxLimPct_RmpTms",
                         family="legacy")
