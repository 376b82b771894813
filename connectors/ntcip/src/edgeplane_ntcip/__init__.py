"""edgeplane-ntcip: traffic signal controllers over NTCIP 1202 (SNMP v2c/v3), and a controller simulator."""

from edgeplane_ntcip.mib import OBJECTS, NtcipObject
from edgeplane_ntcip.session import (NtcipAuthError, NtcipError, NtcipNoSuchObject, NtcipRejected, NtcipTimeout,
                                     SnmpCredentials, SnmpSession)

__all__ = ["OBJECTS", "NtcipAuthError", "NtcipError", "NtcipNoSuchObject", "NtcipObject", "NtcipRejected",
           "NtcipTimeout", "SnmpCredentials", "SnmpSession"]
