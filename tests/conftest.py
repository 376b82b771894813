"""Shared helpers for the cross-plugin tests. The host fixtures come from edgeplane.testing."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    # a test never writes into the user's real state folder
    monkeypatch.setenv("EDGEPLANE_DATA_DIR", str(tmp_path / "state"))
    # nor the operator's keys (lab CA, downlink signing key: never in a site folder)
    monkeypatch.setenv("EDGEPLANE_OPERATOR_DIR", str(tmp_path / "operator"))
    monkeypatch.delenv("EDGEPLANE_PLUGINS", raising=False)
    monkeypatch.delenv("EDGEPLANE_DISABLE_PLUGINS", raising=False)
