"""Imports inside fastmnist flow one way: no two modules import each other, directly or around a
loop, counting imports inside functions too (a lazy import is still a dependency), subpackages
(fastmnist.steps, fastmnist.web) included. And `import fastmnist` leaves the optional stacks
alone."""
import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastmnist"


def module_name(path: Path, package: Path) -> str:
    """``web/server.py`` -> ``web.server``; a subpackage's ``__init__`` is the subpackage."""
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set, package: Path = PACKAGE) -> set[str]:
    """The fastmnist modules ``path`` imports anywhere in its code (the top ``__init__``
    excluded: the package's public face imports everything, and ``from . import __version__``
    reads it)."""
    name = module_name(path, package)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from .network import ... / from ..images import ... / from . import a
                base = here[:len(here) - (node.level - 1)]
                module = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("fastmnist."):
                module = node.module.split(".")[1:]
            else:
                continue
            targets += [module + [a.name] for a in node.names] + [module]
        elif isinstance(node, ast.Import):
            targets += [a.name.split(".")[1:] for a in node.names
                        if a.name.startswith("fastmnist.")]
    found = set()
    for target in targets:  # the longest known module each import names
        for n in range(len(target), 0, -1):
            if ".".join(target[:n]) in modules:
                found.add(".".join(target[:n]))
                break
    return found - {name}


def import_graph(package: Path = PACKAGE) -> dict:
    """{module: the package's modules it imports} for every module but the top ``__init__``."""
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    paths.pop("", None)
    return {m: imported_modules(p, set(paths), package) for m, p in paths.items()}


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
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("def f():\n    from .c import g\n")
    (tmp_path / "sub" / "c.py").write_text("from . import HINT\nfrom ..a import f\n")
    assert import_graph(tmp_path) == {"a": {"b"}, "b": {"a"}, "sub": {"sub.c"},
                                      "sub.c": {"sub", "a"}}
    graph = import_graph()
    assert "backend" in graph["network"] and "modelfile" in graph["network"]
    assert "network" in graph["steps.generic"] and "steps.generic" in graph["steps.cpu"]
    assert "web.server" in graph["cli"] and "images" in graph["web.app"]


def test_import_fastmnist_and_its_command_leave_the_web_stack_alone():
    code = ("import json, sys, fastmnist, fastmnist.cli; fastmnist.serve; "
            "fastmnist.cli.build_parser(); "
            "print(json.dumps(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'anyio', "
            "'multipart', 'python_multipart', 'playwright', 'numba', 'llvmlite', 'cupy', 'ray') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out) == []
