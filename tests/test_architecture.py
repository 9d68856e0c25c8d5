"""The house rules, checked on the source: imports point one way, there is no import cycle, rooms stay small
(modules up to 700 lines, function bodies up to 80), the engine is numpy only, and the packaging installs what it
says.

Layers, lowest first: errors/_version/_signals/text -> core -> inference -> loaders -> pictures -> analyses -> outputs
-> batch/executors -> runs -> cli. A module may import its own layer or lower ones, never a higher one (lazy imports
inside functions count too), and there is no exception to that rule.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "occlude_cli"

LAYERS = {
    "errors": 0,
    "_version": 0,
    "_signals": 0,
    "text": 0,
    "core": 1,
    "inference": 2,
    "loaders": 3,
    "pictures": 4,
    "analyses": 5,
    "outputs": 6,
    "batch": 7,
    "executors": 7,
    "runs": 8,
    "cli": 9,
    "__main__": 9,
}
NUMPY_ONLY = ("core",)  # the engine stays a pure function of arrays and a score callable


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) if parts else "__init__"


def layer_of(name: str) -> int:
    return LAYERS[name.split(".")[0]]


def imports_of(path: Path):
    """(imported occlude_cli module, imported third-party top-level names) for one source file."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    ours, others = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    ours.update(".".join(base + [a.name]) for a in node.names)
                else:
                    ours.add(target)
            elif node.module and node.module.startswith("occlude_cli"):
                ours.add(node.module[len("occlude_cli.") :])
            elif node.module:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("occlude_cli."):
                    ours.add(alias.name[len("occlude_cli.") :])
                else:
                    others.add(alias.name.split(".")[0])
    return {o.strip(".") for o in ours if o.strip(".")}, others


def all_modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_imports_point_one_way():
    wrong = []
    for path in all_modules():
        name = module_name(path)
        if name == "__init__":  # the package's public API re-exports from every layer
            continue
        ours, _ = imports_of(path)
        for target in ours:
            if layer_of(target) > layer_of(name):
                wrong.append(f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    graph = {}
    for path in all_modules():
        name = module_name(path)
        ours, _ = imports_of(path)
        graph[name] = {t for t in ours if not t.endswith("__init__")}
    names = set(graph)

    def resolve(target):  # 'core.engine' is a module; 'core' alone names the package's __init__
        return target if target in names else (target + ".__init__" if target + ".__init__" in names else None)

    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in graph.get(node, ()):
            target = resolve(target)
            if target is None or target == "__init__":
                continue
            if state.get(target) == "open":
                cycle = stack[stack.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state and node != "__init__":
            visit(node)


def test_core_is_numpy_only():
    for path in (PACKAGE / "core").rglob("*.py"):
        _, others = imports_of(path)
        assert others <= {"numpy", "__future__", "dataclasses", "typing", "itertools", "math", "enum", "collections"}, (
            path,
            others,
        )


def test_importing_the_cli_loads_no_runtime_and_no_pyplot():
    code = (
        "import sys, occlude_cli.cli; "
        "print(sorted(m for m in ('onnxruntime', 'matplotlib.pyplot', 'occlude_cli.analyses.validate') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "occlude_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("occlude "), out.stderr


def _pip_report(extra: str) -> set:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        "-",
        f"{ROOT}[{extra}]" if extra else str(ROOT),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.skip(f"pip could not resolve (no package index?): {result.stderr.strip().splitlines()[-1:]}")
    report = json.loads(result.stdout)
    return {item["metadata"]["name"].lower() for item in report["install"]}


@pytest.mark.parametrize(
    "extra, present, absent",
    [
        ("cpu", "onnxruntime", "onnxruntime-gpu"),
        ("cuda", "onnxruntime-gpu", "onnxruntime"),
    ],
)
def test_each_runtime_extra_installs_exactly_one_runtime(extra, present, absent):
    names = _pip_report(extra)
    assert present in names and absent not in names, sorted(names)


MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80  # the body, without its docstring


def test_rooms_and_functions_stay_small():
    """No module over 700 lines, no function body (docstring aside) over 80: a room one can read whole."""
    too_long = []
    for path in all_modules():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                start = body[1].lineno if docstring and len(body) > 1 else body[0].lineno
                length = node.end_lineno - start + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long
