"""Writes the series the built-in default site replays: platform/edgeplane/builtin/data/demo-inverter.csv.

Two days of a 10 kW PV inverter every 5 minutes: plane-of-array irradiance from a clear-sky
shape with drifting cloud cover, AC power from it (with clipping at the inverter's rating), and
module temperature (the NOCT model), with a hot second afternoon that crosses the default
site's 60 degC alarm. Synthetic and deterministic (seeded): it stands in for a recorded series
until the solar reference deployment becomes the default site.

    python scripts/make_demo_series.py
"""

from __future__ import annotations

import csv
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "platform" / "edgeplane" / "builtin" / "data" / "demo-inverter.csv"


def main() -> None:
    rng = random.Random(7)
    start = datetime(2024, 6, 20, tzinfo=timezone.utc)
    cloud = 0.0
    rows = []
    for k in range(2 * 24 * 12):
        moment = start + timedelta(minutes=5 * k)
        hour = moment.hour + moment.minute / 60
        day = k // (24 * 12)
        sun = max(0.0, math.sin(math.pi * (hour - 5.5) / 14.0))  # daylight 05:30-19:30
        cloud = min(0.8, max(0.0, 0.9 * cloud + rng.gauss(0, 0.08)))
        poa = 1000.0 * sun**1.2 * (1 - cloud)
        ambient = 18 + 10 * math.sin(math.pi * (hour - 9) / 12) + (9 if day == 1 else 0)
        module = ambient + poa / 800 * (45 - 20)
        power = min(10_000.0, 10.5 * poa * (1 - 0.004 * (module - 25)))
        rows.append((moment.isoformat().replace("+00:00", "Z"), round(power, 1), round(module, 2), round(poa, 1)))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="") as f:
        f.write("# synthetic demo series, made by scripts/make_demo_series.py (not measured data)\n")
        writer = csv.writer(f)
        writer.writerow(["ts", "ac_power_w", "module_temp_c", "poa_wm2"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
