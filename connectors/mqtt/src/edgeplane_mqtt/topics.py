"""Topic templates: MQTT topic filters whose levels name what they capture.

A template is an MQTT topic filter in which a level may be a named placeholder:

* ``{name}`` matches exactly one level (subscribed as ``+``) and captures it as ``name``;
* ``{name#}``, only as the last level, matches one or more remaining levels (subscribed as
  ``#``) and captures them joined with ``/``;
* ``+`` and ``#`` keep their MQTT meaning and capture nothing.

``plant/{line}/{machine}/{point}`` subscribes to ``plant/+/+/+`` and turns
``plant/l1/press3/temp`` into ``{"line": "l1", "machine": "press3", "point": "temp"}``.
A point-name template (``"{machine}/{point}"``) is then rendered from those captures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PointNameTemplate", "TopicTemplate"]

_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(#?)\}$")
_NAME_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class TopicTemplate:
    """A parsed topic template; :meth:`match` returns the captures of a topic, or None."""

    template: str
    filter: str  # the MQTT subscription filter
    names: tuple[str, ...]  # captured names, in order of their levels
    _regex: re.Pattern[str]

    @classmethod
    def parse(cls, template: str) -> TopicTemplate:
        """Parse ``template``; raises ValueError naming the bad level and the fix."""
        if not template:
            raise ValueError("an empty topic matches nothing: write e.g. 'plant/{machine}/{point}'")
        levels = template.split("/")
        filter_levels: list[str] = []
        regex_levels: list[str] = []
        names: list[str] = []
        for i, level in enumerate(levels):
            last = i == len(levels) - 1
            match = _PLACEHOLDER.match(level)
            if match:
                name, multi = match.group(1), match.group(2)
                if name in names:
                    raise ValueError(f"topic {template!r}: {{{name}}} appears twice; give each level its own name")
                if multi and not last:
                    raise ValueError(f"topic {template!r}: {{{name}#}} takes the remaining levels, so it must be the last level")
                names.append(name)
                filter_levels.append("#" if multi else "+")
                regex_levels.append(f"(?P<{name}>.+)" if multi else f"(?P<{name}>[^/]+)")
            elif level == "+":
                filter_levels.append("+")
                regex_levels.append("[^/]+")
            elif level == "#":
                if not last:
                    raise ValueError(f"topic {template!r}: '#' is only allowed as the last level")
                filter_levels.append("#")
                regex_levels.append(".+")
            elif any(ch in level for ch in "+#{}"):
                raise ValueError(
                    f"topic {template!r}: level {level!r} mixes a wildcard with text; a wildcard or "
                    f"placeholder must be a whole level, e.g. 'plant/{{machine}}/temp'"
                )
            else:
                filter_levels.append(level)
                regex_levels.append(re.escape(level))
        regex = "/".join(regex_levels)
        # a trailing '#' (named or not) also matches the parent level itself in MQTT
        if filter_levels[-1] == "#" and len(levels) > 1:
            head = "/".join(regex_levels[:-1])
            regex = f"{head}(?:/{regex_levels[-1]})?"
        return cls(template, "/".join(filter_levels), tuple(names), re.compile(f"^{regex}$"))

    @property
    def has_wildcards(self) -> bool:
        return self.filter != self.template or "+" in self.filter or "#" in self.filter

    def match(self, topic: str) -> dict[str, str] | None:
        """The captures of ``topic``, or None if it does not match this template."""
        found = self._regex.match(topic)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}


@dataclass(frozen=True)
class PointNameTemplate:
    """A point name with ``{name}`` references to topic captures, e.g. ``"{machine}/{point}"``.

    Empty captures and the separators around them collapse, so ``"{node}/{device}/{metric}"``
    gives ``"n1/temp"`` for a node-level Sparkplug metric without a device.
    """

    template: str
    names: tuple[str, ...]

    @classmethod
    def parse(cls, template: str, available: tuple[str, ...]) -> PointNameTemplate:
        names = tuple(_NAME_REF.findall(template))
        unknown = [n for n in names if n not in available]
        if unknown:
            offered = ", ".join("{" + n + "}" for n in available) or "none (the topic has no named levels)"
            raise ValueError(f"point name {template!r} refers to {{{unknown[0]}}}, which the topic does not capture; captures: {offered}")
        if not template.strip("/"):
            raise ValueError("a point name cannot be empty")
        return cls(template, names)

    def render(self, captures: dict[str, str]) -> str:
        if not self.names:
            return self.template
        rendered = _NAME_REF.sub(lambda m: captures.get(m.group(1), ""), self.template)
        if "//" in rendered or rendered.startswith("/") or rendered.endswith("/"):
            rendered = "/".join(part for part in rendered.split("/") if part)
        return rendered
