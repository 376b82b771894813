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
  again (a retained config at every reconnect) is ignored without a refusal. Lost or damaged,
  it is rebuilt from the revisions the twin and ``last-good.json`` record: never lower.

What a desired config may change
================================

A signed overlay is still only data from the network: it may change what an operator tunes
from afar, never what runs, what is read from disk, or who the site is (:func:`overlay_problems`):

* ``limits`` (write guards), whole;
* ``solutions.<name>.<parameter>`` of solutions the local file has, except ``type`` and
  parameters that name local things (files, folders, commands, URLs, networks);
* ``devices.<name>.poll``, ``.enabled`` and ``.points.<point>.limits`` of devices the local file has;
* ``sync.policy``, ``sync.quota``, ``sync.report_interval`` (uplink policies);
* ``inference.per_model``, ``inference.preload``, ``inference.batching`` (model settings; model
  files themselves arrive as signed ``model`` messages).

Never: ``site``, ``simulators`` (commands), ``store``, ``http``, ``clock``, ``log``,
``profiles`` (file paths), ``sync.uplink``/``sync.trust`` (broker, certificates, trusted keys),
adding or removing devices or solutions, and no ``${env:}``/``${file:}`` reference or
absolute/parent path anywhere. The same check runs on ``last-good.json`` at every start, so an
overlay saved by an older version cannot come back.

Bounds: a message over ``max_message_bytes`` is refused unread; at most ``max_queued`` messages
(and ``max_queued_bytes``) wait to be verified, the rest are dropped and counted; refusals of
unauthenticated messages update the twin in memory and reach disk with the next save, and no
refusal text carries more than a few hundred characters of what came in.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import yaml

from edgeplane.sync.signing import DownlinkRefused, verify

__all__ = ["KINDS", "Downlink", "allowed_only", "deep_merge", "overlay_problems", "remote_part", "with_last_good"]

log = logging.getLogger(__name__)

KINDS = ("config", "model", "command")

ApplyConfig = Callable[[dict[str, Any]], Awaitable[Any]]


class ApplyModel(Protocol):
    """What takes a verified model file (the host's ``_apply_model``); ``manifest`` is the model's own
    signed manifest when the fleet sent one."""

    def __call__(self, *, name: str, version: str, path: Path, sha256: str,
                 manifest: dict[str, Any] | None = None) -> Awaitable[Any]: ...


ExecuteCommand = Callable[[str, str, Any], Awaitable[Any]]

_TEXT = 400  # characters of any refusal or error text kept in the twin
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# -- what an overlay may touch ------------------------------------------------------------------

_SYNC_REMOTE = ("policy", "quota", "report_interval")
_INFERENCE_REMOTE = ("per_model", "preload", "batching")
_DEVICE_REMOTE = ("poll", "enabled", "points")
# solution parameters that name something local: a file, a folder, a program, an address
_LOCAL_PARAMETER = re.compile(r"^(type|net|path|file|dir|folder|command|cmd|script|url|host|env|cwd)$"
                              r"|_(path|file|dir|folder|command|cmd|script|url|host)s?$")


def _walk_strings(value: Any, path: str, problems: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{path}: key {str(key)[:40]!r} is not a string")
                continue
            _walk_strings(item, f"{path}.{key}" if path else key, problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk_strings(item, f"{path}[{i}]", problems)
    elif isinstance(value, str):
        if "${" in value:
            problems.append(f"{path}: a '${{...}}' reference (secrets and local files are never sent from the cloud)")
        elif value.startswith(("/", "~", "\\")) or "../" in value or "..\\" in value:
            problems.append(f"{path}: {value[:60]!r} looks like a file path (local paths are set on the site)")


def overlay_problems(overlay: Any, local: dict[str, Any]) -> list[str]:
    """Why a desired-config ``overlay`` may not be applied to the site whose local document is
    ``local`` (empty: it may). See the module docstring for the rules."""
    if not isinstance(overlay, dict):
        return [f"the overlay is a {type(overlay).__name__}, not a mapping"]
    problems: list[str] = []
    _walk_strings(overlay, "", problems)
    allowed = "limits, solutions.<name>.<parameter>, devices.<name>.poll/enabled/points.<point>.limits, " \
              f"sync.{'/'.join(_SYNC_REMOTE)}, inference.{'/'.join(_INFERENCE_REMOTE)}"
    for section, value in overlay.items():
        if section == "limits":
            if value is not None and not isinstance(value, dict):
                problems.append("limits: must be a mapping of '<device>/<point>' patterns")
        elif section in ("solutions", "devices"):
            problems += _entries_problems(section, value, local.get(section) or {})
        elif section in ("sync", "inference"):
            remote = _SYNC_REMOTE if section == "sync" else _INFERENCE_REMOTE
            if not isinstance(value, dict):
                problems.append(f"{section}: only {', '.join(f'{section}.{k}' for k in remote)} may come from the cloud")
                continue
            for key in value:
                if key not in remote:
                    problems.append(f"{section}.{str(key)[:40]}: set on the site only (the cloud may change "
                                    f"{', '.join(f'{section}.{k}' for k in remote)})")
        else:
            problems.append(f"{str(section)[:40]}: a desired config from the cloud may not change this section "
                            f"(allowed: {allowed})")
    return problems


def _entries_problems(section: str, value: Any, local: dict[str, Any]) -> list[str]:
    kind = section[:-1]
    if not isinstance(value, dict):
        return [f"{section}: the cloud may change {kind} settings, not replace or remove the section"]
    problems = []
    for name, entry in value.items():
        where = f"{section}.{str(name)[:40]}"
        if name not in local:
            problems.append(f"{where}: no such {kind} in the site file (the cloud may tune {section}, "
                            f"not add or remove them)")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a mapping of settings (the cloud may not remove a {kind})")
            continue
        for key, item in entry.items():
            if section == "solutions":
                if _LOCAL_PARAMETER.search(str(key)):
                    problems.append(f"{where}.{str(key)[:40]}: names something local (a type, file, folder, command "
                                    f"or address): set on the site only")
            elif key not in _DEVICE_REMOTE:
                problems.append(f"{where}.{str(key)[:40]}: set on the site only (the cloud may change "
                                f"{', '.join(f'{where}.{k}' for k in _DEVICE_REMOTE)})")
            elif key == "points":
                problems += _point_problems(f"{where}.points", item)
    return problems


def _point_problems(where: str, points: Any) -> list[str]:
    if not isinstance(points, dict):
        return [f"{where}: must be a mapping of point names to {{limits: ...}}"]
    problems = []
    for point, spec in points.items():
        if not isinstance(spec, dict) or set(spec) - {"limits"}:
            problems.append(f"{where}.{str(point)[:40]}: the cloud may change a point's 'limits' only")
    return problems


def remote_part(document: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The part of a whole site document that a desired config may carry (see the rules above),
    and the dotted paths left out. Used to push a site file as desired state."""
    out: dict[str, Any] = {}
    left: list[str] = []
    for section, value in document.items():
        if section == "limits":
            out[section] = copy.deepcopy(value)
        elif section in ("solutions", "devices") and isinstance(value, dict):
            entries: dict[str, Any] = {}
            for name, entry in value.items():
                if not isinstance(entry, dict):
                    continue
                kept = {}
                for key, item in entry.items():
                    if section == "solutions" and not _LOCAL_PARAMETER.search(str(key)):
                        kept[key] = copy.deepcopy(item)
                    elif section == "devices" and key in ("poll", "enabled"):
                        kept[key] = copy.deepcopy(item)
                    elif section == "devices" and key == "points" and isinstance(item, dict):
                        limits = {p: {"limits": s["limits"]} for p, s in item.items() if isinstance(s, dict) and "limits" in s}
                        if limits:
                            kept["points"] = copy.deepcopy(limits)
                if kept:
                    entries[name] = kept
            out[section] = entries
        elif section in ("sync", "inference") and isinstance(value, dict):
            remote = _SYNC_REMOTE if section == "sync" else _INFERENCE_REMOTE
            out[section] = {k: copy.deepcopy(v) for k, v in value.items() if k in remote}
            left += [f"{section}.{k}" for k in value if k not in remote]
        else:
            left.append(str(section))
    out, dropped = allowed_only(out, document)
    return out, left + dropped


def allowed_only(overlay: dict[str, Any], local: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``overlay`` without what :func:`overlay_problems` refuses (a reference, a path, a removed
    entry), and the dotted paths dropped."""
    out = copy.deepcopy(overlay)
    dropped: list[str] = []
    for _ in range(8):  # dropping a key can only remove problems; a few rounds settle it
        problems = overlay_problems(out, local)
        if not problems:
            break
        for problem in problems:
            path = problem.split(":", 1)[0]
            _drop(out, path)
            dropped.append(path)
    return out, dropped


def _drop(document: dict[str, Any], dotted: str) -> None:
    parts = re.sub(r"\[\d+\]", "", dotted).split(".")
    node: Any = document
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, dict):
        node.pop(parts[-1], None)


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
    """The local site document with the last successfully applied cloud overlay merged on top.

    An overlay that breaks the rules of :func:`overlay_problems` (saved by an older version, or
    written by hand) is ignored with a warning: the local file runs.
    """
    path = Path(store_dir) / "last-good.json"
    if not path.exists():
        return site
    try:
        overlay = json.loads(path.read_text())["overlay"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        log.warning("ignoring %s (%s): starting from the local site file", path, _bounded(str(e)))
        return site
    problems = overlay_problems(overlay, site)
    if problems:
        log.warning("ignoring %s: it changes what a cloud overlay may not (%s); starting from the local site file",
                    path, _bounded("; ".join(problems)))
        return site
    return deep_merge(site, overlay)


def _bounded(text: str, limit: int = _TEXT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


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
    """Verifies and applies downlink messages; keeps the reported state.

    Messages come in through :meth:`submit` (bounded, on the event loop) and are taken one at a
    time with :meth:`next` and :meth:`handle`.
    """

    def __init__(self, *, site_id: str, store_dir: Path, trusted: dict[str, Any], base_site: dict[str, Any] | None,
                 apply_config: ApplyConfig | None, apply_model: ApplyModel | None,
                 execute_command: ExecuteCommand | None, on_refused: Callable[[str, str], None],
                 max_message_bytes: int = 32 * 1024 * 1024, max_queued: int = 64,
                 max_queued_bytes: int = 64 * 1024 * 1024):
        self.site_id = site_id
        self.store_dir = store_dir
        self.trusted = trusted
        self.base_site = base_site or {}
        self.apply_config = apply_config
        self.apply_model = apply_model
        self.execute_command = execute_command
        self.on_refused = on_refused
        self.max_message_bytes = max_message_bytes
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.twin: dict[str, Any] = self._load("twin.json", {"config": {}, "models": {}, "commands": [], "refused": {}})
        if not isinstance(self.twin, dict):
            self.twin = {}
        for key, empty in (("config", {}), ("models", {}), ("commands", []), ("refused", {})):
            if not isinstance(self.twin.get(key), type(empty)):
                self.twin[key] = empty
        loaded = self._load("revisions.json", {})
        # a damaged file must not stop the downlink; what it held that still parses is kept
        self.revisions: dict[str, dict[str, Any]] = {
            kind: entry for kind, entry in (loaded.items() if isinstance(loaded, dict) else ())
            if isinstance(entry, dict) and type(entry.get("revision")) is int}
        self._raise_to_recorded_revisions()
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._arrived = asyncio.Event()
        self._dirty = False
        self.verified = 0  # messages whose signature verified: what changed the twin for real

    def _raise_to_recorded_revisions(self) -> None:
        """Never below a revision the twin or the last-good config records as accepted.

        ``revisions.json`` is written atomically, but a disk can still lose it or an operator can
        delete it; read alone, that would reopen every old signed message to replay. The twin
        (config, each model, the recent commands) and ``last-good.json`` record the revisions they
        applied, so the floor is the highest any of them holds (an entry whose revision is not an
        integer is ignored, as a damaged ``revisions.json`` entry is).
        """
        recorded: list[tuple[str, Any]] = [("config", self.twin["config"])]
        recorded += [("config", self._load("last-good.json", {}))]
        recorded += [("model", state) for state in self.twin["models"].values()]
        recorded += [("command", result) for result in self.twin["commands"]]
        raised = []
        for kind, state in recorded:
            if not isinstance(state, dict) or type(state.get("revision")) is not int:
                continue
            if state["revision"] > (self.revisions.get(kind) or {"revision": -1})["revision"]:
                self.revisions[kind] = {"revision": state["revision"], "id": state.get("id") or state.get("desired")}
                raised.append(kind)
        if raised:
            log.warning("sync: revisions.json in %s was missing or behind the twin for %s; the highest revisions the "
                        "twin and last-good config record are kept, so no older message can be replayed",
                        self.store_dir, ", ".join(sorted(set(raised))))

    def _load(self, name: str, default: Any) -> Any:
        try:
            return json.loads((self.store_dir / name).read_text())
        except (OSError, ValueError, RecursionError):
            return default

    def _save(self, name: str, value: Any) -> None:
        _write_atomic(self.store_dir / name, json.dumps(value, indent=1, default=str).encode())

    # -- intake -------------------------------------------------------------------------------

    def submit(self, payload: bytes) -> bool:
        """Queue one message from the transport (on the loop); False when it was dropped (counted)."""
        if len(payload) > self.max_message_bytes:
            self.refuse("too_large", f"downlink message of {len(payload)} bytes is over the bound of "
                                     f"{self.max_message_bytes} bytes: dropped unread")
            return False
        if len(self._queue) >= self.max_queued or self._queued_bytes + len(payload) > self.max_queued_bytes:
            self.refuse("flooded", f"more than {self.max_queued} downlink messages "
                                   f"({self._queued_bytes} bytes) wait to be verified: dropped one")
            return False
        self._queue.append(payload)
        self._queued_bytes += len(payload)
        self._arrived.set()
        return True

    @property
    def pending(self) -> int:
        """Messages submitted and not yet taken."""
        return len(self._queue)

    async def next(self) -> bytes:
        """The oldest submitted message (waits for one)."""
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        payload = self._queue.popleft()
        self._queued_bytes -= len(payload)
        return payload

    def flush(self) -> None:
        """Write the twin if refusals changed it since the last save (one write for a burst)."""
        if self._dirty:
            self._save("twin.json", self.twin)
            self._dirty = False

    def refuse(self, reason: str, message: str) -> None:
        """Count a refusal (in the twin and through ``on_refused``); the twin reaches disk at the next save."""
        message = _bounded(message)
        self.twin["refused"][reason] = self.twin["refused"].get(reason, 0) + 1
        self.twin["last_refused"] = {"reason": reason, "message": message}
        self._dirty = True
        self.on_refused(reason, message)

    # -- handling -----------------------------------------------------------------------------

    async def handle(self, payload: bytes, now: float) -> dict[str, Any] | None:
        """Verify and apply one message; returns the message when it was applied (or a command
        carried out), None when it was refused, failed or already handled. Never raises for a
        bad message: every refusal is counted and reported in the twin."""
        if len(payload) > self.max_message_bytes:
            self.refuse("too_large", f"downlink message of {len(payload)} bytes is over the bound of "
                                     f"{self.max_message_bytes} bytes: refused unread")
            return None
        try:
            message = verify(payload, self.trusted, site=self.site_id, now=now)
        except DownlinkRefused as e:
            self.refuse(e.reason, str(e))
            return None
        self.verified += 1
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
            ok = await self._command(message, body, now)
        else:
            # at least once: a crash while applying leaves the revision unstored, the retained message comes again
            ok = await (self._config if kind == "config" else self._model)(message, body, now)
            self._accept(kind, message)
        self._save("twin.json", self.twin)
        self._dirty = False
        return message if ok else None

    def _accept(self, kind: str, message: dict[str, Any]) -> None:
        self.revisions[kind] = {"revision": message["revision"], "id": message["id"]}
        self._save("revisions.json", self.revisions)

    async def _config(self, message: dict[str, Any], body: dict[str, Any], now: float) -> bool:
        overlay = body.get("overlay")
        state = {"desired": message["id"], "revision": message["revision"], "issued": message["issued"], "at": now}
        previous = self.twin["config"]
        if not isinstance(overlay, dict):
            error = "config body has no 'overlay' mapping"
            reason = "invalid"
        elif problems := overlay_problems(overlay, self.base_site):
            error = "not allowed from the cloud: " + "; ".join(problems)
            reason = "not_allowed"
        else:
            merged = deep_merge(self.base_site, overlay)
            try:
                if self.apply_config is not None:
                    await self.apply_config(merged)
            except Exception as e:  # noqa: BLE001 - whatever the apply raised is reported, the site runs on
                error = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
                reason = "invalid"
            else:
                _write_atomic(self.store_dir / "last-good.json",
                              json.dumps({"id": message["id"], "revision": message["revision"], "overlay": overlay}).encode())
                _write_atomic(self.store_dir / "last-good.yaml", yaml.safe_dump(merged, sort_keys=False).encode())
                state.update(status="applied", error=None, applied=message["id"])
                self.twin["config"] = state
                return True
        state.update(status="failed", error=_bounded(error, 2000), applied=previous.get("applied"))
        self.twin["config"] = state
        self.refuse(reason, f"desired config {message['id']} not applied: {error}")
        return False

    async def _model(self, message: dict[str, Any], body: dict[str, Any], now: float) -> bool:
        name, version = str(body.get("name", ""))[:128], str(body.get("version", ""))[:128]
        state: dict[str, Any] = {"desired": version, "id": message["id"], "revision": message["revision"], "at": now}
        previous = self.twin["models"].get(name, {})
        try:
            filename = str(body.get("filename", "model.onnx"))
            if not _PLAIN_NAME.match(name) or not _PLAIN_NAME.match(version) or ".." in name + version:
                raise ValueError("model message needs a plain 'name' and 'version' (letters, digits, '_', '-', '.')")
            if not _PLAIN_NAME.match(filename) or ".." in filename:
                raise ValueError(f"model file name {filename[:60]!r} is not a plain file name")
            if not isinstance(body.get("data"), str):
                raise ValueError("model message has no base64 'data'")
            data = base64.b64decode(body["data"], validate=True)
            digest = hashlib.sha256(data).hexdigest()
            if digest != body.get("sha256"):
                raise ValueError(f"sha256 of model {name} {version} is {digest}, the message says "
                                 f"{str(body.get('sha256'))[:64]}")
            path = self.store_dir / "models" / name / version / filename
            _write_atomic(path, data, 0o644)
            if self.apply_model is not None:
                # the model's own manifest (signed by the model key) when the fleet sent one
                manifest = body["manifest"] if isinstance(body.get("manifest"), dict) else None
                await self.apply_model(name=name, version=version, path=path, sha256=digest, manifest=manifest)
        except Exception as e:  # noqa: BLE001 - the inference service's verify/warm-up errors are reported too
            state.update(status="failed", error=_bounded(f"{type(e).__name__}: {e}"), applied=previous.get("applied"))
            self.twin["models"][name if _PLAIN_NAME.match(name) else "?"] = state
            self.refuse("invalid", f"model {name} {version} not applied: {e}")
            return False
        state.update(status="applied", error=None, applied=version, path=str(path))
        self.twin["models"][name] = state
        models = self._load("models.json", {})
        models[name] = {"version": version, "path": str(path), "sha256": digest}
        self._save("models.json", models)
        return True

    async def _command(self, message: dict[str, Any], body: dict[str, Any], now: float) -> bool:
        result: dict[str, Any] = {"id": message["id"], "revision": message["revision"],
                                  "device": _bounded(str(body.get("device")), 128),
                                  "point": _bounded(str(body.get("point")), 128),
                                  "value": _bounded(repr(body.get("value")), 128), "at": now}
        ok = False
        if message["expires"] is None:
            result.update(status="refused", error="a command must carry an expiry")
            self.refuse("invalid", f"command {message['id']} has no expiry")
        elif not isinstance(body.get("device"), str) or not isinstance(body.get("point"), str):
            result.update(status="refused", error="a command needs 'device' and 'point' strings")
            self.refuse("invalid", f"command {message['id']} has no 'device' and 'point' strings")
        elif self.execute_command is None:
            result.update(status="refused", error="this site takes no cloud commands")
            self.refuse("invalid", f"command {message['id']}: no command path wired")
        else:
            try:
                outcome = await self.execute_command(body["device"], body["point"], body.get("value"))
                status = getattr(outcome, "status", "ok")
                result.update(status=getattr(status, "value", str(status)), detail=_bounded(str(outcome)))
                ok = True
            except Exception as e:  # noqa: BLE001 - reported, never raised into the downlink loop
                result.update(status="failed", error=_bounded(f"{type(e).__name__}: {e}"))
        self.twin["commands"] = (self.twin["commands"] + [result])[-20:]
        return ok
