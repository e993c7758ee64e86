"""Imports run one way: the layering table of docs/architecture.md, enforced on the source (ast).

A module may import its own layer and the layers below it, never one above; ``export`` and ``zoo``
share a layer but do not import each other. Imports under ``if TYPE_CHECKING:`` are annotations
only and are not counted. Imports of compressor's own modules sit at module level.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def layering_table() -> list[tuple[str, list[str]]]:
    """(layer, module prefixes) from the table under '## Layers' in docs/architecture.md, top first."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        modules = re.findall(r"`([\w.]+)`", cells[1]) if len(cells) >= 2 else []
        if re.fullmatch(r"[a-z]+", cells[0]) and modules:
            rows.append((cells[0], modules))
    return rows


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in ("export", "zoo"):
        parts = ["compressor"] + parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted([*ROOT.glob("compressor/**/*.py"), *ROOT.glob("export/*.py"), *ROOT.glob("zoo/*.py")])


def layer_of(module: str, table: list[tuple[str, list[str]]]) -> tuple[int, str]:
    """The most specific prefix decides (``compressor.recipe.loader`` before ``compressor.recipe``)."""
    best = max(((len(p), i, name) for i, (name, prefixes) in enumerate(table) for p in prefixes
                if module == p or (module.startswith(p + ".") and p != "compressor")), default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer of docs/architecture.md")
    return best[1], best[2]


def imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(imported compressor module, line, at module level) outside ``if TYPE_CHECKING:`` blocks."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from compressor import distributed`` imports compressor.distributed (resolve() keeps
            # the longest known module of each name)
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name == "compressor" or name.startswith("compressor."):
                found.append((name, node.lineno, id(node) in top))
    return found


def resolve(name: str, known: set[str]) -> str | None:
    """``from compressor.export import bundle`` names the module compressor.export.bundle."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def test_the_table_names_every_module() -> None:
    table = layering_table()
    assert [name for name, _ in table][:3] == ["commands", "api", "search"]
    for path in source_files():
        layer_of(module_name(path), table)


def test_imports_run_one_way() -> None:
    table = layering_table()
    modules = {module_name(p): p for p in source_files()}
    problems = []
    for module, path in modules.items():
        here, here_name = layer_of(module, table)
        for name, line, _ in imports(ast.parse(path.read_text())):
            target = resolve(name, set(modules))
            if target is None or target == module:
                continue
            there, there_name = layer_of(target, table)
            sideways = {here_name, there_name} == {"export", "zoo"} and here_name != there_name
            if there < here or sideways:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module} ({here_name}) imports "
                                f"{target} ({there_name})")
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_own_modules_are_imported_at_module_level(path: Path) -> None:
    late = [f"{path.relative_to(ROOT)}:{line}: {name}"
            for name, line, top in imports(ast.parse(path.read_text())) if not top]
    assert not late, "import these at module level:\n" + "\n".join(late)
