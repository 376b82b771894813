"""edgeplane-solar: the PV plant vertical.

* :mod:`edgeplane_solar.plant` - plant model config and expected/clear-sky power through pvlib;
* :mod:`edgeplane_solar.forecast` - the ``solar.forecast`` solution (persistence, smart
  persistence and the ONNX quantile model served by the shared inference service);
* :mod:`edgeplane_solar.diagnosis` - the ``solar.diagnosis`` solution (per-inverter faults);
* :mod:`edgeplane_solar.dispatch` - the ``solar.dispatch`` solution (plant active-power limit);
* ``edgeplane solar train|backtest|demo|inject`` (:mod:`edgeplane_solar.cli`).
"""

__version__ = "0.1.0"
