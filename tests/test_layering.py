"""The package's layers: a module may import only its own layer and the layers below it, and no circles.

Layers, lowest first (docs/ARCHITECTURE.md draws the same table): errors/fetch and the generated proto;
formats; data; engine; the pycaffe facade; the model registry; the fold workflow; recipes and analysis;
distillation; the command line. Every ``import`` statement counts, also those inside functions. A recipe
found by name (pixsent.workflow.pipeline.get_recipe imports ``pixsent.recipes.<name>``) is a plug-in
lookup by convention, not a static import, and so is the command line's discovery of its modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pixsent"

LAYERS: list[tuple[str, ...]] = [
    ("pixsent", "pixsent.errors", "pixsent.fetch", "pixsent.caffe.proto"),
    ("pixsent.formats",),
    ("pixsent.data",),
    ("pixsent.engine",),
    ("pixsent.caffe",),
    ("pixsent.zoo",),
    ("pixsent.workflow",),
    ("pixsent.recipes", "pixsent.analysis"),
    ("pixsent.distill",),
    ("pixsent.cli", "pixsent.__main__"),
]


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific prefix naming ``module``."""
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                if prefix == "pixsent" and module != "pixsent":
                    continue
                best, depth = i, prefix.count(".")
    if best is None:
        raise AssertionError(f"{module}: no layer in tests/test_layering.py names it; add it to LAYERS")
    return best


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every pixsent module ``path`` imports (``from a import b`` counts as a.b when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pixsent"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("pixsent"):
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if _is_module(sub) else mod)
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (
        PACKAGE.parent / rel / "__init__.py"
    ).is_file()


def graph() -> dict[str, set[str]]:
    return {
        module_name(p): imports_of(p)
        for p in sorted(PACKAGE.rglob("*.py"))
        if "proto" not in p.parts or p.name != "caffe_pb2.py"
    }


def test_no_module_imports_a_higher_layer():
    bad = [
        f"{mod} (layer {layer_of(mod)}) imports {dep} (layer {layer_of(dep)})"
        for mod, deps in graph().items()
        for dep in sorted(deps)
        if layer_of(dep) > layer_of(mod)
    ]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_circles():
    g = graph()
    seen: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []
    circles: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if dep not in g or dep == node:
                continue
            if seen.get(dep) == 1:
                circles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in seen:
                visit(dep)
        stack.pop()
        seen[node] = 2

    for node in g:
        if node not in seen:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize(
    ("module", "expected"),
    [("pixsent.formats.prototxt", 1), ("pixsent.caffe.proto.caffe_pb2", 0), ("pixsent.cli.caffe_tool", 9)],
)
def test_layer_lookup(module, expected):
    assert layer_of(module) == expected


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """A lower module importing a higher one is caught (guards against a test that cannot fail)."""
    fake = tmp_path / "pixsent"
    (fake / "formats").mkdir(parents=True)
    (fake / "cli").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "formats" / "__init__.py").write_text("")
    (fake / "cli" / "__init__.py").write_text("")
    (fake / "formats" / "x.py").write_text("from pixsent.cli import y\n")
    (fake / "cli" / "y.py").write_text("import pixsent.formats.x\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="imports against the layering"):
        test_no_module_imports_a_higher_layer()
    with pytest.raises(AssertionError, match="import circles"):
        test_no_import_circles()
