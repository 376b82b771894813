"""Windowed vibration features and bearing fault frequencies (numpy/scipy, pure functions).

Everything here is CPU work on one window: a solution calls it through
``context.run_blocking`` so the event loop never waits on an FFT.

* time domain: RMS, peak, crest factor, kurtosis (Pearson: 3 for Gaussian noise), skewness;
* spectrum: the share of energy in log-spaced bands up to Nyquist;
* envelope spectrum: band-pass around the structural resonance, Hilbert magnitude, FFT; the
  amplitude at each bearing fault frequency (and its harmonics) over the median floor, in dB;
* bearing fault frequencies (BPFO, BPFI, BSF, FTF) from geometry and shaft speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import signal, stats

__all__ = [
    "BearingGeometry",
    "FAULT_NAMES",
    "FEATURE_NAMES",
    "WindowFeatures",
    "envelope_spectrum",
    "fault_frequencies",
    "window_features",
    "CWRU_DRIVE_END",
]

FAULT_NAMES = ("bpfo", "bpfi", "bsf", "ftf")
N_BANDS = 8


class BearingGeometry(BaseModel):
    """A rolling-element bearing: ``n_balls``, ball and pitch diameters (same unit), contact angle."""

    model_config = ConfigDict(extra="forbid")

    n_balls: int = Field(ge=3, description="number of rolling elements")
    ball_diameter: float = Field(gt=0, description="rolling element diameter (any unit, same as pitch_diameter)")
    pitch_diameter: float = Field(gt=0, description="pitch (cage) diameter")
    contact_angle: float = Field(0.0, ge=0, lt=90, description="contact angle in degrees")


#: SKF 6205-2RS JEM, the drive-end bearing of the CWRU test rig (inches)
CWRU_DRIVE_END = BearingGeometry(n_balls=9, ball_diameter=0.3126, pitch_diameter=1.537, contact_angle=0.0)


def fault_frequencies(bearing: BearingGeometry, shaft_hz: float) -> dict[str, float]:
    """BPFO, BPFI, BSF (ball spin, once per revolution of the ball) and FTF in Hz, outer race fixed."""
    ratio = bearing.ball_diameter / bearing.pitch_diameter * math.cos(math.radians(bearing.contact_angle))
    n = bearing.n_balls
    return {
        "bpfo": n / 2 * shaft_hz * (1 - ratio),
        "bpfi": n / 2 * shaft_hz * (1 + ratio),
        "bsf": bearing.pitch_diameter / (2 * bearing.ball_diameter) * shaft_hz * (1 - ratio**2),
        "ftf": shaft_hz / 2 * (1 - ratio),
    }


FEATURE_NAMES: tuple[str, ...] = (
    "log_rms",
    "log_peak",
    "crest",
    "kurtosis",
    "skewness",
    *(f"band{i}" for i in range(N_BANDS)),
    *(f"env_{name}_db" for name in FAULT_NAMES),
    "env_1x_db",
)
"""The feature vector the fault classifier and the anomaly model read, in this order."""


@dataclass
class WindowFeatures:
    """The features of one window, with the fault frequencies they were measured at."""

    rms: float
    peak: float
    crest: float
    kurtosis: float
    skewness: float
    bands: np.ndarray  # share of spectral energy per band (sums to 1)
    band_edges: np.ndarray  # Hz, N_BANDS + 1 edges
    envelope_db: dict[str, float]  # fault name (and "1x") -> envelope amplitude over floor, dB
    frequencies: dict[str, float]  # fault name -> Hz

    def vector(self) -> np.ndarray:
        """The features in :data:`FEATURE_NAMES` order, float32."""
        return np.array(
            [
                math.log10(self.rms + 1e-12),
                math.log10(self.peak + 1e-12),
                self.crest,
                self.kurtosis,
                self.skewness,
                *np.log10(self.bands + 1e-6),
                *(self.envelope_db[name] for name in FAULT_NAMES),
                self.envelope_db["1x"],
            ],
            dtype=np.float32,
        )

    def strongest_fault(self) -> tuple[str, float]:
        """The fault frequency with the largest envelope peak: (name, dB over floor)."""
        name = max(FAULT_NAMES, key=lambda n: self.envelope_db[n])
        return name, self.envelope_db[name]

    def summary(self) -> dict[str, float]:
        return {
            "rms": round(self.rms, 6),
            "peak": round(self.peak, 6),
            "crest": round(self.crest, 3),
            "kurtosis": round(self.kurtosis, 3),
            "skewness": round(self.skewness, 3),
            **{f"env_{k}_db": round(v, 2) for k, v in self.envelope_db.items()},
        }


@lru_cache(maxsize=32)
def _bandpass(fs: float, low: float, high: float) -> np.ndarray:
    return signal.butter(4, [low, high], btype="bandpass", fs=fs, output="sos")


def band_edges(fs: float) -> np.ndarray:
    """Log-spaced band edges from 10 Hz to Nyquist."""
    return np.geomspace(10.0, fs / 2, N_BANDS + 1)


def envelope_spectrum(x: np.ndarray, fs: float, band: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (Hz) and amplitudes of the envelope of ``x`` band-passed to ``band``.

    The default band (fs/6 to fs/2.4, i.e. 2 to 5 kHz at 12 kHz) sits where bearing impacts
    excite the housing's resonances and the shaft's own harmonics are weak.
    """
    low, high = band if band is not None else (fs / 6, fs / 2.4)
    filtered = signal.sosfiltfilt(_bandpass(float(fs), float(low), float(high)), x)
    envelope = np.abs(signal.hilbert(filtered))
    envelope -= envelope.mean()
    amplitude = np.abs(np.fft.rfft(envelope * np.hanning(len(envelope)))) * 2 / len(envelope)
    return np.fft.rfftfreq(len(envelope), 1 / fs), amplitude


def _peak_db(freqs: np.ndarray, amplitude: np.ndarray, f0: float, floor: float, harmonics: int = 3) -> float:
    """Sum of the largest bins within +-3% (at least 1.5 bins) of f0 and its harmonics, over the floor, in dB."""
    if f0 <= 0:
        return 0.0
    df = freqs[1] - freqs[0]
    total = 0.0
    for h in range(1, harmonics + 1):
        f = f0 * h
        if f >= freqs[-1]:
            break
        half = max(0.03 * f, 1.5 * df)
        sel = (freqs >= f - half) & (freqs <= f + half)
        if sel.any():
            total += float(amplitude[sel].max())
    return 20 * math.log10((total / harmonics + 1e-15) / (floor + 1e-15))


def window_features(x: np.ndarray, fs: float, shaft_hz: float, bearing: BearingGeometry,
                    envelope_band: tuple[float, float] | None = None) -> WindowFeatures:
    """All features of one vibration window ``x`` sampled at ``fs`` Hz.

    Raises ValueError for windows too short to resolve the fault frequencies (< 256 samples)
    or containing NaN (a Bad reading in the window).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) < 256:
        raise ValueError(f"a vibration window needs at least 256 samples, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the vibration window contains NaN or inf (a Bad reading): skip it")
    centred = x - x.mean()
    rms = float(np.sqrt(np.mean(centred**2)))
    peak = float(np.max(np.abs(centred)))
    crest = peak / rms if rms > 0 else 0.0
    kurt = float(stats.kurtosis(centred, fisher=False)) if rms > 0 else 0.0
    skew = float(stats.skew(centred)) if rms > 0 else 0.0

    spectrum = np.abs(np.fft.rfft(centred * np.hanning(len(centred)))) ** 2
    freqs = np.fft.rfftfreq(len(centred), 1 / fs)
    edges = band_edges(fs)
    energy = np.array([spectrum[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
    bands = energy / energy.sum() if energy.sum() > 0 else np.full(N_BANDS, 1.0 / N_BANDS)

    frequencies = fault_frequencies(bearing, shaft_hz)
    env_f, env_a = envelope_spectrum(centred, fs, envelope_band)
    usable = (env_f > 5) & (env_f < 1000)
    floor = float(np.median(env_a[usable])) if usable.any() else float(np.median(env_a))
    envelope_db = {name: _peak_db(env_f, env_a, f, floor) for name, f in frequencies.items()}
    envelope_db["1x"] = _peak_db(env_f, env_a, shaft_hz, floor)
    return WindowFeatures(rms, peak, crest, kurt, skew, bands, edges, envelope_db, frequencies)


def synthetic_bearing_signal(fs: float, seconds: float, shaft_hz: float, fault_hz: float | None, *,
                             impact: float = 1.0, resonance_hz: float = 3000.0, noise: float = 0.05,
                             seed: int = 0) -> np.ndarray:
    """A physically plausible accelerometer signal: shaft harmonics, broadband noise, and (with
    ``fault_hz``) a train of decaying resonance bursts, one per defect impact, with +-1% jitter
    of the impact interval (rolling elements slip). Used by tests and the line simulator.
    """
    rng = np.random.default_rng(seed)
    n = int(fs * seconds)
    t = np.arange(n) / fs
    x = 0.05 * np.sin(2 * np.pi * shaft_hz * t) + 0.02 * np.sin(2 * np.pi * 2 * shaft_hz * t + 0.4)
    x += noise * rng.standard_normal(n)
    if fault_hz:
        burst_t = np.arange(int(fs * 0.004)) / fs
        burst = np.exp(-burst_t * 900.0) * np.sin(2 * np.pi * resonance_hz * burst_t)
        period = 1.0 / fault_hz
        at = rng.uniform(0, period)
        while at < seconds:
            i = int(at * fs)
            seg = burst[: max(0, min(len(burst), n - i))]
            x[i:i + len(seg)] += impact * (0.8 + 0.4 * rng.random()) * seg
            at += period * (1 + 0.01 * rng.standard_normal())
    return x
