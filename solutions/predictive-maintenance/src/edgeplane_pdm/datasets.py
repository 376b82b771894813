"""Readers for the public data the models are trained and evaluated on.

* CWRU bearing data (``.mat``, 12 kHz drive end; ``Normal_0`` is 48 kHz and is resampled);
* NASA C-MAPSS (``train_FD001.txt``, ``test_FD001.txt`` + ``RUL_FD001.txt``);
* IMS bearing test 2 as one CSV (time column, one column per bearing).

The data is never copied into the repository: pass ``--data`` or let :func:`shared_data`
find ``../shared/data`` next to the repository root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CwruRecord", "load_cwru", "load_cmapss", "load_ims", "shared_data", "CWRU_FS"]

CWRU_FS = 12_000.0
NORMAL_FS = 48_000.0
_CWRU_NAME = re.compile(r"^(?P<label>Normal|B\d{3}|IR\d{3}|OR\d{3}@\d+)_(?P<load>\d)$")


def shared_data(*parts: str) -> Path:
    """``<repo>/../shared/data/<parts>``: where CI and this project's machines keep the public data."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if (parent / "pyproject.toml").exists() and (parent / "platform").is_dir() and candidate.is_dir():
            return candidate.joinpath(*parts)
    return Path("../shared/data").joinpath(*parts)


@dataclass
class CwruRecord:
    """One CWRU record: label from the file name (``Normal``, ``B007``, ``OR021@6``...), motor load, signal at 12 kHz."""

    name: str
    label: str
    load: int
    rpm: float
    signal: np.ndarray


def load_cwru(folder: Path) -> list[CwruRecord]:
    """Every ``<label>_<load>.mat`` in ``folder``, drive-end signal resampled to 12 kHz when needed."""
    from scipy import io, signal as sps

    folder = Path(folder)
    files = sorted(folder.glob("*.mat"))
    if not files:
        raise FileNotFoundError(f"no CWRU .mat files in {folder}: pass --data with a folder such as ../shared/data/cwru")
    records = []
    for path in files:
        m = _CWRU_NAME.match(path.stem)
        if not m:
            raise ValueError(f"{path.name}: not a CWRU file name (<Normal|B007|IR014|OR021@6>_<load>.mat): rename it")
        mat = io.loadmat(path)
        de = [k for k in mat if k.endswith("_DE_time")]
        if not de:
            raise ValueError(f"{path.name}: no '*_DE_time' variable (drive-end accelerometer)")
        x = np.asarray(mat[sorted(de)[0]], dtype=np.float64).ravel()
        rpm_keys = [k for k in mat if k.endswith("RPM")]
        rpm = float(np.ravel(mat[rpm_keys[0]])[0]) if rpm_keys else 1797.0
        # CWRU's normal baseline records were sampled at 48 kHz, the drive-end faults at 12 kHz
        # (its spectrum lines up with the faults' only when read at 48 kHz): bring it to 12 kHz
        if m["label"] == "Normal":
            x = sps.resample_poly(x, int(CWRU_FS), int(NORMAL_FS))
        records.append(CwruRecord(path.stem, m["label"], int(m["load"]), rpm, x))
    return records


CMAPSS_COLUMNS = ["unit", "cycle", "setting1", "setting2", "setting3"] + [f"s{i}" for i in range(1, 22)]


def load_cmapss(path: Path) -> np.ndarray:
    """A C-MAPSS text file as an (n, 26) float array: unit, cycle, 3 settings, 21 sensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such C-MAPSS file (e.g. ../shared/data/cmapss/train_FD001.txt)")
    data = np.loadtxt(path)
    if data.ndim != 2 or data.shape[1] != 26:
        raise ValueError(f"{path}: expected 26 columns (unit, cycle, 3 settings, 21 sensors), got shape {data.shape}")
    return data


def load_ims(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """An IMS CSV: (timestamps as float seconds, bearing column names, values (n, bearings))."""
    import csv
    from datetime import datetime, timezone

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such IMS CSV (e.g. ../shared/data/ims/merged_dataset_BearingTest_2.csv)")
    with path.open() as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]
    ts = np.array([datetime.fromisoformat(r[0]).replace(tzinfo=timezone.utc).timestamp() for r in body])
    values = np.array([[float(v) for v in r[1:]] for r in body])
    order = np.argsort(ts)
    return ts[order], header[1:], values[order]
