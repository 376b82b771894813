"""Item 4 of issue 14: a replayed signed message (even after many newer ones) cannot roll a site back.

Every signed downlink payload carries an integer ``revision``; the site keeps, per kind, the
highest revision it has accepted, on disk, and refuses anything not above it ("replayed").
"""

from __future__ import annotations

import json
import base64
from pathlib import Path
from typing import Any

import pytest

from edgeplane.sync.downlink import Downlink
from edgeplane.sync.signing import generate_keypair, key_id, load_private_key, load_public_key, sign, verify


@pytest.fixture
def signer(tmp_path: Path):
    private, public = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(private, public)
    key = load_public_key(public)
    return load_private_key(private), {key_id(key): key}


def make_downlink(store: Path, trusted: dict[str, Any], applied: list[dict], refused: list[str]) -> Downlink:
    async def apply_config(site: dict) -> None:
        applied.append(site)

    return Downlink(site_id="plant-1", store_dir=store, trusted=trusted, base_site={"site": {"id": "plant-1"}},
                    apply_config=apply_config, apply_model=None, execute_command=None,
                    on_refused=lambda reason, message: refused.append(reason))


def test_sign_puts_the_revision_in_the_signed_payload(signer):
    private, trusted = signer
    data = sign(private, site="plant-1", kind="config", body={"overlay": {}}, revision=7)
    payload = json.loads(base64.b64decode(json.loads(data)["payload"]))
    assert payload["revision"] == 7
    assert verify(data, trusted, site="plant-1", now=0.0)["revision"] == 7


async def test_an_old_config_replayed_after_600_newer_ones_is_refused(signer, tmp_path: Path):
    private, trusted = signer
    applied: list[dict] = []
    refused: list[str] = []
    downlink = make_downlink(tmp_path / "site", trusted, applied, refused)
    old = sign(private, site="plant-1", kind="config", body={"overlay": {"limits": {"a/b": {"max": 10}}}}, revision=1)
    assert await downlink.handle(old, now=0.0) is not None
    # more than the 500 ids the site used to remember
    for revision in range(2, 602):
        body = {"overlay": {"limits": {"a/b": {"max": 100 + revision}}}}
        assert await downlink.handle(sign(private, site="plant-1", kind="config", body=body, revision=revision), 0.0)
    count = len(applied)
    assert await downlink.handle(old, now=0.0) is None
    assert len(applied) == count
    assert refused == ["replayed"]
    assert downlink.twin["refused"]["replayed"] == 1


async def test_the_highest_revision_survives_a_restart(signer, tmp_path: Path):
    private, trusted = signer
    applied: list[dict] = []
    refused: list[str] = []
    first = make_downlink(tmp_path / "site", trusted, applied, refused)
    old = sign(private, site="plant-1", kind="config", body={"overlay": {}}, revision=10)
    new = sign(private, site="plant-1", kind="config", body={"overlay": {}}, revision=11)
    assert await first.handle(old, 0.0) and await first.handle(new, 0.0)
    again = make_downlink(tmp_path / "site", trusted, applied, refused)
    assert await again.handle(old, 0.0) is None
    assert refused == ["replayed"]


async def test_revisions_are_per_kind_and_the_same_message_redelivered_is_not_a_refusal(signer, tmp_path: Path):
    private, trusted = signer
    applied: list[dict] = []
    refused: list[str] = []
    downlink = make_downlink(tmp_path / "site", trusted, applied, refused)
    config = sign(private, site="plant-1", kind="config", body={"overlay": {}}, revision=50)
    assert await downlink.handle(config, 0.0)
    # a retained config comes again at every reconnect: ignored, not counted as an attack
    assert await downlink.handle(config, 0.0) is None
    assert refused == [] and len(applied) == 1
    # a command at a lower revision than the config is fine: each kind has its own counter
    command = sign(private, site="plant-1", kind="command", body={"device": "d", "point": "p", "value": 1},
                   revision=3, ttl=60)
    await downlink.handle(command, 0.0)
    assert "replayed" not in refused


@pytest.mark.parametrize("revision", [None, "5", 1.5, True, -1])
async def test_a_signed_message_without_an_integer_revision_is_refused(signer, tmp_path: Path, revision):
    private, trusted = signer
    applied: list[dict] = []
    refused: list[str] = []
    downlink = make_downlink(tmp_path / "site", trusted, applied, refused)
    payload = json.dumps({"id": "x1", "site": "plant-1", "kind": "config", "issued": 0.0, "expires": None,
                          "revision": revision, "body": {"overlay": {}}}).encode()
    data = json.dumps({"v": 1, "key": next(iter(trusted)), "payload": base64.b64encode(payload).decode(),
                       "sig": base64.b64encode(private.sign(payload)).decode()}).encode()
    assert await downlink.handle(data, 0.0) is None
    assert refused == ["malformed"] and applied == []


@pytest.mark.parametrize("content", ['[1, 2]', '{"config": 5}', '{"config": {"revision": "9"}}', 'not json'])
async def test_a_damaged_revisions_file_does_not_stop_the_downlink(signer, tmp_path: Path, content: str):
    private, trusted = signer
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "revisions.json").write_text(content)
    applied: list[dict] = []
    downlink = make_downlink(tmp_path / "site", trusted, applied, [])
    assert await downlink.handle(sign(private, site="plant-1", kind="config", body={"overlay": {}}, revision=1), 0.0)
    assert json.loads((tmp_path / "site" / "revisions.json").read_text())["config"]["revision"] == 1


@pytest.mark.parametrize("damage", ["not json", "deleted", '{"config": {"revision": "9"}}'])
async def test_a_lost_revisions_file_does_not_reopen_replay(signer, tmp_path: Path, damage: str):
    """The twin and the last-good config record the revisions they applied: losing revisions.json
    (a disk error, an operator's rm) must not let an old signed config or command roll the site back."""
    private, trusted = signer
    store = tmp_path / "site"
    first = make_downlink(store, trusted, [], [])
    old = sign(private, site="plant-1", kind="config", body={"overlay": {"limits": {"a/b": {"max": 1}}}}, revision=3)
    current = sign(private, site="plant-1", kind="config", body={"overlay": {"limits": {"a/b": {"max": 2}}}}, revision=5)
    assert await first.handle(old, 0.0) and await first.handle(current, 0.0)
    if damage == "deleted":
        (store / "revisions.json").unlink()
    else:
        (store / "revisions.json").write_text(damage)
    applied: list[dict] = []
    refused: list[str] = []
    again = make_downlink(store, trusted, applied, refused)
    assert await again.handle(old, 0.0) is None
    assert refused == ["replayed"]
    assert await again.handle(current, 0.0) is None  # the retained current one, delivered again: no refusal
    assert refused == ["replayed"] and applied == []
    newer = sign(private, site="plant-1", kind="config", body={"overlay": {}}, revision=6)
    assert await again.handle(newer, 0.0) is not None
    assert len(applied) == 1
