"""edgeplane-pdm: predictive maintenance on vibration and temperature at the edge.

Modules: :mod:`features` (windowed vibration features, bearing fault frequencies),
:mod:`anomaly` (per-asset baselines, alert hysteresis), :mod:`faults` / :mod:`rul` (training),
:mod:`solution` (the ``pdm`` solution), :mod:`linesim` (an OPC UA factory line), :mod:`cli`.
"""

__version__ = "0.1.0"
