"""Finding nodes: by NodeId string or by browse path from the Objects folder."""

from __future__ import annotations

import re

from asyncua import Client, Node, ua

from edgeplane.errors import ConnectorError

__all__ = ["NodeNotFound", "PathResolver", "is_node_id", "variant_type_of"]

_NODE_ID_RE = re.compile(r"^(ns=\d+;|nsu=[^;]+;)?(i|s|g|b)=", re.IGNORECASE)
_QUALIFIED_RE = re.compile(r"^(\d+):(.+)$")


class NodeNotFound(ConnectorError, LookupError):
    """A browse path (or NodeId) names no node on this server."""


def is_node_id(text: str) -> bool:
    """Whether ``text`` is a NodeId string (``ns=2;s=Temp``, ``i=2253``) rather than a browse path."""
    return bool(_NODE_ID_RE.match(text.strip()))


class PathResolver:
    """Resolves browse paths like ``Machine/Temperature`` or ``2:Machine/2:Temperature``.

    Paths start at the Objects folder (a leading ``Objects/`` or ``0:Objects/`` is accepted).
    An element with an ``ns:`` prefix must match the browse name exactly; one without matches a
    child with that name in any namespace (servers number their namespaces differently).
    Children are browsed once per resolver, so resolve many paths with one resolver.
    """

    def __init__(self, client: Client):
        self.client = client
        self._children: dict[ua.NodeId, list[tuple[ua.QualifiedName, ua.NodeId]]] = {}

    async def node(self, text: str) -> Node:
        """A NodeId string as a Node (not checked), or the node a browse path leads to."""
        text = text.strip()
        if is_node_id(text):
            return self.client.get_node(text)
        return await self.resolve(text)

    async def _browse(self, node_id: ua.NodeId) -> list[tuple[ua.QualifiedName, ua.NodeId]]:
        children = self._children.get(node_id)
        if children is None:
            descriptions = await self.client.get_node(node_id).get_children_descriptions()
            children = [(d.BrowseName, d.NodeId) for d in descriptions]
            self._children[node_id] = children
        return children

    async def resolve(self, path: str) -> Node:
        elements = [e for e in path.strip().strip("/").split("/") if e]
        if elements and elements[0] in ("Objects", "0:Objects"):
            elements = elements[1:]
        if not elements:
            raise NodeNotFound(f"browse path {path!r} is empty: write e.g. 'Machine/Temperature'")
        current = self.client.nodes.objects.nodeid
        walked = "Objects"
        for element in elements:
            match = _QUALIFIED_RE.match(element)
            ns, name = (int(match.group(1)), match.group(2)) if match else (None, element)
            children = await self._browse(current)
            found = [nid for qn, nid in children if qn.Name == name and (ns is None or qn.NamespaceIndex == ns)]
            if not found:
                names = sorted(f"{qn.NamespaceIndex}:{qn.Name}" for qn, _ in children)
                shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
                raise NodeNotFound(f"browse path {path!r}: {walked} has no child {element!r}; its children: {shown or 'none'}")
            current = found[0]
            walked += "/" + element
        return self.client.get_node(current)


def variant_type_of(data_type: ua.NodeId) -> ua.VariantType | None:
    """The built-in VariantType for a standard DataType NodeId (i=1..25 in namespace 0), else None."""
    if data_type.NamespaceIndex == 0 and isinstance(data_type.Identifier, int) and 1 <= data_type.Identifier <= 25:
        return ua.VariantType(data_type.Identifier)
    return None
