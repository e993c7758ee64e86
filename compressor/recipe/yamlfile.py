"""Read recipe YAML defensively: a file of bounded size in UTF-8, aliases that cannot expand
without bound ("billion laughs") or refer to themselves, no duplicate keys.

PyYAML's safe loader shares aliased objects, so loading a bomb is cheap; everything after it
(line numbers, ``${variables}``, validation) walks the expanded tree. The node graph is
therefore measured first, each node once, and refused past :data:`MAX_NODES`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from compressor.errors import RecipeError, RecipeErrors
from compressor.recipe.lines import KeyPath, format_path, line_map

#: A recipe is a few KB; anything larger is the wrong file.
MAX_BYTES = 1 << 20
#: Values (mappings, lists, scalars) in the document with every alias expanded.
MAX_NODES = 20_000
#: Nesting of mappings and lists.
MAX_DEPTH = 50
SUFFIXES = (".yaml", ".yml", ".json")
_MERGE = "tag:yaml.org,2002:merge"


def read_recipe_text(path: Path) -> str:
    """The text of a recipe file, or one clear error: missing, a directory, not YAML, binary, not UTF-8."""
    def fail(message: str, line: int | None = None) -> RecipeErrors:
        return RecipeErrors([RecipeError(message, file=path, line=line)])

    if path.is_dir():
        raise fail("is a directory, expected a recipe file (.yaml)")
    if not path.exists():
        raise fail("no such file")
    if path.suffix.lower() not in SUFFIXES:
        raise fail(f"expected a recipe file ending in {', '.join(SUFFIXES)}, got {path.name!r}")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise fail(f"{size / 2**20:.1f} MiB is too large for a recipe (at most {MAX_BYTES >> 20} MiB); "
                   "is this the right file?")
    data = path.read_bytes()
    if b"\0" in data:
        raise fail("binary file (it holds NUL bytes), not a YAML recipe")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the "
                   "recipe as UTF-8", line=data[:exc.start].count(b"\n") + 1) from None


def parse_yaml(text: str, path: Path | None) -> tuple[Any, dict[KeyPath, int]]:
    """The document's data and the line of each key path; :class:`RecipeErrors` on bad YAML."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_graph(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeErrors([RecipeError(f"invalid YAML: {problem}", file=path,
                                        line=mark.line + 1 if mark else None)]) from None
    except RecursionError:
        raise RecipeErrors([RecipeError(f"invalid YAML: nested too deeply (at most {MAX_DEPTH} levels)",
                                        file=path)]) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise RecipeErrors([RecipeError(f"invalid YAML value: {exc}", file=path)]) from None
    finally:
        loader.dispose()
    return data, line_map(node)


def _check_graph(root: yaml.Node, path: Path | None) -> None:
    """Refuse alias expansion past :data:`MAX_NODES`, self-referring aliases, nesting past
    :data:`MAX_DEPTH` and duplicate keys; visits each node once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def fail(message: str, node: yaml.Node, key: KeyPath | None = None) -> RecipeErrors:
        return RecipeErrors([RecipeError(message, file=path, key=format_path(key) if key else None,
                                         line=node.start_mark.line + 1)])

    def size(node: yaml.Node, where: KeyPath) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise fail("an alias refers to a node that contains it (a recursive structure)", node, where)
        if len(where) > MAX_DEPTH:
            raise fail(f"nested more than {MAX_DEPTH} levels deep", node, where)
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, Any], yaml.Node] = {}
            for key_node, value_node in node.value:
                ident = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
                if ident is not None and ident[0] != _MERGE:
                    if ident in seen:
                        raise fail(f"duplicate key {key_node.value!r} (lines {seen[ident].start_mark.line + 1} "
                                   f"and {key_node.start_mark.line + 1}); keep one", key_node,
                                   where + (key_node.value,))
                    seen[ident] = key_node
                total += size(key_node, where) + size(value_node, where + (key_node.value,))
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, where + (i,)) for i, item in enumerate(node.value))
        open_nodes.discard(id(node))
        if total > MAX_NODES:
            raise fail(f"expands to more than {MAX_NODES} values (aliases repeat their anchor's "
                       "content; an alias bomb?)", node, where)
        sizes[id(node)] = total
        return total

    size(root, ())
