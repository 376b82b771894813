"""Register maps are validated before anything starts, with the point's path in every error."""

from __future__ import annotations

import pytest

from edgeplane import SiteError
from edgeplane_modbus.config import parse_url

from edgeplane_modbus.testing import PLUGINS, device, site


def problems(edgeplane_site, points, **extra) -> str:
    with pytest.raises(SiteError) as info:
        edgeplane_site(site({"inv1": device(502, points, **extra)}), plugins=PLUGINS)
    return str(info.value)


def test_float32_over_one_register_names_the_point(edgeplane_site):
    text = problems(edgeplane_site, {"power": {"address": 10, "type": "float32", "count": 1}})
    assert "devices.inv1.points.power" in text
    assert "float32 needs 2 registers, got count=1" in text


def test_overlapping_writable_points_are_rejected(edgeplane_site):
    text = problems(edgeplane_site, {"sp": {"address": 10, "type": "uint32", "access": "rw"},
                                     "mode": {"address": 11, "access": "rw"}})
    assert "devices.inv1" in text and "'sp'" in text and "'mode'" in text and "overlap" in text


def test_bits_of_one_register_may_both_be_written(edgeplane_site):
    loaded = edgeplane_site(site({"d": device(502, {"a": {"address": 5, "type": "bool", "bit": 0, "access": "rw"},
                                                    "b": {"address": 5, "type": "bool", "bit": 3, "access": "rw"}})}),
                            plugins=PLUGINS)
    assert loaded.devices["d"].points["b"].bit == 3


def test_address_out_of_range(edgeplane_site):
    text = problems(edgeplane_site, {"e": {"address": 65534, "type": "uint64"}})
    assert "devices.inv1.points.e" in text and "address out of range" in text
    text = problems(edgeplane_site, {"e": {"address": 70000}})
    assert "devices.inv1.points.e.address" in text


@pytest.mark.parametrize("spec, message", [
    ({"table": "input", "address": 1, "access": "rw"}, "read-only"),
    ({"table": "coil", "address": 1, "type": "int16"}, "type must be bool"),
    ({"address": 1, "type": "string"}, "needs 'length'"),
    ({"address": 1, "type": "int16", "bit": 2}, "'bit' is only for type bool"),
    ({"type": "int16"}, "address"),
    ({"address": 1, "type": "float128"}, "type"),
])
def test_bad_points(edgeplane_site, spec, message):
    text = problems(edgeplane_site, {"p": spec})
    assert "devices.inv1.points.p" in text and message in text


def test_bad_url_and_span(edgeplane_site):
    with pytest.raises(SiteError, match="unknown scheme"):
        edgeplane_site(site({"d": {"connector": "modbus", "url": "http://x", "points": {}}}), plugins=PLUGINS)
    text = problems(edgeplane_site, {"s": {"address": 0, "type": "string", "length": 40}}, max_span=10)
    assert "more than max_span=10" in text


def test_url_forms():
    assert parse_url("tcp://h:1502").port == 1502
    assert parse_url("rtu+tcp://gw").kind == "rtu+tcp"
    assert parse_url("rtu:///dev/ttyUSB0").device == "/dev/ttyUSB0"
