"""Site validation of OPC UA devices, and the commissioning commands against a real server."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgeplane import SiteError
from edgeplane.cli import main
from edgeplane_opcua import plugin


def device(**entry) -> dict:
    return {"site": {"id": "t"}, "devices": {"plc": {"connector": "opcua", "url": "opc.tcp://127.0.0.1:4840", **entry}}}


@pytest.mark.parametrize("entry, message", [
    ({"points": {"p": {}}}, "exactly one of 'node'"),
    ({"points": {"p": {"node": "ns=2;s=A", "path": "A/B"}}}, "got node, path"),
    ({"points": {"p": {"node": "ns=2;x=1"}}}, "is not a NodeId string"),
    ({"points": {"p": {"method": "M"}}}, "access: w"),
    ({"url": "http://plc:4840", "points": {}}, "not an OPC UA endpoint"),
    ({"username": "u", "points": {}}, "'username' and 'password' go together"),
    ({"mode": "poll", "points": {}}, "add e.g. 'poll: 1s'"),
    ({"security": {"policy": "Basic256Sha256", "mode": "Sign", "certificate": "c.der", "private_key": "k.pem"}},
     "must know which server to trust"),
    ({"security": {"policy": "Basic256Sha256", "mode": "None"}}, "needs 'mode: Sign'"),
    ({"security": {"policy": "None", "mode": "Sign"}}, "needs a policy"),
    ({"security": {"server_thumbprint": "abc"}}, "40 (SHA-1) or 64"),
])
def test_invalid_devices_are_explained(edgeplane_site, entry, message):
    with pytest.raises(SiteError) as error:
        edgeplane_site(device(**entry), plugins=[plugin])
    assert message in str(error.value) and "devices.plc" in str(error.value)


def test_password_is_a_secret(edgeplane_site, monkeypatch):
    monkeypatch.setenv("PLC_PW", "hunter22")
    site = edgeplane_site(device(username="u", password="${env:PLC_PW}", points={"p": {"node": "i=2258"}}), plugins=[plugin])
    config = site.devices["plc"]
    assert config.password.get_secret_value() == "hunter22" and "hunter22" not in repr(config)


def test_browse_writes_a_profile_that_a_site_can_use(sim, tmp_path, edgeplane_site):
    profile = tmp_path / "press.yaml"
    runner = CliRunner()
    result = runner.invoke(main, ["opcua", "browse", sim.url, "--depth", "2", "--profile-out", str(profile),
                                  "--select", "*Machine/*"])
    assert result.exit_code == 0, result.output
    assert "Basic256Sha256" in result.output and "server_thumbprint:" in result.output
    assert "2:Temperature  [Double]  ns=2;s=Machine.Temperature" in result.output
    assert "2:Setpoint  [Double rw]" in result.output
    text = profile.read_text()
    assert "node: ns=2;s=Machine.Setpoint" in text and "access: rw" in text
    site = {"site": {"id": "t"}, "profiles": [str(profile)],
            "devices": {"press": {"connector": "opcua", "url": sim.url, "profile": "press"}}}
    points = edgeplane_site(site, plugins=[plugin]).devices["press"].points
    assert points["Temperature"].type == "float64" and points["Setpoint"].writable and points["Mode"].type == "uint16"


def test_read_prints_values_and_fails_on_unknown_nodes(sim):
    runner = CliRunner()
    result = runner.invoke(main, ["opcua", "read", sim.url, "ns=2;s=Machine.Name", "Machine/Speed"])
    assert result.exit_code == 0, result.output
    assert "'press-7'  (Good)" in result.output and "1500  (Good)" in result.output
    result = runner.invoke(main, ["opcua", "read", sim.url, "Machine/Nope", "ns=2;s=Machine.Broken"])
    assert result.exit_code == 1
    assert "has no child 'Nope'" in result.output and "BadSensorFailure" in result.output
    result = runner.invoke(main, ["opcua", "read", "opc.tcp://127.0.0.1:1", "i=2258"])
    assert result.exit_code == 1 and "cannot talk to the server" in result.output
