"""The validated site: the core sections, then each device and solution against its plugin's model.

Every problem is collected, with the file, line, key path and a fix, and raised at once as
:class:`~edgeplane.errors.SiteError`.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ValidationError

from edgeplane.config.base import DeviceConfig, PointLimits, Profile, SolutionConfig
from edgeplane.config.redaction import SecretRedactor, resolve_secrets
from edgeplane.config.sections import CoreSite
from edgeplane.config.yamlfile import LineMap, read_yaml_file
from edgeplane.errors import SiteError, SiteProblem

if TYPE_CHECKING:
    from edgeplane.plugins import Registry

__all__ = ["Site", "load_site", "parse_site"]


@dataclass
class Site:
    """A site file, validated against the core and every plugin it uses."""

    core: CoreSite
    devices: dict[str, DeviceConfig]
    solutions: dict[str, SolutionConfig]
    profiles: dict[str, Profile]
    source: str | None
    base_dir: Path
    raw: dict[str, Any] = field(repr=False)
    redactor: SecretRedactor = field(default_factory=SecretRedactor, repr=False)

    @property
    def id(self) -> str:
        return self.core.site.id

    @property
    def limits(self) -> dict[str, PointLimits]:
        return self.core.limits

    def store_dir(self) -> Path:
        """Folder for the local store; relative paths are relative to the site file."""
        if self.core.store.path:
            return (self.base_dir / self.core.store.path).expanduser()
        root = Path(os.environ.get("EDGEPLANE_DATA_DIR", Path.home() / ".local" / "state" / "edgeplane"))
        return root / self.id


class _Problems:
    """Collects problems, attaching file and line from the YAML line map."""

    def __init__(self, file: str | None, lines: LineMap, redactor: SecretRedactor):
        self.file = file
        self.lines = lines
        self.redactor = redactor
        self.items: list[SiteProblem] = []

    def add(self, loc: tuple[Any, ...], message: str, fix: str | None = None, file: str | None = None,
            lines: LineMap | None = None) -> None:
        lines = self.lines if lines is None else lines
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        self.items.append(
            SiteProblem(
                path=_dotted(loc),
                message=self.redactor.redact(message),
                file=file or self.file,
                line=line,
                fix=self.redactor.redact(fix) if fix else None,
            )
        )

    def add_validation(self, error: ValidationError, prefix: tuple[Any, ...], model: type[BaseModel],
                       file: str | None = None, lines: LineMap | None = None) -> None:
        for item in error.errors(include_url=False):
            loc = tuple(item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            fix = None
            if item["type"] == "extra_forbidden":
                known = _fields_at(model, loc[:-1])
                close = difflib.get_close_matches(str(loc[-1]), known, n=1)
                message = f"unknown key {str(loc[-1])[:60]!r}"
                if close:
                    fix = f"did you mean {close[0]!r}?"
                elif known:
                    fix = f"remove it; known keys here: {', '.join(sorted(known))}"
            elif item["type"] == "missing":
                message = "required key is missing"
                fix = f"add '{loc[-1]}:'"
            else:
                given = item.get("input")
                if isinstance(given, (str, int, float, bool)) and not isinstance(given, dict):
                    shown = repr(given)
                    message += f" (got {shown if len(shown) <= 80 else shown[:80] + '...'})"
            self.add(prefix + loc, message, fix, file=file, lines=lines)


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional/Union down to the first model (or the bare type)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = typing.get_args(annotation)
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = models[0] if models else next(a for a in args if a is not type(None))
        else:
            return annotation


def _tagged_member(annotation: Any, tag: Any) -> type[BaseModel] | None:
    """In a tagged union of models, the member whose Literal tag is ``tag`` (pydantic puts the
    tag into an error's location), else None."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        return None
    for member in typing.get_args(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            for info in member.model_fields.values():
                if typing.get_origin(info.annotation) is Literal and tag in typing.get_args(info.annotation):
                    return member
    return None


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names (and aliases) of the model reached by walking ``loc`` from ``model``."""
    current = model
    for part in loc:
        member = _tagged_member(current, part)
        if member is not None:
            current = member  # the tag names the branch; the next part is one of its fields
            continue
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part)
            if info is None:
                return []
            current = info.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) in (list, tuple):
            current = typing.get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return []


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known: {', '.join(sorted(known))}" if known else "no plugin registers any; install one"


def _load_profiles(paths: list[str], base: Path, registry: Registry, problems: _Problems,
                   redactor: SecretRedactor) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {p.profile: p for p in registry.profiles.values()}
    for i, rel in enumerate(paths):
        path = (base / rel).expanduser()
        try:
            data, lines = read_yaml_file(path)
        except SiteError as e:
            for p in e.problems:
                where = f"profile {str(path)!r}{f' line {p.line}' if p.line else ''}: "
                problems.add(("profiles", i), p.message if str(path) in p.message else where + p.message, p.fix)
            continue
        docs = data if isinstance(data, list) else [data]
        for j, doc in enumerate(docs):
            if not isinstance(doc, dict) or not {"profile", "points"} & set(doc):
                # never quote it: a wrong path (or a hostile one) must not print another file's lines
                what = "a mapping without 'profile:' or 'points:'" if isinstance(doc, dict) else f"a {type(doc).__name__}"
                problems.add(("profiles", i), f"{str(path)!r} is not a device profile: it holds {what}",
                             "give the path of a profile file (a mapping with 'profile:' and 'points:')")
                continue
            try:
                profile = Profile.model_validate(doc)
            except ValidationError as e:
                problems.add_validation(e, (j,) if isinstance(data, list) else (), Profile, file=str(path), lines=lines)
                continue
            profile.source = str(path)
            profiles[profile.profile] = profile
    return profiles


def parse_site(data: Any, registry: Registry, *, source: str | None = None, base_dir: Path | None = None,
               lines: LineMap | None = None) -> Site:
    """Validate an already-parsed site document against the core and the plugins in ``registry``."""
    base = base_dir or Path.cwd()
    redactor = SecretRedactor()
    problems = _Problems(source, lines or {}, redactor)
    if not isinstance(data, dict):
        problems.add((), "a site file must be a mapping with at least a 'site:' section",
                     "start the file with:  site: {id: my-site}")
        raise SiteError(problems.items)

    secret_problems: list[tuple[str, str, str]] = []
    resolved = resolve_secrets(data, "", base, redactor, secret_problems)
    for path, message, fix in secret_problems:
        problems.add(tuple(int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", path) if p), message, fix)

    try:
        # the registered transports validate sync.uplink, each with its own config model
        core = CoreSite.model_validate(resolved, context={"transports": registry.transports})
    except ValidationError as e:
        problems.add_validation(e, (), CoreSite)
        raise SiteError(problems.items) from None

    profiles = _load_profiles(core.profiles, base, registry, problems, redactor)

    devices: dict[str, DeviceConfig] = {}
    for name, entry in core.devices.items():
        loc = ("devices", name)
        kind = entry.get("connector")
        if not kind:
            typo = difflib.get_close_matches("connector", [str(k) for k in entry], n=1, cutoff=0.7)
            if typo:
                problems.add(loc + (typo[0],), f"unknown key {typo[0]!r}; the device has no 'connector:'",
                             "did you mean 'connector'?")
            else:
                problems.add(loc, "device has no 'connector:'",
                             f"add e.g. 'connector: {next(iter(registry.connectors), 'modbus')}'")
            continue
        if not isinstance(kind, str):
            problems.add(loc + ("connector",), f"'connector' must be the name of a connector type, got "
                         f"{type(kind).__name__}", f"write e.g. 'connector: {next(iter(registry.connectors), 'modbus')}'")
            continue
        connector_cls = registry.connectors.get(kind)
        if connector_cls is None:
            problems.add(loc + ("connector",), f"unknown connector type {kind!r}", registry.explain_missing("connector", kind))
            continue
        entry = dict(entry)
        points: dict[str, Any] = {}
        profile_name = entry.get("profile")
        if profile_name is not None:
            profile = profiles.get(profile_name)
            if profile is None:
                problems.add(loc + ("profile",), f"unknown profile {profile_name!r}", _suggest(str(profile_name), list(profiles)))
                continue
            if profile.connector and profile.connector != kind:
                problems.add(loc + ("profile",),
                             f"profile {profile_name!r} is for connector {profile.connector!r}, not {kind!r}",
                             "use a profile made for this connector")
                continue
            points.update({k: dict(v or {}) for k, v in profile.points.items()})
        own_points = entry.get("points") or {}
        if not isinstance(own_points, dict):
            problems.add(loc + ("points",), f"'points' must be a mapping of point names to settings, got "
                         f"{type(own_points).__name__}", "write e.g. 'points: {power: {type: float32}}'")
            continue
        bad = [name for name, spec in own_points.items() if spec is not None and not isinstance(spec, dict)]
        for point_name in bad:
            problems.add(loc + ("points", point_name), f"point {str(point_name)[:60]!r} must be a mapping of settings, "
                         f"got {type(own_points[point_name]).__name__}", "write e.g. '{type: float32, unit: W}'")
        if bad:
            continue
        for point_name, spec in own_points.items():
            # a device's own entry for a point refines the profile's (e.g. a different scale)
            points[point_name] = {**points.get(point_name, {}), **(spec or {})}
        entry["points"] = points
        model = registry.device_model(kind)
        try:
            devices[name] = model.model_validate(entry)
        except ValidationError as e:
            problems.add_validation(e, loc, model)

    solutions: dict[str, SolutionConfig] = {}
    for name, entry in core.solutions.items():
        loc = ("solutions", name)
        kind = entry.get("type")
        if not kind:
            typo = difflib.get_close_matches("type", [str(k) for k in entry], n=1, cutoff=0.6)
            if typo:
                problems.add(loc + (typo[0],), f"unknown key {typo[0]!r}; the solution has no 'type:'", "did you mean 'type'?")
            else:
                problems.add(loc, "solution has no 'type:'",
                             f"add e.g. 'type: {next(iter(registry.solutions), 'threshold')}'")
            continue
        if not isinstance(kind, str):
            problems.add(loc + ("type",), f"'type' must be the name of a solution type, got {type(kind).__name__}",
                         f"write e.g. 'type: {next(iter(registry.solutions), 'threshold')}'")
            continue
        if kind not in registry.solutions:
            problems.add(loc + ("type",), f"unknown solution type {kind!r}", registry.explain_missing("solution", kind))
            continue
        solution_model = registry.solution_model(kind)
        try:
            solutions[name] = solution_model.model_validate(entry)
        except ValidationError as e:
            problems.add_validation(e, loc, solution_model)

    for pattern in core.limits:
        if "/" not in pattern:
            problems.add(("limits", pattern), f"limit key {pattern!r} is not a '<device>/<point>' pattern",
                         "write e.g. 'inv*/WMaxLimPct'")

    if problems.items:
        raise SiteError(problems.items)
    return Site(core=core, devices=devices, solutions=solutions, profiles=profiles, source=source,
                base_dir=base, raw=data, redactor=redactor)


def load_site(path: str | os.PathLike[str], registry: Registry) -> Site:
    """Read and validate a site file; raises :class:`SiteError` listing every problem."""
    path = Path(path)
    data, lines = read_yaml_file(path)
    return parse_site(data, registry, source=str(path), base_dir=path.parent.resolve(), lines=lines)
