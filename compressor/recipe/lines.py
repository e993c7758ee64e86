"""Map each key path of a YAML document to the line it was written on."""
from __future__ import annotations

from typing import Any

import yaml

KeyPath = tuple[Any, ...]


def line_map(node: yaml.Node | None) -> dict[KeyPath, int]:
    """Return ``{("stages", 0, "prune", "sparsity"): 12, ...}`` (1-based lines) for a node graph
    composed by PyYAML's safe loader (see :func:`compressor.recipe.yamlfile.parse_yaml`, which
    bounds how far its aliases expand before this walks them)."""
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return lines


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines)


def nearest_line(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path`` or of its closest ancestor that exists in the file."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def format_path(path: KeyPath) -> str:
    """``("stages", 0, "prune", "sparsity")`` -> ``stages[0].prune.sparsity``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
