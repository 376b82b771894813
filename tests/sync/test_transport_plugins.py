"""Uplink transports are plugins: each declares its config model, which validates ``sync.uplink``."""

from __future__ import annotations

import pytest

from edgeplane import hookimpl
from edgeplane.errors import SiteError
from edgeplane.plugins import Plugins
from edgeplane.sync import MqttTransport, UplinkConfig


class CarrierPigeonConfig(UplinkConfig):
    loft: str


class CarrierPigeon(MqttTransport):
    Config = CarrierPigeonConfig


class NotAConfig:
    pass


class Broken(MqttTransport):
    Config = NotAConfig  # type: ignore[assignment]


class Transports:
    __name__ = "pigeons"

    @hookimpl
    def edgeplane_register_transports(self, register):
        register("pigeon", CarrierPigeon)


class BrokenTransports:
    __name__ = "broken"

    @hookimpl
    def edgeplane_register_transports(self, register):
        register("broken", Broken)


def _site(**uplink):
    return {"site": {"id": "s"}, "sync": {"uplink": {"url": "mqtt://127.0.0.1:1", **uplink}}}


def test_the_chosen_transport_validates_its_own_settings(edgeplane_site):
    site = edgeplane_site(_site(transport="pigeon", loft="north"), plugins=[Transports()])
    assert isinstance(site.core.sync.uplink, CarrierPigeonConfig) and site.core.sync.uplink.loft == "north"
    with pytest.raises(SiteError, match="loft"):
        edgeplane_site(_site(transport="pigeon"), plugins=[Transports()])  # its required field
    with pytest.raises(SiteError, match="loft"):
        edgeplane_site(_site(loft="north"), plugins=[Transports()])  # the default transport has no 'loft'
    assert type(edgeplane_site(_site(), plugins=[Transports()]).core.sync.uplink) is UplinkConfig


def test_a_transport_whose_config_is_not_an_uplink_config_is_refused_at_registration():
    plugins = Plugins.load(entry_points=False, extra=[BrokenTransports()])
    assert "broken" not in plugins.registry.transports
    assert "UplinkConfig" in str(plugins.registry.failed["broken"])


def test_the_editor_schema_accepts_each_transport_settings_and_refuses_a_mix():
    jsonschema = pytest.importorskip("jsonschema")
    from edgeplane.config import site_json_schema

    schema = site_json_schema(Plugins.load(entry_points=False, extra=[Transports()]).registry)
    jsonschema.validate(_site(transport="pigeon", loft="north"), schema)
    jsonschema.validate(_site(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_site(lofty="north"), schema)
