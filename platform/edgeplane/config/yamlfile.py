"""Reading a site or profile file: bounded YAML, with the line of every key for error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgeplane.errors import SiteError, SiteProblem

__all__ = ["MAX_SITE_FILE_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "LineMap", "read_yaml_file"]

LineMap = dict[tuple[Any, ...], int]
"""Key path (mapping keys and sequence indexes) -> 1-based line in the file."""

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
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # PyYAML's stubs leave it untyped
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


def _line_map(root: yaml.Node | None) -> LineMap:
    """Key path -> 1-based line, for every mapping key and sequence item in a composed YAML document."""
    lines: LineMap = {}

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


def read_yaml_file(path: Path) -> tuple[Any, LineMap]:
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
