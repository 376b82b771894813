"""Item 8 of issue 14: a hostile or broken site file ends in exit 2 and a message, never a
traceback, a hang or a MemoryError (`edgeplane validate` and `edgeplane run` alike)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeplane.cli import main

LAUGHS = "site: {id: lol}\n" + "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10)) + "devices: {d: {connector: memory, points: {x: {value: *l9}}}}\n"

CASES = {
    "billion laughs": (LAUGHS.encode(), "aliases"),
    "duplicate keys": (b"site: {id: twice}\ndevices:\n  m: {connector: memory}\ndevices:\n  n: {connector: memory}\n",
                       "'devices' appears twice"),
    "non-UTF-8 bytes": (b"site: {id: bytes}\n# caf\xe9\ndevices: {}\n", "UTF-8"),
    "5000-deep nesting": (b"site: {id: deep}\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested"),
    "a NUL byte": (b"site: {id: nul}\x00\n", "YAML"),
}


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_hostile_site_file_is_exit_2_with_a_message(tmp_path: Path, case: str, command: str):
    content, fragment = CASES[case]
    path = tmp_path / "site.yaml"
    path.write_bytes(content)
    code, output = run_cli(command, str(path))
    assert code == 2, output
    assert fragment in output, output
    assert "Traceback" not in output
    assert str(path) in output  # names the file


def test_a_duplicate_key_names_both_lines(tmp_path: Path):
    path = tmp_path / "site.yaml"
    path.write_bytes(CASES["duplicate keys"][0])
    code, output = run_cli("validate", str(path))
    assert code == 2 and "line 2" in output and "line 4" in output, output


def test_a_duplicate_key_inside_a_device_is_found_too(tmp_path: Path):
    path = tmp_path / "site.yaml"
    path.write_text("site: {id: twice}\ndevices:\n  m:\n    connector: memory\n    poll: 1s\n    poll: 5s\n")
    code, output = run_cli("validate", str(path))
    assert code == 2 and "'poll' appears twice" in output and "line 5" in output and "line 6" in output, output


def test_merge_keys_are_not_duplicates(tmp_path: Path):
    path = tmp_path / "site.yaml"
    path.write_text("site: {id: merged}\nbase: &base {connector: memory, poll: 1s}\n"
                    "devices:\n  m: {<<: *base, poll: 2s}\n")
    code, output = run_cli("validate", str(path))
    assert "appears twice" not in output, output  # 'base' is an unknown key, which is a different message


def test_a_50_mb_file_is_refused_before_it_is_read(tmp_path: Path):
    path = tmp_path / "site.yaml"
    with path.open("wb") as f:
        f.write(b"site: {id: big}\n")
        f.truncate(50 * 1024 * 1024)
    for command in ("validate", "run"):
        code, output = run_cli(command, str(path))
        assert code == 2 and "MB" in output and "at most" in output, output


def test_a_profile_file_that_is_not_yaml_does_not_show_its_lines(tmp_path: Path):
    # profiles: [/etc/shadow] must not print the file's content into the error (nor, later, the twin)
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$s3cr3tHash:19000:0:99999:7:::\nbob:$6$an0therHash:19000:0:99999:7:::\n")
    path = tmp_path / "site.yaml"
    path.write_text(f"site: {{id: prof}}\nprofiles: [{secret}]\n")
    code, output = run_cli("validate", str(path))
    assert code == 2, output
    assert "s3cr3tHash" not in output and "an0therHash" not in output and "root:" not in output, output
    assert "profiles[0]" in output


@pytest.mark.parametrize(("typo", "key"), [("conector", "connector"), ("connecter", "connector")])
def test_a_typo_in_connector_says_did_you_mean(tmp_path: Path, typo: str, key: str):
    path = tmp_path / "site.yaml"
    path.write_text(f"site: {{id: typo}}\ndevices:\n  m: {{{typo}: memory, points: {{x: {{}}}}}}\n")
    code, output = run_cli("validate", str(path))
    assert code == 2 and f"did you mean '{key}'" in output, output


def test_a_typo_in_a_solution_type_key_says_did_you_mean(tmp_path: Path):
    path = tmp_path / "site.yaml"
    path.write_text("site: {id: typo}\nsolutions:\n  s: {tpye: threshold, points: [a/b], high: 1}\n")
    code, output = run_cli("validate", str(path))
    assert code == 2 and "did you mean 'type'" in output, output
