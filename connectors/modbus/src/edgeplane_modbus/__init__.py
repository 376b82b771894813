"""edgeplane-modbus: Modbus TCP/RTU devices for edgeplane, with SunSpec discovery and a simulator.

* :class:`ModbusConnector` (connector type ``modbus``): typed register maps, coalesced reads,
  writes confirmed by read-back, SunSpec models decoded from pysunspec2's definitions;
* :class:`SunSpecInverterSimulator`: a SunSpec inverter on pymodbus's server, for tests and demos;
* ``edgeplane modbus scan | read | simulate sunspec``.
"""

from edgeplane_modbus.config import ModbusConfig, ModbusPoint, SunSpecOptions
from edgeplane_modbus.connector import ModbusConnector
from edgeplane_modbus.plan import ReadBlock, Span, plan_reads

__all__ = ["ModbusConfig", "ModbusConnector", "ModbusPoint", "ReadBlock", "Span", "SunSpecOptions", "plan_reads"]
