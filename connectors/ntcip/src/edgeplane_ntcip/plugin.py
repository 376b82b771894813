"""edgeplane hooks of edgeplane-ntcip: the ``ntcip`` connector."""

from __future__ import annotations

from typing import Any, Callable

from edgeplane import hookimpl


@hookimpl
def edgeplane_register_connectors(register: Callable[..., Any]) -> None:
    from edgeplane_ntcip.connector import NtcipConnector

    register("ntcip", NtcipConnector)
