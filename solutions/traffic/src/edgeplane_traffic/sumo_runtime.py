"""Finding SUMO and choosing its Python binding (libsumo or TraCI) in one place.

libsumo runs SUMO inside this process and is 16-25x faster than TraCI over a socket, but it
allows one simulation per process. ``LIBSUMO_AS_TRACI`` (sumo-rl's switch) picks it; without
libsumo we fall back to TraCI. Import this module before ``sumo_rl`` or ``traci``.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType

__all__ = ["binding_name", "ensure_sumo_home", "sumo_binary", "traci_module"]


def ensure_sumo_home() -> str:
    """Set ``SUMO_HOME`` from the ``eclipse-sumo`` wheel if it is not set; return it."""
    home = os.environ.get("SUMO_HOME")
    if home and os.path.isdir(home):
        return home
    try:
        import sumo  # the eclipse-sumo wheel; importing it exports SUMO_HOME
    except ImportError as e:  # pragma: no cover - the wheel is a dependency
        raise RuntimeError("SUMO is not installed: pip install eclipse-sumo, or set SUMO_HOME") from e
    home = os.environ.get("SUMO_HOME") or getattr(sumo, "SUMO_HOME", None) or os.path.dirname(sumo.__file__)
    os.environ["SUMO_HOME"] = home
    return home


def _want_libsumo() -> bool:
    value = os.environ.get("LIBSUMO_AS_TRACI")
    if value is None:  # default: libsumo when installed
        return True
    return value.strip().lower() not in ("", "0", "false", "no", "off")


_import_lock = threading.Lock()  # two devices starting in worker threads must not import traci at once


def traci_module(prefer_libsumo: bool | None = None) -> ModuleType:
    """The SUMO control module: ``libsumo`` when wanted and importable, else ``traci``."""
    with _import_lock:
        return _traci_module(prefer_libsumo)


def _traci_module(prefer_libsumo: bool | None) -> ModuleType:
    ensure_sumo_home()
    use_libsumo = _want_libsumo() if prefer_libsumo is None else prefer_libsumo
    if use_libsumo:
        try:
            import libsumo

            return libsumo
        except ImportError:
            pass
    return _socket_traci()


def _socket_traci() -> ModuleType:
    """The real TraCI client, even when ``LIBSUMO_AS_TRACI`` would make ``import traci`` give libsumo."""
    import sys

    loaded = sys.modules.get("traci")
    if loaded is not None:
        if getattr(loaded, "isLibsumo", lambda: False)() or "libsumo" in str(getattr(loaded, "__file__", "")):
            raise RuntimeError("traci was imported as libsumo (LIBSUMO_AS_TRACI) in this process, so a second "
                               "simulation cannot use TraCI: unset LIBSUMO_AS_TRACI or run one simulation per process")
        return loaded
    saved = os.environ.pop("LIBSUMO_AS_TRACI", None)
    try:
        import traci
    finally:
        if saved is not None:
            os.environ["LIBSUMO_AS_TRACI"] = saved
    return traci


def binding_name(module: ModuleType) -> str:
    return "libsumo" if module.__name__.startswith("libsumo") else "traci"


def sumo_binary() -> str:
    ensure_sumo_home()
    import sumolib

    return sumolib.checkBinary("sumo")
