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
from scipy import signal

__all__ = [
    "BearingGeometry",
    "FAULT_NAMES",
    "FEATURE_NAMES",
    "WindowFeatures",
    "envelope_spectrum",
    "fault_frequencies",
    "window_features",
    "CWRU_DRIVE_END",
    "FAULT_FEATURE_NAMES",
    "fault_features",
    "envelope",
    "window_and_fault_features",
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
    return _band_edges(float(fs)).copy()


@lru_cache(maxsize=8)
def _band_edges(fs: float) -> np.ndarray:
    return np.geomspace(10.0, fs / 2, N_BANDS + 1)


def envelope(x: np.ndarray, fs: float, band: tuple[float, float] | None = None) -> np.ndarray:
    """The envelope (Hilbert magnitude) of ``x`` band-passed to ``band``.

    The default band (fs/6 to fs/2.4, i.e. 2 to 5 kHz at 12 kHz) sits where bearing impacts
    excite the housing's resonances and the shaft's own harmonics are weak. One forward pass of
    the filter: its phase shift does not change the envelope's magnitude spectrum, and a
    zero-phase pass would cost twice (it is most of a window's cost at the edge).
    """
    low, high = band if band is not None else (fs / 6, fs / 2.4)
    return np.abs(signal.hilbert(signal.sosfilt(_bandpass(float(fs), float(low), float(high)), x)))


def _moments(centred: np.ndarray) -> tuple[float, float, float]:
    """(RMS, kurtosis (Pearson, 3 for Gaussian noise), skewness) of a zero-mean signal, in plain
    numpy (scipy.stats' input checks cost more than the arithmetic on a 4096-sample window)."""
    squared = centred * centred
    m2 = float(squared.mean())
    if m2 <= 0:
        return 0.0, 3.0, 0.0
    m3 = float(np.dot(squared, centred)) / len(centred)
    m4 = float(np.dot(squared, squared)) / len(centred)
    return math.sqrt(m2), m4 / (m2 * m2), m3 / m2**1.5


def envelope_spectrum(x: np.ndarray, fs: float, band: tuple[float, float] | None = None,
                      env: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (Hz) and amplitudes of the envelope of ``x`` band-passed to ``band`` (or of ``env``, an
    :func:`envelope` already computed)."""
    env = envelope(x, fs, band) if env is None else env
    envelope_ac = env - env.mean()
    amplitude = np.abs(np.fft.rfft(envelope_ac * _hanning(len(envelope_ac)))) * 2 / len(envelope_ac)
    return np.fft.rfftfreq(len(envelope_ac), 1 / fs), amplitude


@lru_cache(maxsize=8)
def _hanning(n: int) -> np.ndarray:
    return np.hanning(n)


def _band_max(amplitude: np.ndarray, lo: float, hi: float) -> float:
    """The largest of ``amplitude``'s bins lo..hi (fractional bin numbers, both ends included); 0 when none."""
    first, last = max(0, math.ceil(lo)), min(len(amplitude) - 1, math.floor(hi))
    return float(amplitude[first:last + 1].max()) if last >= first else 0.0


def _band_shares(centred: np.ndarray, fs: float) -> np.ndarray:
    """The share of spectral energy in each of the N_BANDS log-spaced bands [lo, hi) (sums to 1)."""
    spectrum = np.abs(np.fft.rfft(centred * _hanning(len(centred)))) ** 2
    freqs = np.fft.rfftfreq(len(centred), 1 / fs)
    cumulative = np.concatenate([[0.0], np.cumsum(spectrum)])
    edge_bins = np.searchsorted(freqs, _band_edges(float(fs)))  # first bin at or above each edge
    energy = cumulative[edge_bins[1:]] - cumulative[edge_bins[:-1]]
    return energy / energy.sum() if energy.sum() > 0 else np.full(N_BANDS, 1.0 / N_BANDS)


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
        total += _band_max(amplitude, (f - half) / df, (f + half) / df)
    return 20 * math.log10((total / harmonics + 1e-15) / (floor + 1e-15))


def window_features(x: np.ndarray, fs: float, shaft_hz: float, bearing: BearingGeometry,
                    envelope_band: tuple[float, float] | None = None, env: np.ndarray | None = None) -> WindowFeatures:
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
    rms, kurt, skew = _moments(centred)
    peak = float(np.max(np.abs(centred)))
    crest = peak / rms if rms > 0 else 0.0

    bands = _band_shares(centred, fs)
    edges = _band_edges(float(fs))

    frequencies = fault_frequencies(bearing, shaft_hz)
    env_f, env_a = envelope_spectrum(centred, fs, envelope_band, env)
    usable = (env_f > 5) & (env_f < 1000)
    floor = float(np.median(env_a[usable])) if usable.any() else float(np.median(env_a))
    envelope_db = {name: _peak_db(env_f, env_a, f, floor) for name, f in frequencies.items()}
    envelope_db["1x"] = _peak_db(env_f, env_a, shaft_hz, floor)
    return WindowFeatures(rms, peak, crest, kurt, skew, bands, edges, envelope_db, frequencies)


#: what each bearing defect shows in the envelope spectrum, in shaft orders: an outer race
#: defect at BPFO; an inner race defect at BPFI, amplitude-modulated by the shaft (sidebands at
#: BPFI +- 1x); a ball defect hits both races once per spin (2 x BSF), modulated by the cage (FTF)
_ORDER_HARMONICS = 3
FAULT_FEATURE_NAMES: tuple[str, ...] = (
    *(f"env_{name}_h{h}_db" for name in ("bpfo", "bpfi", "2bsf", "ftf", "1x") for h in range(1, _ORDER_HARMONICS + 1)),
    "env_bpfi_sidebands_db",
    "env_2bsf_ftf_sidebands_db",
    "env_defect_share",
    "log_kurtosis",
    "crest",
    "envelope_log_kurtosis",
    "skewness",
    *(f"band{i}" for i in range(N_BANDS)),
)
"""The fault classifier's inputs, in this order: level-free and order-normalised (see :func:`fault_features`)."""


def _order_peak(orders: np.ndarray, amplitude: np.ndarray, order: float, half_width: float = 0.03) -> float:
    """The largest envelope amplitude within +-``half_width`` (relative) of ``order``."""
    step = orders[1] - orders[0]
    return _band_max(amplitude, order * (1 - half_width) / step, order * (1 + half_width) / step)


def fault_features(x: np.ndarray, fs: float, shaft_hz: float, bearing: BearingGeometry,
                   envelope_band: tuple[float, float] | None = None, env: np.ndarray | None = None) -> np.ndarray:
    """The fault classifier's features of one window (:data:`FAULT_FEATURE_NAMES`, float32).

    Built to transfer across motor loads and machines: nothing depends on the absolute vibration
    level (every envelope amplitude is in dB over the envelope spectrum's own median floor, or a
    share of its energy; kurtosis and crest factor are ratios), and nothing on one shaft speed (the
    envelope spectrum is read in shaft orders, f / shaft_hz, at the defect orders that the bearing
    geometry gives; ``shaft_hz`` is the measured speed). The time-domain impulsiveness (kurtosis,
    crest factor, the envelope's own kurtosis, skewness) tells a defect from a healthy bearing; the
    orders tell which defect. The share of spectral energy per band (in Hz: the structure's
    resonances the impacts excite do not move with speed) is a shape, not a level.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) < 256:
        raise ValueError(f"a vibration window needs at least 256 samples, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the vibration window contains NaN or inf (a Bad reading): skip it")
    centred = x - x.mean()
    rms, kurt, skew = _moments(centred)
    crest = float(np.max(np.abs(centred)) / rms) if rms > 0 else 0.0
    env = envelope(centred, fs, envelope_band) if env is None else env
    env_ac = env - env.mean()
    _, env_kurt, _ = _moments(env_ac)
    amplitude = np.abs(np.fft.rfft(env_ac * _hanning(len(env_ac)))) * 2 / len(env_ac)
    orders = np.fft.rfftfreq(len(env_ac), 1 / fs) / shaft_hz
    usable = (orders > 0.2) & (orders < 30)
    floor = float(np.median(amplitude[usable])) + 1e-15
    f = fault_frequencies(bearing, shaft_hz)
    defect = {"bpfo": f["bpfo"] / shaft_hz, "bpfi": f["bpfi"] / shaft_hz, "2bsf": 2 * f["bsf"] / shaft_hz,
              "ftf": f["ftf"] / shaft_hz, "1x": 1.0}
    db = []
    for name in ("bpfo", "bpfi", "2bsf", "ftf", "1x"):
        for h in range(1, _ORDER_HARMONICS + 1):
            db.append(20 * math.log10(_order_peak(orders, amplitude, defect[name] * h) / floor + 1e-6))
    bpfi, bsf2, ftf = defect["bpfi"], defect["2bsf"], defect["ftf"]
    side_i = (_order_peak(orders, amplitude, bpfi - 1, 0.02) + _order_peak(orders, amplitude, bpfi + 1, 0.02)) / 2
    side_b = (_order_peak(orders, amplitude, bsf2 - ftf, 0.02) + _order_peak(orders, amplitude, bsf2 + ftf, 0.02)) / 2
    total = float(np.sum(amplitude[usable] ** 2)) + 1e-30
    at_defects = sum(_order_peak(orders, amplitude, defect[n] * h) ** 2 for n in ("bpfo", "bpfi", "2bsf") for h in range(1, _ORDER_HARMONICS + 1))
    return np.array([
        *db,
        20 * math.log10(side_i / floor + 1e-6),
        20 * math.log10(side_b / floor + 1e-6),
        at_defects / total,
        math.log(max(kurt, 1e-3)),
        crest,
        math.log(max(env_kurt, 1e-3)),
        skew,
        *np.log10(_band_shares(centred, fs) + 1e-6),
    ], dtype=np.float32)


def window_and_fault_features(x: np.ndarray, fs: float, shaft_hz: float, bearing: BearingGeometry,
                               envelope_band: tuple[float, float] | None = None) -> tuple[WindowFeatures, np.ndarray]:
    """:func:`window_features` and :func:`fault_features` of one window, sharing its envelope."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) < 256 or not np.isfinite(x).all():
        return window_features(x, fs, shaft_hz, bearing, envelope_band), np.zeros(0, dtype=np.float32)  # raises the reader's error
    env = envelope(x - x.mean(), fs, envelope_band)
    return (window_features(x, fs, shaft_hz, bearing, envelope_band, env),
            fault_features(x, fs, shaft_hz, bearing, envelope_band, env))


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
