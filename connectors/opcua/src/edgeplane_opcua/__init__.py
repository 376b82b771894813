"""edgeplane-opcua: the OPC UA connector (``connector: opcua``) and the ``edgeplane opcua`` commands.

See :mod:`edgeplane_opcua.config` for what a device entry may hold and
:mod:`edgeplane_opcua.connector` for how the link, readings, writes and methods behave.
"""

from edgeplane_opcua.config import OpcUaConfig, OpcUaPoint, SecurityConfig
from edgeplane_opcua.connector import LinkLost, OpcUaConnector
from edgeplane_opcua.security import CertificateRejected
from edgeplane_opcua.values import ValueMismatch

__all__ = ["CertificateRejected", "LinkLost", "OpcUaConfig", "OpcUaConnector", "OpcUaPoint", "SecurityConfig", "ValueMismatch"]
