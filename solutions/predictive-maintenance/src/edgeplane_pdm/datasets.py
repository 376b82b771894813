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

__all__ = ["CwruRecord", "load_cwru", "load_cmapss", "load_ims", "ImsRun", "bearing_of", "shared_data", "CWRU_FS"]

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
            raise ValueError(f"{path.name}: no '*_DE_time' variable (drive-end accelerometer); keys: {sorted(k for k in mat if not k.startswith('__'))}: "
                             f"use the 12 kHz drive-end recordings, or move this file out of {folder}")
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


_BEARING_COLUMN = re.compile(r"^\s*bearing[\s_-]*(?P<number>\d+)(?P<channel>.*)$", re.IGNORECASE)
_IMS_TIME_FORMATS = ("%Y.%m.%d.%H.%M.%S",)


def bearing_of(name: str) -> tuple[str, str] | None:
    """("Bearing 3", "C1") for a column or name such as "Bearing 3 C1" ("bearing_3", "Bearing 3" alike;
    the channel part may be empty); None when it names no bearing."""
    m = _BEARING_COLUMN.match(name)
    return (f"Bearing {int(m['number'])}", m["channel"].strip()) if m else None  # the IMS archive's own file names; ISO 8601 is tried first


@dataclass
class ImsRun:
    """A run-to-failure trend file: one row per snapshot, one column per accelerometer channel.

    ``ts``: seconds (the file's clock read as UTC: only differences are used, so its time zone
    does not matter); ``channels``: column names; ``bearings``: the bearing each column belongs
    to ("Bearing 3" for "Bearing 3 C1"); ``values``: (rows, channels), NaN where a cell is empty.
    """

    path: Path
    ts: np.ndarray
    channels: list[str]
    bearings: list[str]
    values: np.ndarray


def _ims_time(text: str, path: Path, row: int) -> float:
    from datetime import datetime, timezone

    text = text.strip()
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        pass
    for fmt in _IMS_TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            pass
    raise ValueError(f"{path}: row {row}: first column {text!r} is not a time (ISO 8601 such as 2004-02-12 10:32:39, "
                     f"or the IMS file name form 2003.10.22.12.06.24)")


def _ims_value(text: str, path: Path, row: int, column: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "na", "null"):
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}: row {row}, column {column!r}: {text!r} is not a number") from None


def load_ims(path: Path) -> ImsRun:
    """An IMS-style run-to-failure CSV: a time column, then one column per channel named after its
    bearing (``Bearing 1`` .. ``Bearing 4``, or ``Bearing 1 C1``, ``Bearing 1 C2`` ... for several
    accelerometers per bearing). Rows are sorted by time; empty cells become NaN (missing)."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such IMS CSV (e.g. ../shared/data/ims/merged_dataset_BearingTest_2.csv)")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if len(rows) < 3:
        raise ValueError(f"{path}: needs a header and at least 2 rows, got {len(rows)} line(s)")
    header = [h.strip() for h in rows[0]]
    if len(header) < 2:
        raise ValueError(f"{path}: unknown column layout {header}: expected a time column, then one column per "
                         f"channel named 'Bearing <n>' or 'Bearing <n> <channel>' (e.g. 'Bearing 3 C1')")
    bearings = []
    for name in header[1:]:
        parsed = bearing_of(name)
        if parsed is None:
            raise ValueError(f"{path}: unknown column layout: column {name!r} does not name a bearing; expected a time "
                             f"column, then columns 'Bearing <n>' or 'Bearing <n> <channel>' (e.g. 'Bearing 3 C1'): rename it")
        bearings.append(parsed[0])
    ts, values = [], []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise ValueError(f"{path}: row {i} has {len(r)} cells, the header has {len(header)}")
        ts.append(_ims_time(r[0], path, i))
        values.append([_ims_value(c, path, i, h) for c, h in zip(r[1:], header[1:])])
    t = np.array(ts)
    order = np.argsort(t, kind="stable")
    return ImsRun(path, t[order], header[1:], bearings, np.array(values, dtype=np.float64)[order])
