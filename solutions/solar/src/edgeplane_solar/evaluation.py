"""Backtest scoring: nRMSE and nMAE (by capacity, daylight only) and skill against the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeplane_solar import features, forecasting
from edgeplane_solar.dataset import Prepared


def score(data: Prepared, quantiles: np.ndarray | None, horizons: list[str]) -> dict[str, dict[str, float]]:
    """Per horizon label: nrmse, nmae (model P50), the baselines' errors, skills and P10-P90 coverage.

    Every method is scored on the same rows: issue-time inputs complete, target measured,
    sun above 5 degrees at the target time.
    """
    results: dict[str, dict[str, float]] = {}
    frame = data.frame
    for label in horizons:
        h = features.horizon_steps(label) - 1
        y = data.targets[:, h]
        rows = frame.valid & np.isfinite(y) & data.daylight[:, h]
        baselines = {"persistence": frame.persistence[:, h], "smart_persistence": frame.smart_persistence[:, h]}
        # no model: smart persistence is the forecast
        results[label] = forecasting.point_scores(y, rows, baselines, None if quantiles is None else quantiles[:, h],
                                                  fallback="smart_persistence")
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    head = (f"{'horizon':>8} {'n':>6} {'nRMSE':>7} {'nMAE':>7} {'skill/pers':>10} {'skill/smart':>11} "
            f"{'nRMSE pers':>10} {'nRMSE smart':>11} {'nMAE pers':>9} {'nMAE smart':>10} {'P10-P90':>8}")
    lines = [head]
    for label, r in results.items():
        lines.append(f"{label:>8} {r['n']:>6} {r['nrmse']:>7.2%} {r['nmae']:>7.2%} {r['skill_persistence']:>10.3f} "
                     f"{r['skill_smart_persistence']:>11.3f} {r['nrmse_persistence']:>10.2%} "
                     f"{r['nrmse_smart_persistence']:>11.2%} {r['nmae_persistence']:>9.2%} "
                     f"{r['nmae_smart_persistence']:>10.2%} {r.get('coverage_p10_p90', float('nan')):>8.1%}")
    return "\n".join(lines)


def plot(data: Prepared, quantiles: np.ndarray, horizon: str, path: Path, days: int = 5) -> Path:
    """A PNG of forecast (P50 with the P10-P90 band) against measured power for a few days mid-period."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = features.horizon_steps(horizon) - 1
    per_day = 96
    first = max(0, len(data.frame.times) // 2 - days * per_day // 2)
    s = slice(first, first + days * per_day)
    times = (data.frame.times[s] + features.STEP * (h + 1)).tz_convert(None).to_pydatetime()
    cap_kw = data.capacity_w / 1000
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.fill_between(times, quantiles[s, h, 0] * cap_kw, quantiles[s, h, 2] * cap_kw, alpha=0.3, label="P10-P90")
    ax.plot(times, quantiles[s, h, 1] * cap_kw, label=f"P50, {horizon} ahead")
    ax.plot(times, data.frame.smart_persistence[s, h] * cap_kw, lw=0.8, ls="--", label="smart persistence")
    ax.plot(times, data.targets[s, h] * cap_kw, color="k", lw=1, label="measured")
    ax.set_ylabel("AC power, kW")
    ax.set_xlabel("UTC")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_json(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    keep = ("nrmse", "nmae", "skill_persistence", "skill_smart_persistence", "nrmse_persistence",
            "nrmse_smart_persistence", "nmae_persistence", "nmae_smart_persistence", "coverage_p10_p90", "n")
    return {label: {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items() if k in keep}
            for label, r in results.items()}
