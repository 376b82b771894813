"""The policies shipped with this plugin and how to find one for a net."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_DECISION_PERIOD", "MODELS_DIR", "PolicyFiles", "model_name_for", "policy_cadence", "shipped_policy",
           "load_policy_files"]

MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_DECISION_PERIOD = 5.0  # s; every policy without its own in its metadata was trained deciding this often


def policy_cadence(metadata: Mapping[str, Any] | None) -> tuple[float, int | None]:
    """How often a policy decides and over what its detector counts run, as it was trained: (decision
    period s, detector window in readings, None = since the previous decision), from ``metadata.json``'s
    ``timing``; a policy run at another cadence sees observations it was not trained on."""
    timing = (metadata or {}).get("timing") or {}
    span = timing.get("detector_window")
    return float(timing.get("decision_period", DEFAULT_DECISION_PERIOD)), None if span is None else int(span)


def model_name_for(net_name: str) -> str:
    """The registry name of the shipped policy for a scenario, e.g. ``traffic-cologne1``."""
    return f"traffic-{net_name}"


class PolicyFiles:
    """A policy on disk: ``model.onnx`` and ``metadata.json`` (layout, timing, training curve)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.onnx = self.folder / "model.onnx"
        meta = self.folder / "metadata.json"
        if not self.onnx.is_file() or not meta.is_file():
            raise FileNotFoundError(
                f"{self.folder} is not a policy folder: it needs model.onnx and metadata.json "
                f"(made by 'edgeplane traffic train --out {self.folder}')"
            )
        self.metadata: dict[str, Any] = json.loads(meta.read_text())
        self.decision_period, self.detector_window = policy_cadence(self.metadata)

    def layout(self):  # type: ignore[no-untyped-def]
        from edgeplane_traffic.layout import IntersectionLayout

        return IntersectionLayout.from_dict(self.metadata["layout"])


def _versions(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if (p / "model.onnx").is_file() or any(p.glob("*.onnx"))]

    def key(p: Path) -> tuple[int, str]:
        return (int(p.name), "") if p.name.isdigit() else (1 << 30, p.name)

    return sorted(found, key=key)


def shipped_policy(net_name: str) -> Path | None:
    """The newest shipped policy folder for a scenario, or None."""
    versions = _versions(MODELS_DIR / model_name_for(net_name))
    return versions[-1] if versions else None


def load_policy_files(folder: Path) -> PolicyFiles:
    return PolicyFiles(folder)


def ship_policy(policy_dir: Path, net_name: str, version: str, root: Path = MODELS_DIR, *, replace: bool = False) -> Path:
    """Add a trained policy to a model registry folder (``<root>/traffic-<net>/<version>/``)."""
    import shutil

    from edgeplane.inference.manifest import Provenance
    from edgeplane.inference.registry import ModelRegistry

    policy = PolicyFiles(policy_dir)
    meta = policy.metadata
    provenance = Provenance(
        command=meta.get("command"), data=[f"sumo-rl net {meta.get('net_file')}, routes {meta.get('route_file')}"],
        metrics={k: float(v) for k, v in meta.get("evaluation", {}).items() if isinstance(v, (int, float))},
        notes=f"{meta.get('algo')} {meta.get('steps')} steps, seed {meta.get('seed')}, layout {meta.get('layout_fingerprint')}",
    )
    name = model_name_for(net_name)
    ModelRegistry(root).add(policy.onnx, name, version, provenance, replace=replace)
    shutil.copyfile(policy.folder / "metadata.json", root / name / version / "metadata.json")
    return root / name / version
