"""The shape the project keeps: imports run one way, the inference wing is torch-free, facts live once."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from segtrain.common.errors import EXIT_CODES, exit_code_lines

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("segtrain", "segdeploy")


def module_names() -> dict[str, Path]:
    """Every module of the two packages: dotted name -> file (a package is its __init__.py)."""
    names = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(tree: ast.AST, known: set[str]) -> set[str]:
    """The project modules a module imports anywhere in its body (inside functions too)."""

    def nearest(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                       for alias in node.names]
        else:
            continue
        out |= {m for m in map(nearest, targets) if m is not None}
    return out


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    known = set(modules)
    return {name: imported(ast.parse(path.read_text(encoding="utf-8")), known) - {name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_cycle_anywhere() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "segdeploy.infer.batch.write" in graph
    assert "segtrain.contract" in graph["segdeploy.infer.batch.write"]  # imports are seen
    assert "segtrain.models" in graph["segdeploy.export.exporter"]  # ... inside functions too
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle_through_a_function_import() -> None:
    code = {"segtrain.a": "from segtrain.b import x", "segtrain.b": "def f():\n    import segtrain.c",
            "segtrain.c": "from segtrain import a"}
    known = set(code) | {"segtrain"}
    graph = {name: imported(ast.parse(text), known) for name, text in code.items()}
    assert find_cycle(graph) == ["segtrain.a", "segtrain.b", "segtrain.c", "segtrain.a"]


def test_segtrain_never_imports_segdeploy() -> None:
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if d.startswith("segdeploy")) for m, deps in graph.items()
                 if m.startswith("segtrain")}
    assert not {m: d for m, d in offenders.items() if d}


# The torch boundary, as a rule on names: only these packages may import an extra's package (torch, ...) at
# module level, and the inference wing imports neither them nor the packages of any extra, anywhere.
TORCH_PACKAGES = ("segtrain.training", "segtrain.models")


def inside(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def module_level_imports(tree: ast.Module) -> set[str]:
    """Top-level names of the modules a module imports when it is imported (not inside functions)."""
    out: set[str] = set()
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # still run at import time
            nodes += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                      *(h for handler in getattr(node, "handlers", []) for h in handler.body)]
    return out


def test_only_training_and_models_import_an_extra_at_module_level() -> None:
    from segtrain.common.extras import EXTRAS

    heavy = {m for modules in EXTRAS.values() for m in modules}
    offenders = {}
    for name, path in module_names().items():
        if inside(name, TORCH_PACKAGES):
            continue
        tops = {m.partition(".")[0] for m in module_level_imports(ast.parse(path.read_text(encoding="utf-8")))}
        if tops & heavy:
            offenders[name] = sorted(tops & heavy)
    assert not offenders, offenders


def test_module_level_imports_are_seen() -> None:
    tree = ast.parse("import torch\nif x:\n    from segtrain.training import loop\ndef f():\n    import yaml\n")
    assert module_level_imports(tree) == {"torch", "segtrain.training", "segtrain.training.loop"}


def test_the_inference_wing_imports_no_training_code_anywhere() -> None:
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if inside(d, TORCH_PACKAGES)) for m, deps in graph.items()
                 if m.startswith("segdeploy.infer")}
    assert not {m: d for m, d in offenders.items() if d}


def test_every_module_outside_training_and_models_imports_without_torch() -> None:
    """Each module outside the torch packages (the inference wing and both command lines among them), in a fresh
    interpreter where no package of an extra (torch and the rest of `train`, openvino) can be imported: what a
    deploy-only install has. Transitive imports included, which the name rule above cannot see."""
    from segtrain.common.extras import EXTRAS

    blocked = sorted({m for modules in EXTRAS.values() for m in modules})
    light = sorted(m for m in module_names() if not inside(m, TORCH_PACKAGES) and not m.endswith(".__main__"))
    assert len([m for m in light if m.startswith("segdeploy.infer")]) >= 10
    assert {"torch", "albumentations", "openvino"} <= set(blocked)
    code = ("import sys\n"
            f"for name in {blocked!r}:\n    sys.modules[name] = None  # importing it now raises ImportError\n"
            "import importlib\n"
            f"for name in {light!r}:\n    importlib.import_module(name)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {blocked!r} and sys.modules[m] is not None))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_readme_exit_code_table_is_the_one_in_the_code() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", readme.split("## Exit codes", 1)[1], flags=re.MULTILINE)
    assert {int(code): text for code, text in rows} == EXIT_CODES


@pytest.mark.parametrize("cli", ["segtrain", "segdeploy"])
def test_help_shows_the_exit_code_table(cli: str) -> None:
    from click.testing import CliRunner

    main = __import__(f"{cli}.cli", fromlist=["main"]).main
    result = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    flat = " ".join(result.output.split())
    lines = exit_code_lines((0, 1, 2, 3, 130)) if cli == "segdeploy" else exit_code_lines((0, 2, 1, 130, 143))
    for line in lines:
        assert " ".join(line.split()) in flat
