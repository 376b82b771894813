"""Data-quality faults of a vibration channel: stuck, near zero, saturated, missing.

A sensor fault is not a machine fault. A channel that stops changing (a frozen value, a dead
transmitter), drops to near zero (a loose or broken cable), clips at full scale (wrong range, a
shorted sensor) or stops reporting raises a ``data_quality`` alert of its own, and the readings
it concerns never reach the degradation detector: they can neither raise nor clear a
degradation alert.

Two forms: :func:`trend_faults` flags samples of a slow trend (one value per channel every few
minutes, as the IMS files are); :func:`window_fault` judges one raw waveform window at the edge.
"""

from __future__ import annotations

import numpy as np

__all__ = ["QUALITY_REASONS", "trend_faults", "window_fault"]

QUALITY_REASONS = ("missing", "stuck", "near_zero", "saturated")

#: identical consecutive values of a measured, averaged feature: a float from real vibration never
#: repeats exactly, three in a row is a frozen source
STUCK_RUN = 3
#: a level below this share of the channel's healthy level is a broken link, not a quiet machine
NEAR_ZERO_SHARE = 0.1


def trend_faults(values: np.ndarray, healthy_level: float | None = None) -> np.ndarray:
    """Per sample of one channel's trend: "" (good) or the reason it is not usable.

    ``missing``: NaN or an empty cell; ``stuck``: part of a run of ``STUCK_RUN`` or more identical
    values; ``saturated``: such a run at the highest value the channel has reported so far (a
    clipped signal stays at its ceiling); ``near_zero``: zero, negative, or below
    ``NEAR_ZERO_SHARE`` of ``healthy_level`` (when known).
    """
    v = np.asarray(values, dtype=np.float64)
    reasons = np.full(len(v), "", dtype=object)
    missing = ~np.isfinite(v)
    reasons[missing] = "missing"
    running_max = np.fmax.accumulate(np.where(missing, -np.inf, v)) if len(v) else v
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and not missing[i] and v[j + 1] == v[i]:
            j += 1
        if j - i + 1 >= STUCK_RUN:
            reasons[i:j + 1] = "saturated" if v[i] >= running_max[j] else "stuck"
        i = j + 1
    # a dead link often freezes at its floor too: near zero names the cause better than stuck
    low = ~missing & (v <= 0)
    if healthy_level is not None and healthy_level > 0:
        low |= ~missing & (v < NEAR_ZERO_SHARE * healthy_level)
    reasons[low] = "near_zero"
    return reasons


def window_fault(x: np.ndarray, healthy_rms: float | None = None, full_scale: float | None = None) -> str | None:
    """The data-quality fault of one raw waveform window, or None when it is usable.

    ``stuck``: no variation at all (peak to peak below 1e-9 of the level, or exactly flat);
    ``near_zero``: RMS below ``NEAR_ZERO_SHARE`` of the machine's healthy RMS (when known);
    ``saturated``: at least 1% of the samples sit at the window's extreme value (a clean signal
    touches its peak once or twice), or at ``full_scale`` when the sensor's range is configured.
    NaN samples (Bad readings) are the caller's to count as missing.
    """
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean()
    rms = float(np.sqrt(np.mean(centred**2)))
    span = float(x.max() - x.min())
    if span <= 1e-9 * max(1.0, float(np.abs(x).max())):
        return "stuck"
    if healthy_rms is not None and rms < NEAR_ZERO_SHARE * healthy_rms:
        return "near_zero"
    peak = float(np.abs(x).max())
    at_peak = np.abs(x) >= peak * (1 - 1e-6)
    if at_peak.sum() >= max(3, 0.01 * len(x)):
        return "saturated"
    if full_scale is not None and peak >= full_scale:
        return "saturated"
    return None
