"""Site files: whole-file validation with file/line/path/fix, secrets, profiles, schema."""

from __future__ import annotations

import json
import logging
import textwrap
from typing import Annotated, Literal, Union

import pytest
from pydantic import Field

from edgeplane import DeviceConfig, Plugins, PointSpec, SiteError, hookimpl, load_site
from edgeplane.components import Connector
from edgeplane.config import ConfigModel, parse_duration, parse_rate, site_json_schema


@pytest.fixture
def registry():
    return Plugins.load(entry_points=False).registry


def write(tmp_path, text, name="site.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(excinfo):
    return excinfo.value.problems


def test_valid_site_loads(tmp_path, registry):
    path = write(tmp_path, """
        site: {id: plant-07, timezone: Europe/Berlin, location: {lat: 39.7, lon: -105.2}}
        devices:
          m1: {connector: memory, points: {sp: {type: float64, access: rw, limits: {min: 0, max: 10}}}}
        solutions:
          hot: {type: threshold, points: ["m1/sp"], high: 5}
        limits:
          "m*/sp": {max_rate: 2/s}
    """)
    site = load_site(path, registry)
    assert site.id == "plant-07"
    assert site.devices["m1"].points["sp"].limits.max == 10
    assert site.limits["m*/sp"].max_rate == 2.0
    assert site.solutions["hot"].high == 5


def test_unknown_key_names_file_line_path_and_suggests(tmp_path, registry):
    path = write(tmp_path, """
        site: {id: s}
        devices:
          m1:
            connector: memory
            pol: 1s
    """)
    with pytest.raises(SiteError) as excinfo:
        load_site(path, registry)
    (problem,) = problems(excinfo)
    assert problem.path == "devices.m1.pol"
    assert problem.line == 6 and problem.file == str(path)
    assert "did you mean 'poll'" in problem.fix
    assert f"{path}:6: devices.m1.pol: unknown key 'pol'" in str(excinfo.value)


def test_unknown_connector_and_solution_types_suggest_a_close_name(tmp_path, registry):
    path = write(tmp_path, """
        site: {id: s}
        devices:
          d: {connector: memroy}
        solutions:
          s: {type: treshold, points: [x/y], high: 1}
    """)
    with pytest.raises(SiteError) as excinfo:
        load_site(path, registry)
    by_path = {p.path: p for p in problems(excinfo)}
    assert "did you mean 'memory'" in by_path["devices.d.connector"].fix
    assert by_path["devices.d.connector"].line == 4
    assert "did you mean 'threshold'" in by_path["solutions.s.type"].fix


def test_every_problem_is_reported_at_once(tmp_path, registry):
    path = write(tmp_path, """
        site: {id: s}
        devices:
          a: {connector: memory, poll: soon}
          b: {connector: memory, points: {x: {type: float99}}}
        solutions:
          t: {type: threshold, points: [a/x], high: 1, clear: 5}
    """)
    with pytest.raises(SiteError) as excinfo:
        load_site(path, registry)
    paths = sorted(p.path for p in problems(excinfo))
    assert paths == ["devices.a.poll", "devices.b.points.x.type", "solutions.t"]
    text = str(excinfo.value)
    assert "'soon' is not a duration" in text and "hysteresis needs clear <= high" in text


def test_wrong_types_in_core_sections(tmp_path, registry):
    path = write(tmp_path, """
        site: {id: "Bad Id", timezone: Mars/Olympus}
        http: {port: 99999}
    """)
    with pytest.raises(SiteError) as excinfo:
        load_site(path, registry)
    paths = {p.path for p in problems(excinfo)}
    assert paths == {"site.id", "site.timezone", "http.port"}
    assert "unknown time zone 'Mars/Olympus'" in str(excinfo.value)


def test_missing_site_section_and_bad_yaml(tmp_path, registry):
    with pytest.raises(SiteError, match=r"site: required key is missing\n\s+fix: add 'site:'"):
        load_site(write(tmp_path, "devices: {}\n"), registry)
    with pytest.raises(SiteError) as excinfo:
        load_site(write(tmp_path, "site: {id: x\ndevices: [\n"), registry)
    assert "not valid YAML" in str(excinfo.value) and problems(excinfo)[0].line is not None
    with pytest.raises(SiteError, match="cannot read"):
        load_site(tmp_path / "nope.yaml", registry)


def test_secrets_resolve_and_never_appear_in_errors_or_logs(tmp_path, registry, monkeypatch, caplog):
    monkeypatch.setenv("PLANT_TOKEN", "s3cr3t-env-value")
    (tmp_path / "pw.txt").write_text("s3cr3t-file-value\n")
    path = write(tmp_path, """
        site: {id: s, name: "token ${env:PLANT_TOKEN}"}
        devices:
          d: {connector: memory, points: {p: {description: "${file:pw.txt}", type: nonsense}}}
    """)
    with pytest.raises(SiteError) as excinfo:
        load_site(path, registry)
    text = str(excinfo.value)
    assert "s3cr3t" not in text

    path = write(tmp_path, """
        site: {id: s, name: "token ${env:PLANT_TOKEN}"}
        devices:
          d: {connector: memory, points: {p: {description: "${file:pw.txt}"}}}
    """)
    site = load_site(path, registry)
    assert site.core.site.name == "token s3cr3t-env-value"
    assert site.devices["d"].points["p"].description == "s3cr3t-file-value"
    from edgeplane.logs import configure_logging

    configure_logging("info", "text", site.redactor)
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord("x", logging.INFO, "", 0, "connecting with %s", ("s3cr3t-env-value",), None)
    assert handler.filter(record) and "s3cr3t" not in record.getMessage() and "***" in record.getMessage()


def test_missing_secrets_are_reported_with_a_fix(tmp_path, registry, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    path = write(tmp_path, """
        site: {id: s, name: "${env:NOPE_NOT_SET}"}
        devices:
          d: {connector: memory, points: {p: {description: "${file:missing.pem}"}}}
    """)
    with pytest.raises(SiteError) as excinfo:
        load_site(path, registry)
    by_path = {p.path: p for p in problems(excinfo)}
    assert "NOPE_NOT_SET" in by_path["site.name"].message and "export NOPE_NOT_SET" in by_path["site.name"].fix
    assert "missing.pem" in by_path["devices.d.points.p.description"].message


def test_profiles_are_merged_and_refined(tmp_path, registry):
    (tmp_path / "profiles").mkdir()
    write(tmp_path, """
        profile: thermo
        connector: memory
        points:
          temp: {type: float64, unit: degC, scale: 0.1}
          setpoint: {type: float64, access: rw, limits: {min: 5, max: 30}}
    """, "profiles/thermo.yaml")
    path = write(tmp_path, """
        site: {id: s}
        profiles: [profiles/thermo.yaml]
        devices:
          t1: {connector: memory, profile: thermo}
          t2: {connector: memory, profile: thermo, points: {temp: {scale: 0.01}, extra: {}}}
    """)
    site = load_site(path, registry)
    assert set(site.devices["t1"].points) == {"temp", "setpoint"}
    assert site.devices["t2"].points["temp"].scale == 0.01
    assert site.devices["t2"].points["temp"].unit == "degC"  # kept from the profile
    assert site.devices["t1"].points["setpoint"].limits.max == 30


def test_unknown_profile_and_invalid_profile_point(tmp_path, registry):
    write(tmp_path, "profile: p1\npoints: {a: {type: float64, acess: rw}}\n", "p1.yaml")
    path = write(tmp_path, """
        site: {id: s}
        profiles: [p1.yaml]
        devices:
          a: {connector: memory, profile: p2}
          b: {connector: memory, profile: p1}
    """)
    with pytest.raises(SiteError) as excinfo:
        load_site(path, registry)
    by_path = {p.path: p for p in problems(excinfo)}
    assert "did you mean 'p1'" in by_path["devices.a.profile"].fix
    assert "did you mean 'access'" in by_path["devices.b.points.a.acess"].fix


def test_durations_and_rates():
    assert parse_duration("500ms") == 0.5
    assert parse_duration("5min") == 300
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration(2) == 2.0
    with pytest.raises(ValueError):
        parse_duration("soon")
    with pytest.raises(ValueError):
        parse_duration(-1)
    assert parse_rate("10/s") == 10
    assert parse_rate("600/min") == 10
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_schema_covers_every_registered_type(registry):
    schema = site_json_schema(registry)
    text = json.dumps(schema)
    assert schema["title"] == "edgeplane site file"
    for name in ("MemoryConnectorDevice", "ReplayConnectorDevice", "ThresholdSolutionEntry"):
        assert name in schema["$defs"], name
    replay = schema["$defs"]["ReplayConnectorDevice"]
    assert "file" in replay["properties"] and replay["additionalProperties"] is False
    assert '"connector"' in text


class _Pages(ConfigModel):
    kind: Literal["page"] = "page"
    size: int = 100


class _Cursor(ConfigModel):
    kind: Literal["cursor"] = "cursor"
    field: str = "next"


class _PagedConfig(DeviceConfig):
    pagination: Annotated[Union[_Pages, _Cursor], Field(discriminator="kind")]  # noqa: UP007 - as plugins write it


class _PagedConnector(Connector[_PagedConfig, PointSpec]):
    async def start(self) -> None:
        pass


class _PagedPlugin:
    __name__ = "paged"

    @hookimpl
    def edgeplane_register_connectors(self, register):
        register("paged", _PagedConnector)


def test_did_you_mean_inside_a_tagged_union(tmp_path):
    # pydantic puts the tag in the error's path (pagination.page.sise): the suggestion must come
    # from the fields of the branch the tag names
    registry = Plugins.load(entry_points=False, extra=[_PagedPlugin()]).registry
    path = write(tmp_path, """
        site: {id: s}
        devices:
          d1: {connector: paged, pagination: {kind: page, sise: 5}}
          d2: {connector: paged, pagination: {kind: cursor, feild: x}}
    """)
    with pytest.raises(SiteError) as excinfo:
        load_site(path, registry)
    fixes = {p.path: p.fix for p in problems(excinfo)}
    assert "did you mean 'size'" in fixes["devices.d1.pagination.page.sise"]
    assert "did you mean 'field'" in fixes["devices.d2.pagination.cursor.feild"]
