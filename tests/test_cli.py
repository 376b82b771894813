"""The core CLI: validate (exit 2, no traceback), schema, run with a broken site."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from edgeplane.cli import default_site_path, main

BROKEN = """\
site: {id: s}
devices:
  m1:
    connector: memory
    pol: 1s
"""


def test_validate_ok_and_broken(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(default_site_path())])
    assert result.exit_code == 0 and "valid: site 'demo'" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    result = runner.invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:5: devices.m1.pol: unknown key 'pol'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["validate", "--json", str(bad)])
    assert result.exit_code == 2 and json.loads(result.output)["problems"][0]["fix"] == "did you mean 'poll'?"


def test_run_with_a_broken_site_exits_2_with_one_clear_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    proc = subprocess.run([sys.executable, "-m", "edgeplane.cli", "run", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown key 'pol'" in proc.stderr and "Traceback" not in proc.stderr


def test_schema_is_json_for_editors(tmp_path):
    out = tmp_path / "schema.json"
    result = CliRunner().invoke(main, ["schema", "-o", str(out)])
    assert result.exit_code == 0
    schema = json.loads(out.read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"site", "devices", "solutions", "limits"} <= set(schema["properties"])
