"""The package's structure: layers whose imports point down only, no import cycle, no Streamlit inside `mtfer`,
imports inside functions only for heavy or optional libraries, and a command line that starts without TensorFlow.

The layers, top to bottom, are in pyproject.toml ([tool.importlinter]); import-linter checks them and names the
offending import line when one points up."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mtfer"

# Libraries a function may import on first use, because importing them costs seconds (TensorFlow, Keras), or they
# are optional extras (ONNX, LiteRT), or platform- or feature-specific (WebRTC, POSIX file locks).
LAZY_IMPORTS = {
    "tensorflow",
    "keras",
    "ai_edge_litert",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "streamlit_webrtc",
    "av",
    "aiortc",
    "pylibsrtp",
    "fcntl",
    "scipy",
    "sklearn",
    "uvicorn",  # `mtfer serve` only: the ASGI server of the optional 'serve' extra
}


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c["layers"] for c in config["contracts"] if c["type"] == "layers")


def test_import_linter_contracts_hold():
    """Every contract in pyproject.toml (layers; no Streamlit in the package), as `lint-imports` reports them."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_module_sits_in_a_layer():
    layers = _layers()
    top = {
        p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.name != "__init__.py" and not p.name.startswith(".")
    }
    top.discard("__pycache__")
    assert {f"mtfer.{name}" for name in top} == set(layers)


def test_the_import_graph_has_no_cycle():
    graph = grimp.build_graph("mtfer", cache_dir=None, exclude_type_checking_imports=True)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    # A package's __init__ importing its own submodules is how Python packages expose them, not a cycle of ideas;
    # a submodule importing its package's __init__ back would be, and is kept.
    for m in edges:
        edges[m] = {n for n in edges[m] if not n.startswith(m + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_inside_functions_are_only_for_heavy_or_optional_libraries():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    if module.split(".")[0] not in LAZY_IMPORTS and not _cli_lazy(path, module):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert not found, "\n".join(found)


def _cli_lazy(path: Path, module: str) -> bool:
    """The command line imports a command's modules when the command runs: `mtfer --help` and `mtfer runs` must
    answer without loading TensorFlow, which the training and prediction modules need."""
    return path.parent.name == "cli" or path.name == "cli.py"


def test_import_mtfer_and_the_cli_do_not_load_tensorflow():
    code = (
        "import sys, mtfer, mtfer.cli; "
        "from mtfer.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_package_module_is_longer_than_a_reader_can_hold():
    """About 600 lines at most: past that a module holds more than one idea and should be split by role."""
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 650}
    assert not long, long
