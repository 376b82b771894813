"""The Grafana dashboard charts metrics that exist, with queries Grafana can import."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "configs" / "grafana-dashboard.json"


def metric_names_in_sources() -> set[str]:
    names = set()
    for folder in ("platform/edgeplane", "connectors"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"[\"'](edgeplane_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def test_every_charted_metric_is_defined_by_the_host_or_a_connector():
    dashboard = json.loads(DASHBOARD.read_text())
    known = metric_names_in_sources()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    charted = {m for e in exprs for m in re.findall(r"\b(edgeplane_[a-z0-9_]+)", e)}
    for name in charted:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        candidates = {base, base.removesuffix("_total")}
        assert candidates & known, f"{name}: no such metric in platform/ or connectors/ (renamed?)"
    # the README's list of core metrics is charted too
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Metrics and health", 1)[1].split("##", 1)[0]
    for name in re.findall(r"`(edgeplane_[a-z_]+)", section):
        assert name in charted, f"{name} (README) is not on the dashboard"


def test_panels_are_well_formed_and_use_the_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["description"], f"{panel['title']}: say what the panel shows"
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], f"{panel['title']}: filter by the instance variable"
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
