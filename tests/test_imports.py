"""Imports inside fastmnist flow one way: no two modules import each other, directly or around a
loop, counting imports inside functions too (a lazy import is still a dependency)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastmnist"


def imported_modules(path: Path, modules: set) -> set[str]:
    """The fastmnist modules ``path`` imports anywhere in its code (``__init__`` excluded: the
    package's public face imports everything, and ``from . import __version__`` reads it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .network import ...
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import functions as F
                found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("fastmnist."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("fastmnist."))
    return (found & modules) - {path.stem}


def import_graph(package: Path = PACKAGE) -> dict:
    """{module: the package's modules it imports} for every module but ``__init__``."""
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    return {m: imported_modules(package / f"{m}.py", modules) for m in modules}


def test_no_two_modules_import_each_other():
    graph = import_graph()
    pairs = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps
                    if a in graph.get(b, ())})
    assert not pairs, f"modules importing each other: {pairs}"


def test_imports_have_no_loops():
    graph = import_graph()
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import loop: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_check_sees_lazy_imports_and_would_catch_a_pair(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from .b import g\n")
    (tmp_path / "b.py").write_text("from . import a\nimport fastmnist.network\n")
    assert import_graph(tmp_path) == {"a": {"b"}, "b": {"a"}}
    assert "backend" in import_graph()["network"] and "modelfile" in import_graph()["network"]
