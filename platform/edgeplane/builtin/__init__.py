"""The plugin built into the core: connectors and a solution that need no hardware.

* ``memory``: points held in memory (virtual devices, test twins);
* ``replay``: a recorded CSV series played back as a device;
* ``threshold``: alarms with hysteresis, and an optional command on alarm.
"""
