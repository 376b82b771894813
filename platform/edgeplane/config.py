"""Site files: loading, secret references, device profiles and validation as a whole.

A site file is YAML. It is validated completely before anything starts: the core sections by
the models here, each device by its connector's config and point models, each solution by its
solution's config model (all pydantic, ``extra="forbid"``). Every problem is reported at once,
with the file, line, key path and a fix (:class:`~edgeplane.errors.SiteError`).

Secrets are written by reference, ``${env:NAME}`` or ``${file:PATH}``, resolved at load time and
redacted from every log line, error and report (:class:`SecretRedactor`).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
import types
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from edgeplane.errors import SecretError, SiteError, SiteProblem

if TYPE_CHECKING:
    from edgeplane.plugins import Registry

__all__ = [
    "ClockConfig",
    "ConfigModel",
    "DeviceConfig",
    "Duration",
    "HttpConfig",
    "LogConfig",
    "PointLimits",
    "PointSpec",
    "Profile",
    "Rate",
    "SecretRedactor",
    "Site",
    "SiteInfo",
    "SolutionConfig",
    "StoreConfig",
    "load_site",
    "parse_duration",
    "parse_site",
    "read_yaml_file",
    "site_json_schema",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# value types shared by every plugin's config model

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h|d)?\s*$")


def parse_duration(value: Any) -> float:
    """``1s``, ``500ms``, ``5min``, ``4h``, ``30d`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '500ms', '5min', '30d'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration: write a number of seconds or e.g. '500ms', '5min', '30d'")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative (got {value!r})")
    return seconds


def parse_rate(value: Any) -> float:
    """``10/s``, ``600/min``, ``5%/min`` (kept as percent) or a number per second, as per second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and "/" in value:
        amount, _, per = value.partition("/")
        amount = amount.strip().rstrip("%")
        try:
            return float(amount) / parse_duration("1" + per.strip() if per.strip()[0].isalpha() else per)
        except (ValueError, IndexError):
            pass
    raise ValueError(f"{value!r} is not a rate: write e.g. '10/s', '600/min' or a number per second")


_duration_schema = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _DURATION_RE.pattern}]}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_duration_schema)]
"""Seconds, written in a site file as a number or as ``500ms``, ``1s``, ``5min``, ``4h``, ``30d``."""

Rate = Annotated[
    float,
    BeforeValidator(parse_rate),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\s*[\d.]+%?\s*/\s*\w+\s*$"}]}),
]
"""Units per second, written as a number or as ``10/s``, ``600/min``."""


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys are errors (with a "did you mean")."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


_Model = ConfigModel

# the inference section imports Duration from here, so it comes after it
from edgeplane.inference.settings import InferenceConfig  # noqa: E402
from edgeplane.sync.settings import SyncConfig, UplinkConfig  # noqa: E402
from edgeplane.console.settings import ConsoleConfig  # noqa: E402


# ---------------------------------------------------------------------------------------------
# points, devices, solutions: the base classes that plugins extend

PointType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "auto"]


class PointLimits(_Model):
    """Guards on writes to a point, enforced before any connector writes.

    With ``min``, ``max`` or ``max_rate`` set, a write must be a finite number (not a bool, not a
    string), whatever the point's type. NaN and infinities are refused on every point unless one
    of its limits says ``allow_non_finite: true``. A limit itself must be finite: ``.nan`` or
    ``.inf`` would switch the guard off.
    """

    min: float | None = Field(None, allow_inf_nan=False, description="smallest value a write may carry (finite)")
    max: float | None = Field(None, allow_inf_nan=False, description="largest value a write may carry (finite)")
    max_rate: Rate | None = Field(None, gt=0, allow_inf_nan=False,
                                  description="largest change per second between two commanded values")
    allowed: list[float | str | bool] | None = Field(None, description="the only values a write may carry")
    allow_non_finite: bool = Field(False, description="NaN and infinities may be written (a device's 'no limit' sentinel)")

    @model_validator(mode="after")
    def _min_below_max(self) -> PointLimits:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}): swap them")
        return self


class PointSpec(_Model):
    """One point of a device: what it is, how raw values become engineering values, who may write.

    Connectors subclass it with their address fields (a Modbus register, an OPC UA NodeId).
    The engineering value is ``raw * scale + offset``.
    """

    type: PointType = "auto"
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    access: Literal["r", "rw", "w"] = "r"
    limits: PointLimits | None = None
    description: str | None = None

    @property
    def writable(self) -> bool:
        return self.access in ("rw", "w")


class DeviceConfig(_Model):
    """A device entry in the site file. Connectors subclass it with their link fields."""

    connector: str = Field(description="connector type that talks to this device")
    profile: str | None = Field(None, description="name of a device profile whose points this device has")
    points: dict[str, PointSpec] = Field(default_factory=dict, description="points, added to the profile's")
    poll: Duration | None = Field(None, description="polling period, for connectors that poll")
    enabled: bool = True


class SolutionConfig(_Model):
    """A solution entry in the site file. Solutions subclass it with their own fields."""

    type: str = Field(description="solution type")
    enabled: bool = True
    queue_size: int | None = Field(None, ge=1, description="bound of its input queue (default: the solution's own)")
    overflow: Literal["block", "drop_oldest"] | None = Field(
        None, description="when its queue is full: make publishers wait, or drop the oldest (counted)"
    )


class Profile(_Model):
    """A reusable point map: the points a kind of device has."""

    profile: str = Field(description="the name devices use to refer to this profile")
    connector: str | None = Field(None, description="the connector type whose point fields these are")
    description: str | None = None
    points: dict[str, dict[str, Any]]
    source: str | None = Field(None, exclude=True)  # where it was read from, for messages


# ---------------------------------------------------------------------------------------------
# core sections of a site file

_SITE_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class Location(_Model):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    alt: float = 0.0


class SiteInfo(_Model):
    id: str = Field(pattern=_SITE_ID, description="lowercase letters, digits, '-' and '_': used in topic names")
    name: str | None = None
    timezone: str = "UTC"
    location: Location | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin'") from None
        return value


class HttpConfig(_Model):
    """Metrics (``/metrics``), ``/healthz`` and ``/readyz`` on one port; off when port is None."""

    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)


class StoreConfig(_Model):
    path: str | None = Field(None, description="folder for the local store and audit log")


class ClockConfig(_Model):
    mode: Literal["wall", "simulated"] = "wall"
    start: float | None = Field(None, description="simulated start time, seconds since the epoch")


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class SimulatorConfig(_Model):
    """A companion process of the site (see :mod:`edgeplane.simulators`)."""

    command: list[str] = Field(min_length=1, description='argv; "{python}" is the host\'s Python, "{site_dir}" the site folder')
    ready: str | None = Field(None, description="tcp://HOST:PORT that accepts connections once the simulator is up")
    ready_timeout: Duration = 30.0
    stop_timeout: Duration = 5.0
    env: dict[str, str] = Field(default_factory=dict, description="added to the host's environment")
    cwd: str | None = Field(None, description="working folder, relative to the site file (default: the site folder)")

    @field_validator("ready")
    @classmethod
    def _tcp_address(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is None:
            return value
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "tcp" or not parts.hostname or not port:
            raise ValueError(f"{value!r} is not a tcp://HOST:PORT address")
        return value


class SupervisionConfig(_Model):
    backoff_initial: Duration = 1.0
    backoff_max: Duration = 60.0
    stop_timeout: Duration = 10.0


class CoreSite(_Model):
    """The core's view of a site file; devices and solutions are checked against plugins after."""

    site: SiteInfo
    profiles: list[str] = Field(default_factory=list, description="device-profile files, relative to the site file")
    devices: dict[str, dict[str, Any]] = Field(default_factory=dict)
    solutions: dict[str, dict[str, Any]] = Field(default_factory=dict)
    limits: dict[str, PointLimits] = Field(
        default_factory=dict, description="write guards by '<device>/<point>' pattern, e.g. 'inv*/WMaxLimPct'"
    )
    http: HttpConfig = Field(default_factory=HttpConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)
    inference: InferenceConfig | None = Field(None, description="the shared inference service; off when absent")
    sync: SyncConfig | None = Field(None, description="cloud sync: uplink policy, outbox, signed downlink; off when absent")
    simulators: dict[str, SimulatorConfig] = Field(
        default_factory=dict, description="companion processes started before the devices (simulators, a local broker)"
    )
    console: ConsoleConfig | None = Field(None, description="the site console on the HTTP port; off when absent")

    @model_validator(mode="after")
    def _console_tls_beyond_localhost(self) -> CoreSite:
        if self.console is not None:
            self.console.check_binding(self.http.host)
        return self

    @field_validator("devices", "solutions")
    @classmethod
    def _entries_are_mappings(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, entry in value.items():
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", str(name)):
                raise ValueError(f"{name!r} is not a valid name: use letters, digits, '_', '-', '.'")
            if not isinstance(entry, dict):
                raise ValueError(f"{name!r} must be a mapping of settings, got {type(entry).__name__}")
        return value


# ---------------------------------------------------------------------------------------------
# secrets


class SecretRedactor:
    """Knows every secret value a site resolved and blanks it out of text."""

    MASK = "***"

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        if value and len(value) >= 3:
            self._values.add(value)

    def merge(self, other: SecretRedactor) -> None:
        """Also redact every secret ``other`` knows (a reloaded site's new secrets)."""
        self._values |= other._values

    def redact(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, self.MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._values)


class RedactingFilter(logging.Filter):
    """A logging filter that blanks secret values out of every record it passes."""

    def __init__(self, redactor: SecretRedactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if self.redactor:
            message = record.getMessage()
            redacted = self.redactor.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_SECRET_RE = re.compile(r"\$\{(env|file):([^}]*)\}")


def _resolve_secrets(value: Any, path: str, base: Path, redactor: SecretRedactor, problems: list[tuple[str, str, str]]):
    if isinstance(value, dict):
        return {k: _resolve_secrets(v, f"{path}.{k}" if path else str(k), base, redactor, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secrets(v, f"{path}[{i}]", base, redactor, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if ref not in os.environ:
                problems.append((path, f"environment variable {ref!r} is not set", f"export {ref}=... before starting"))
                return ""
            secret = os.environ[ref]
        else:
            file_path = (base / ref).expanduser()
            try:
                secret = file_path.read_text().strip()
            except OSError as e:
                problems.append((path, f"cannot read secret file {str(file_path)!r}: {e.strerror}", "create the file or fix the path"))
                return ""
        redactor.add(secret)
        return secret

    return _SECRET_RE.sub(substitute, value)


# ---------------------------------------------------------------------------------------------
# YAML with line numbers, bounded

MAX_SITE_FILE_BYTES = 8 * 1024 * 1024
"""Largest site or profile file read (a site file is kilobytes; anything this big is a mistake)."""
MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and sequences, counted through aliases."""
MAX_YAML_NODES = 200_000
"""Most values a document may have once every alias is expanded (a 'billion laughs' file has 10^9)."""


class _YamlRefused(Exception):
    """A YAML document refused for its shape; ``line`` is 1-based or None."""

    def __init__(self, message: str, line: int | None, fix: str):
        super().__init__(message)
        self.line = line
        self.fix = fix


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and documents nested deeper than MAX_YAML_DEPTH."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # the composer recurses once per level: stop long before Python's recursion limit
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _YamlRefused(f"values are nested more than {MAX_YAML_DEPTH} levels deep", mark.line + 1,
                                   "a site file is a few levels deep: check the brackets and indentation")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # '<<: *base' then an override is YAML's merge, not a duplicate
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in first:
                    raise _YamlRefused(f"key {str(key)[:60]!r} appears twice, on line {first[key]} and line {line}",
                                       line, "keep one of them: YAML would silently use the last")
                first[key] = line
        return super().construct_mapping(node, deep)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand beyond MAX_YAML_NODES values or MAX_YAML_DEPTH levels."""
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    active: set[int] = set()
    total = 0

    def walk(node: yaml.Node, depth: int) -> None:
        nonlocal total
        key = id(node)
        if depth + heights.get(key, 0) > MAX_YAML_DEPTH:
            raise _YamlRefused(f"values are nested more than {MAX_YAML_DEPTH} levels deep once aliases are expanded",
                               node.start_mark.line + 1, "use fewer levels of aliases")
        if key in sizes:
            total += sizes[key]
        elif key in active:
            raise _YamlRefused("an alias refers to the value that contains it", node.start_mark.line + 1,
                               "remove the recursive alias")
        else:
            active.add(key)
            before = total
            total += 1
            height = 0
            children: list[yaml.Node] = []
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            for child in children:
                walk(child, depth + 1)
                height = max(height, heights[id(child)] + 1)
            active.discard(key)
            sizes[key], heights[key] = total - before, height
        if total > MAX_YAML_NODES:
            raise _YamlRefused(f"its aliases expand to more than {MAX_YAML_NODES:,} values (a 'billion laughs' "
                               "document)", node.start_mark.line + 1, "write the values out, or use fewer aliases")

    walk(root, 0)


def _line_map(root: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Key path -> 1-based line, for every mapping key and sequence item in a composed YAML document."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...], depth: int) -> None:
        if depth > MAX_YAML_DEPTH:
            return
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                if isinstance(key, str) and key.isdigit():
                    key = int(key)
                if not isinstance(key, (str, int)):
                    continue
                lines.setdefault(path + (key,), key_node.start_mark.line + 1)
                walk(value_node, path + (key,), depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,), depth + 1)

    if root is not None:
        lines[()] = root.start_mark.line + 1
        walk(root, (), 0)
    return lines


def _file_problem(path: Path, message: str, line: int | None = None, fix: str | None = None) -> SiteError:
    return SiteError([SiteProblem("", message, file=str(path), line=line, fix=fix)])


def read_yaml_file(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """A site or profile file's data and its line map, or :class:`SiteError`.

    Bounded: a regular file of at most MAX_SITE_FILE_BYTES, UTF-8, no duplicate keys, nesting
    and alias expansion limited. No message quotes the file's content (a wrong path must not
    print someone's secrets).
    """
    try:
        if not path.is_file():
            if not path.exists():
                raise _file_problem(path, f"cannot read {str(path)!r}: no such file", fix="check the path")
            raise _file_problem(path, f"{str(path)!r} is not a regular file", fix="give the path of a YAML file")
        with path.open("rb") as f:
            data = f.read(MAX_SITE_FILE_BYTES + 1)
    except OSError as e:
        raise _file_problem(path, f"cannot read {str(path)!r}: {e.strerror}", fix="check the path") from None
    if len(data) > MAX_SITE_FILE_BYTES:
        size = path.stat().st_size
        raise _file_problem(path, f"the file is {max(size, len(data)) / 1e6:.1f} MB; a site or profile file may be at "
                                  f"most {MAX_SITE_FILE_BYTES / 1e6:.1f} MB", fix="is this the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise _file_problem(path, f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})", line,
                            "save the file as UTF-8") from None
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader refuses control characters here already
        root = loader.get_single_node()
        if root is None:
            return None, {}
        _check_expansion(root)
        document = loader.construct_document(root)
    except _YamlRefused as e:
        raise _file_problem(path, f"not accepted as a site file: {e}", e.line, e.fix) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or "the text is not YAML"
        raise _file_problem(path, f"not valid YAML: {problem}", mark.line + 1 if mark else None,
                            "check indentation and quoting on that line") from None
    except RecursionError:
        raise _file_problem(path, "not accepted as a site file: values are nested too deeply", None,
                            "a site file is a few levels deep: check the brackets and indentation") from None
    finally:
        if loader is not None:
            loader.dispose()
    return document, _line_map(root)


def _read_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    return read_yaml_file(path)


# ---------------------------------------------------------------------------------------------
# the validated site


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

    def __init__(self, file: str | None, lines: dict[tuple[Any, ...], int], redactor: SecretRedactor):
        self.file = file
        self.lines = lines
        self.redactor = redactor
        self.items: list[SiteProblem] = []

    def add(self, loc: tuple[Any, ...], message: str, fix: str | None = None, file: str | None = None,
            lines: dict[tuple[Any, ...], int] | None = None) -> None:
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
                       file: str | None = None, lines: dict[tuple[Any, ...], int] | None = None) -> None:
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
            data, lines = _read_yaml(path)
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
               lines: dict[tuple[Any, ...], int] | None = None) -> Site:
    """Validate an already-parsed site document against the core and the plugins in ``registry``."""
    base = base_dir or Path.cwd()
    redactor = SecretRedactor()
    problems = _Problems(source, lines or {}, redactor)
    if not isinstance(data, dict):
        problems.add((), "a site file must be a mapping with at least a 'site:' section",
                     "start the file with:  site: {id: my-site}")
        raise SiteError(problems.items)

    secret_problems: list[tuple[str, str, str]] = []
    resolved = _resolve_secrets(data, "", base, redactor, secret_problems)
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
        model = registry.solution_model(kind)
        try:
            solutions[name] = model.model_validate(entry)
        except ValidationError as e:
            problems.add_validation(e, loc, model)

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
    data, lines = _read_yaml(path)
    return parse_site(data, registry, source=str(path), base_dir=path.parent.resolve(), lines=lines)


def site_json_schema(registry: Registry) -> dict[str, Any]:
    """One JSON Schema for site files, with every installed plugin's device and solution sections."""

    def union(models: list[type[BaseModel]], discriminator: str, fallback: type[BaseModel]):
        if not models:
            return fallback
        if len(models) == 1:
            return models[0]
        return Annotated[Union[tuple(models)], Field(discriminator=discriminator)]  # type: ignore[valid-type]

    device_union = union([registry.device_model(k) for k in sorted(registry.connectors)], "connector", DeviceConfig)
    solution_union = union([registry.solution_model(k) for k in sorted(registry.solutions)], "type", SolutionConfig)
    # sync.uplink: the settings of any registered transport (each validates its own)
    uplink_models = list(dict.fromkeys(getattr(t, "Config", UplinkConfig) for t in registry.transports.values()))
    uplink_union = Union[tuple(uplink_models)] if len(uplink_models) > 1 else (uplink_models or [UplinkConfig])[0]  # type: ignore[valid-type]
    sync_model = create_model("SyncSection", __base__=SyncConfig, uplink=(uplink_union, ...))  # type: ignore[valid-type]
    schema_model = create_model(
        "EdgeplaneSite",
        __base__=CoreSite,
        devices=(dict[str, device_union], Field(default_factory=dict)),  # type: ignore[valid-type]
        solutions=(dict[str, solution_union], Field(default_factory=dict)),  # type: ignore[valid-type]
        sync=(sync_model | None, Field(None, description="cloud sync: uplink policy, outbox, signed downlink; off when absent")),
    )
    schema = schema_model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edgeplane site file"
    return schema

