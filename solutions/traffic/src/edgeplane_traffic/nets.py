"""Named SUMO scenarios (sumo-rl's nets and the RESCO benchmark) and their defaults.

``resolve("cologne1")`` gives the net and route files shipped with sumo-rl plus RESCO's time
window; a path to a ``.net.xml`` is accepted too (then ``--route`` is required).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["NetSpec", "resolve", "NAMED"]


@dataclass(frozen=True)
class NetSpec:
    name: str
    net: Path
    route: Path
    begin: int = 0
    seconds: int = 3600  # simulated seconds of an evaluation episode (from begin)
    tls: str | None = None  # the signal to control; None = the only (or first) one

    def with_route(self, route: str | Path | None) -> NetSpec:
        return self if route is None else replace(self, route=Path(route))


# RESCO's single-signal scenarios run 25200..28800 (07:00-08:00); single-intersection has no end
NAMED: dict[str, tuple[str, str, int, int]] = {
    "single-intersection": ("single-intersection/single-intersection", "single-intersection/single-intersection", 0, 3600),
    "cologne1": ("RESCO/cologne1/cologne1", "RESCO/cologne1/cologne1", 25200, 3600),
    "ingolstadt1": ("RESCO/ingolstadt1/ingolstadt1", "RESCO/ingolstadt1/ingolstadt1", 57600, 3600),
    # multi-signal (evaluate --all-signals: one controller per signal)
    "cologne3": ("RESCO/cologne3/cologne3", "RESCO/cologne3/cologne3", 25200, 3600),
    "cologne8": ("RESCO/cologne8/cologne8", "RESCO/cologne8/cologne8", 25200, 3600),
    "ingolstadt7": ("RESCO/ingolstadt7/ingolstadt7", "RESCO/ingolstadt7/ingolstadt7", 57600, 3600),
    "grid4x4": ("RESCO/grid4x4/grid4x4", "RESCO/grid4x4/grid4x4_1", 0, 3600),
}


def _nets_folder() -> Path:
    # find sumo_rl without importing it: importing it fixes libsumo-or-TraCI for the process
    import importlib.util

    found = importlib.util.find_spec("sumo_rl")
    if found is None or not found.submodule_search_locations:
        raise ValueError("sumo-rl is not installed: pip install sumo-rl (it ships the named scenarios)")
    return Path(list(found.submodule_search_locations)[0]) / "nets"


def resolve(name_or_file: str | Path, route: str | Path | None = None, *, seconds: int | None = None) -> NetSpec:
    """A :class:`NetSpec` for a scenario name or a ``.net.xml`` path; raise ValueError with the fix."""
    text = str(name_or_file)
    if text in NAMED:
        net_stem, route_stem, begin, default_seconds = NAMED[text]
        folder = _nets_folder()
        spec = NetSpec(text, folder / f"{net_stem}.net.xml", folder / f"{route_stem}.rou.xml", begin, default_seconds)
    else:
        path = Path(text)
        if not path.is_file():
            raise ValueError(
                f"net {text!r} is neither a known scenario ({', '.join(NAMED)}) nor an existing .net.xml file"
            )
        if route is None:
            guess = path.with_name(path.name.replace(".net.xml", ".rou.xml"))
            if not guess.is_file():
                raise ValueError(f"net file {path} has no route file next to it ({guess.name}): pass --route FILE")
            route = guess
        spec = NetSpec(path.name.replace(".net.xml", ""), path, Path(route))
    spec = spec.with_route(route)
    if not spec.route.is_file():
        raise ValueError(f"route file {spec.route} does not exist: pass an existing SUMO .rou.xml with --route")
    if seconds is not None:
        spec = replace(spec, seconds=int(seconds))
    return spec
