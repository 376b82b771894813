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


def test_sighup_applies_a_changed_site_file_and_keeps_running_on_a_bad_one(tmp_path):
    import os
    import signal

    site = tmp_path / "site.yaml"
    site.write_text("site: {id: hup}\ndevices:\n  a: {connector: memory, points: {x: {value: 1}}}\n")
    env = {**os.environ, "EDGEPLANE_DATA_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "edgeplane.cli", "run", str(site), "--log-format", "json"],
                            stderr=subprocess.PIPE, text=True, env=env)

    def wait_for_message(fragment):
        for line in proc.stderr:
            message = json.loads(line)["message"]
            if fragment in message:
                return message
        raise AssertionError(f"process ended before logging {fragment!r}")

    try:
        wait_for_message("running")
        site.write_text("site: {id: hup}\ndevices:\n  a: {connector: memory, points: {x: {value: 1}}}\n"
                        "  b: {connector: memory, points: {y: {value: 2}}}\n")
        proc.send_signal(signal.SIGHUP)
        message = wait_for_message("site reloaded")
        assert "added 1" in message and "kept 1" in message
        site.write_text("site: {id: hup}\ndevices:\n  a: {connector: memroy}\n")
        proc.send_signal(signal.SIGHUP)
        message = wait_for_message("invalid")
        assert "still running the previous version" in message and "did you mean 'memory'" in message
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
