"""Features against signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from edgeplane_pdm.features import (
    CWRU_DRIVE_END,
    FEATURE_NAMES,
    BearingGeometry,
    envelope_spectrum,
    fault_frequencies,
    synthetic_bearing_signal,
    window_features,
)

FS, SHAFT = 12_000.0, 1797 / 60


def test_fault_frequencies_match_the_cwru_published_multiples():
    # CWRU publishes, for the 6205-2RS JEM drive-end bearing, multiples of the shaft speed
    f = fault_frequencies(CWRU_DRIVE_END, 1.0)
    assert f["bpfo"] == pytest.approx(3.5848, abs=1e-3)
    assert f["bpfi"] == pytest.approx(5.4152, abs=1e-3)
    assert 2 * f["bsf"] == pytest.approx(4.7135, abs=1e-3)  # CWRU lists twice the ball spin frequency
    assert f["ftf"] == pytest.approx(0.39828, abs=1e-4)


def test_contact_angle_moves_outer_and_inner_race_frequencies_apart_less():
    tilted = BearingGeometry(n_balls=9, ball_diameter=0.3126, pitch_diameter=1.537, contact_angle=40)
    a, b = fault_frequencies(CWRU_DRIVE_END, 30.0), fault_frequencies(tilted, 30.0)
    assert b["bpfi"] - b["bpfo"] < a["bpfi"] - a["bpfo"]
    assert a["bpfo"] + a["bpfi"] == pytest.approx(9 * 30.0)  # BPFO + BPFI = n x shaft speed


def test_time_domain_of_a_sine():
    t = np.arange(12000) / FS  # a whole number of periods
    x = 2.0 * np.sin(2 * np.pi * 100 * t)
    f = window_features(x, FS, SHAFT, CWRU_DRIVE_END)
    assert f.rms == pytest.approx(2 / np.sqrt(2), rel=1e-3)
    assert f.peak == pytest.approx(2.0, rel=1e-3)
    assert f.crest == pytest.approx(np.sqrt(2), rel=1e-3)
    assert f.kurtosis == pytest.approx(1.5, abs=0.01)  # a sine's kurtosis is 1.5
    assert abs(f.skewness) < 0.01
    assert f.bands.sum() == pytest.approx(1.0)
    # all of the energy sits in the band that contains 100 Hz
    band = int(np.searchsorted(f.band_edges, 100.0)) - 1
    assert f.bands[band] > 0.99


def test_gaussian_noise_has_kurtosis_three():
    x = np.random.default_rng(1).standard_normal(65536)
    f = window_features(x, FS, SHAFT, CWRU_DRIVE_END)
    assert f.kurtosis == pytest.approx(3.0, abs=0.1)
    assert f.crest > 3


def test_outer_race_fault_shows_at_bpfo_in_the_envelope_spectrum():
    bpfo = fault_frequencies(CWRU_DRIVE_END, SHAFT)["bpfo"]
    faulty = synthetic_bearing_signal(FS, 1.0, SHAFT, bpfo, impact=1.0, seed=3)
    healthy = synthetic_bearing_signal(FS, 1.0, SHAFT, None, seed=3)
    freqs, amp = envelope_spectrum(faulty, FS)
    band = (freqs > 20) & (freqs < 400)
    peak_hz = freqs[band][np.argmax(amp[band])]
    assert peak_hz == pytest.approx(bpfo, rel=0.03)
    f_faulty = window_features(faulty[:8192], FS, SHAFT, CWRU_DRIVE_END)
    f_healthy = window_features(healthy[:8192], FS, SHAFT, CWRU_DRIVE_END)
    assert f_faulty.strongest_fault()[0] == "bpfo"
    assert f_faulty.envelope_db["bpfo"] > f_healthy.envelope_db["bpfo"] + 10
    assert f_faulty.envelope_db["bpfo"] > f_faulty.envelope_db["bpfi"] + 6
    assert f_faulty.kurtosis > f_healthy.kurtosis + 1


def test_inner_race_fault_is_told_apart_from_outer_race():
    bpfi = fault_frequencies(CWRU_DRIVE_END, SHAFT)["bpfi"]
    x = synthetic_bearing_signal(FS, 1.0, SHAFT, bpfi, seed=4)
    f = window_features(x[:8192], FS, SHAFT, CWRU_DRIVE_END)
    assert f.strongest_fault()[0] == "bpfi"


def test_feature_vector_is_float32_in_declared_order():
    x = synthetic_bearing_signal(FS, 0.5, SHAFT, None)
    v = window_features(x[:4096], FS, SHAFT, CWRU_DRIVE_END).vector()
    assert v.dtype == np.float32 and v.shape == (len(FEATURE_NAMES),)
    assert np.isfinite(v).all()


@pytest.mark.parametrize("bad", [np.zeros(100), np.full(4096, np.nan), np.zeros((64, 64))])
def test_bad_windows_are_refused_with_a_reason(bad):
    with pytest.raises(ValueError, match="window"):
        window_features(bad, FS, SHAFT, CWRU_DRIVE_END)
