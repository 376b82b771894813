"""Build the small vibration sample the line simulator replays (``data/cwru_sample.npz``).

Source: Case Western Reserve University Bearing Data Center, 12 kHz drive-end accelerometer,
motor load 0 hp, 1797 rpm (https://engineering.case.edu/bearingdatacenter): records 97 (normal
baseline, 48 kHz, resampled to 12 kHz), 130 (outer race 0.007 in at 6 o'clock) and 234 (outer
race 0.021 in at 6 o'clock). 16,384 samples (1.37 s) of each, stored as float16 (about 100 kB),
taken from the start of each record's last segment: the segment the shipped fault classifier
(trained on segments 0..SEGMENTS-2 of every record) never saw, so the demo shows held-out data.

    python -m edgeplane_pdm.sample [--data ../shared/data/cwru]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgeplane_pdm.datasets import load_cwru, shared_data

SAMPLE = Path(__file__).parent / "data" / "cwru_sample.npz"
LENGTH = 16_384
RECORDS = {"normal": "Normal_0", "outer_race_007": "OR007@6_0", "outer_race_021": "OR021@6_0"}


def build(data: Path, out: Path = SAMPLE) -> Path:
    from edgeplane_pdm.faults import SEGMENTS

    records = {r.name: r for r in load_cwru(data)}
    arrays = {}
    for key, name in RECORDS.items():
        signal = records[name].signal
        start = int(np.linspace(0, len(signal), SEGMENTS + 1)[SEGMENTS - 1])  # where held-out segment starts
        arrays[key] = signal[start:start + LENGTH].astype(np.float16)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, fs=np.float32(12_000), rpm=np.float32(1797), segment=np.int32(SEGMENTS - 1), **arrays)
    return out


def load(path: Path = SAMPLE) -> dict[str, np.ndarray]:
    """The sample's signals as float64 arrays by name, plus ``fs`` and ``rpm``."""
    with np.load(path) as f:
        return {k: f[k].astype(np.float64) for k in f.files}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data("cwru"))
    args = parser.parse_args()
    print(build(args.data))
