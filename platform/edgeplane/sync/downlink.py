"""Downlink: signed desired config, model versions and commands; the twin; the last-good config.

Files in the sync store folder:

* ``last-good.json``: the desired-config overlay last applied successfully (with its message id);
  :func:`with_last_good` merges it onto a local site document, so a host restarted with no
  network runs what the cloud last asked for;
* ``last-good.yaml``: the merged site as applied, for people to read;
* ``models/<name>/<version>/<file>`` and ``models.json``: verified model files and the versions
  in use;
* ``twin.json``: the reported state (desired vs reported, with errors), also published retained
  on ``<prefix>/<site>/up/state``;
* ``revisions.json``: per kind (config, model, command) the highest revision accepted and that
  message's id. A message whose revision is not above it is refused as ``replayed`` (an old
  signed message cannot roll a site back, however many came since); the same message delivered
  again (a retained config at every reconnect) is ignored without a refusal.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable

import yaml

from edgeplane.errors import SiteError
from edgeplane.sync.signing import DownlinkRefused, verify

__all__ = ["KINDS", "Downlink", "deep_merge", "with_last_good"]

KINDS = ("config", "model", "command")

log = logging.getLogger(__name__)

ApplyConfig = Callable[[dict[str, Any]], Awaitable[Any]]
ApplyModel = Callable[..., Awaitable[Any]]
ExecuteCommand = Callable[[str, str, Any], Awaitable[Any]]


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` onto ``base``: mappings merge, other values replace, ``None`` deletes a key."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_last_good(site: dict[str, Any], store_dir: str | Path) -> dict[str, Any]:
    """The local site document with the last successfully applied cloud overlay merged on top."""
    path = Path(store_dir) / "last-good.json"
    if not path.exists():
        return site
    try:
        overlay = json.loads(path.read_text())["overlay"]
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring %s (%s): starting from the local site file", path, e)
        return site
    return deep_merge(site, overlay)


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write, fsync, rename: a reader (or a power cut) sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Downlink:
    """Verifies and applies downlink messages; keeps the reported state."""

    def __init__(self, *, site_id: str, store_dir: Path, trusted: dict[str, Any], base_site: dict[str, Any] | None,
                 apply_config: ApplyConfig | None, apply_model: ApplyModel | None,
                 execute_command: ExecuteCommand | None, on_refused: Callable[[str, str], None]):
        self.site_id = site_id
        self.store_dir = store_dir
        self.trusted = trusted
        self.base_site = base_site or {}
        self.apply_config = apply_config
        self.apply_model = apply_model
        self.execute_command = execute_command
        self.on_refused = on_refused
        self.twin: dict[str, Any] = self._load("twin.json", {"config": {}, "models": {}, "commands": [], "refused": {}})
        self.revisions: dict[str, dict[str, Any]] = self._load("revisions.json", {})

    def _load(self, name: str, default: Any) -> Any:
        try:
            return json.loads((self.store_dir / name).read_text())
        except (OSError, ValueError):
            return default

    def _save(self, name: str, value: Any) -> None:
        _write_atomic(self.store_dir / name, json.dumps(value, indent=1, default=str).encode())

    def refuse(self, reason: str, message: str) -> None:
        self.twin["refused"][reason] = self.twin["refused"].get(reason, 0) + 1
        self.twin["last_refused"] = {"reason": reason, "message": message}
        self._save("twin.json", self.twin)
        self.on_refused(reason, message)

    async def handle(self, payload: bytes, now: float) -> dict[str, Any] | None:
        """Verify and apply one message; returns the message, or None when it was refused or seen."""
        try:
            message = verify(payload, self.trusted, site=self.site_id, now=now)
        except DownlinkRefused as e:
            self.refuse(e.reason, str(e))
            return None
        kind, body = message["kind"], message["body"]
        if kind not in KINDS:
            self.refuse("invalid", f"downlink message {message['id']} has unknown kind {kind[:32]!r} "
                                   f"(known: {', '.join(KINDS)})")
            return None
        last = self.revisions.get(kind) or {"revision": -1, "id": None}
        if message["revision"] <= last["revision"]:
            if message["revision"] == last["revision"] and message["id"] == last["id"]:
                return None  # retained or re-delivered: already handled
            self.refuse("replayed", f"downlink {kind} {message['id']} has revision {message['revision']}, not above "
                                    f"{last['revision']} (the last {kind} accepted): an old message, refused")
            return None
        if kind == "command":
            # at most once: the revision is stored before the write, so a crash cannot run it twice
            self._accept(kind, message)
            await self._command(message, body, now)
        else:
            # at least once: a crash while applying leaves the revision unstored, the retained message comes again
            await (self._config if kind == "config" else self._model)(message, body, now)
            self._accept(kind, message)
        self._save("twin.json", self.twin)
        return message

    def _accept(self, kind: str, message: dict[str, Any]) -> None:
        self.revisions[kind] = {"revision": message["revision"], "id": message["id"]}
        self._save("revisions.json", self.revisions)

    async def _config(self, message: dict[str, Any], body: dict[str, Any], now: float) -> None:
        overlay = body.get("overlay")
        state = {"desired": message["id"], "issued": message["issued"], "at": now}
        previous = self.twin["config"]
        if not isinstance(overlay, dict):
            state.update(status="failed", error="config body has no 'overlay' mapping", applied=previous.get("applied"))
            self.twin["config"] = state
            self.refuse("invalid", state["error"])
            return
        merged = deep_merge(self.base_site, overlay)
        try:
            if (merged.get("site") or {}).get("id", self.site_id) != self.site_id:
                raise ValueError(f"a desired config cannot change the site id to {merged['site']['id']!r}")
            if self.apply_config is not None:
                await self.apply_config(merged)
        except (SiteError, ValueError) as e:
            state.update(status="failed", error=str(e), applied=previous.get("applied"))
            self.twin["config"] = state
            self.refuse("invalid", f"desired config {message['id']} not applied: {e}")
            return
        _write_atomic(self.store_dir / "last-good.json", json.dumps({"id": message["id"], "overlay": overlay}).encode())
        _write_atomic(self.store_dir / "last-good.yaml", yaml.safe_dump(merged, sort_keys=False).encode())
        state.update(status="applied", error=None, applied=message["id"])
        self.twin["config"] = state

    async def _model(self, message: dict[str, Any], body: dict[str, Any], now: float) -> None:
        name, version = str(body.get("name", "")), str(body.get("version", ""))
        state: dict[str, Any] = {"desired": version, "id": message["id"], "at": now}
        previous = self.twin["models"].get(name, {})
        try:
            if not name or not version or "/" in name + version or ".." in name + version:
                raise ValueError("model message needs a plain 'name' and 'version'")
            data = base64.b64decode(body["data"], validate=True)
            digest = hashlib.sha256(data).hexdigest()
            if digest != body.get("sha256"):
                raise ValueError(f"sha256 of model {name} {version} is {digest}, the message says {body.get('sha256')}")
            path = self.store_dir / "models" / name / version / str(body.get("filename", "model.onnx")).replace("/", "_")
            _write_atomic(path, data, 0o644)
            if self.apply_model is not None:
                await self.apply_model(name=name, version=version, path=path, sha256=digest)
        except Exception as e:  # noqa: BLE001 - the inference service's verify/warm-up errors are reported too
            state.update(status="failed", error=f"{type(e).__name__}: {e}", applied=previous.get("applied"))
            self.twin["models"][name or "?"] = state
            self.refuse("invalid", f"model {name} {version} not applied: {e}")
            return
        state.update(status="applied", error=None, applied=version, path=str(path))
        self.twin["models"][name] = state
        models = self._load("models.json", {})
        models[name] = {"version": version, "path": str(path), "sha256": digest}
        self._save("models.json", models)

    async def _command(self, message: dict[str, Any], body: dict[str, Any], now: float) -> None:
        result: dict[str, Any] = {"id": message["id"], "device": body.get("device"), "point": body.get("point"),
                                  "value": body.get("value"), "at": now}
        if message.get("expires") is None:
            result.update(status="refused", error="a command must carry an expiry")
            self.refuse("invalid", f"command {message['id']} has no expiry")
        elif self.execute_command is None:
            result.update(status="refused", error="this site takes no cloud commands")
            self.refuse("invalid", f"command {message['id']}: no command path wired")
        else:
            try:
                outcome = await self.execute_command(str(body["device"]), str(body["point"]), body.get("value"))
                status = getattr(outcome, "status", "ok")
                result.update(status=getattr(status, "value", str(status)), detail=str(outcome))
            except Exception as e:  # noqa: BLE001 - reported, never raised into the downlink loop
                result.update(status="failed", error=f"{type(e).__name__}: {e}")
        self.twin["commands"] = (self.twin["commands"] + [result])[-20:]
