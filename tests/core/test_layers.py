"""The layers and their import rules (docs/architecture.md), checked two ways:

- at run time: each layer imported in a fresh interpreter leaves the frameworks
  it must not use out of `sys.modules`;
- statically: every `import` in every module (including those inside functions
  and under TYPE_CHECKING) stays inside what its layer may use, and kloader's
  modules import each other without a cycle.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kloader

PACKAGE = Path(kloader.__file__).parent
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch", "PIL")

# layer -> (what importing it may load, what it may import statically)
RULES: dict[str, tuple[set[str], set[str]]] = {
    # The public facade: `import kloader` loads no framework; its names import
    # their layer on first use.
    "kloader": (set(), {"kloader"}),
    "kloader._core": (set(), {"kloader._core"}),
    "kloader._workers": ({"torch"}, {"kloader._core", "kloader._workers", "torch"}),
    "kloader._images": ({"PIL", "torch"}, {"kloader._core", "kloader._images", "PIL", "torch"}),
    "kloader.augment": ({"PIL"}, {"kloader._core", "kloader.augment", "PIL"}),
    "kloader._keras": (
        {"keras", "torch", "PIL"},
        {"kloader", "keras", "torch", "tensorflow", "jax", "PIL"},
    ),
}


def layer_of(module: str) -> str:
    for layer in sorted(RULES, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    raise AssertionError(f"{module} belongs to no layer")


def modules_of(layer: str) -> list[str]:
    """The dotted names of the modules in `layer` (for "kloader": the top-level files)."""
    if layer == "kloader":
        return ["kloader", "kloader.__main__"]
    folder = PACKAGE.joinpath(*layer.split(".")[1:])
    return sorted(
        f"{layer}.{path.stem}" if path.stem != "__init__" else layer for path in folder.glob("*.py")
    )


def loaded_after_importing(modules: list[str]) -> set[str]:
    """The top-level packages in sys.modules after importing `modules` in a fresh interpreter."""
    code = (
        "import json, sys\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("layer", sorted(RULES))
def test_importing_a_layer_loads_only_the_frameworks_it_may_use(layer: str) -> None:
    """Each layer, imported alone, loads none of the frameworks its rule excludes."""
    modules = modules_of(layer) if layer != "kloader" else ["kloader"]
    allowed, _ = RULES[layer]
    if "keras" in allowed:
        # Keras imports the backends it finds installed, whatever KERAS_BACKEND says.
        allowed = allowed | loaded_after_importing(["keras"])
    loaded = loaded_after_importing(modules) & set(FRAMEWORKS)
    assert loaded <= allowed, f"importing {layer} loads {sorted(loaded - allowed)}"


# What a loader with workers imports before torch: it starts its fork server
# first, so that the server's import of torch overlaps with this process's.
BEFORE_TORCH = [
    "kloader._workers",
    "kloader._workers.options",
    "kloader._workers.plan",
    "kloader._workers.fork_server",
    "kloader._workers.multiprocessing_internals",
]


def test_what_a_loader_imports_before_starting_its_fork_server_loads_no_torch() -> None:
    loaded = loaded_after_importing(BEFORE_TORCH) & set(FRAMEWORKS)
    assert "torch" not in loaded, f"importing {BEFORE_TORCH} loads {sorted(loaded)}"


def imports_in(module: str) -> list[tuple[str, int]]:
    """Every module `module` imports anywhere in its source, with the line."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(source.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c` imports a.b.c when c is a module, else a name of a.b.
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def all_modules() -> list[str]:
    return [module for layer in RULES for module in modules_of(layer)]


@pytest.mark.parametrize("module", all_modules())
def test_every_import_stays_inside_its_layers_rule(module: str) -> None:
    """No module imports a framework or a kloader layer that its layer's rule excludes."""
    _, allowed = RULES[layer_of(module)]
    for name, line in imports_in(module):
        top = name.split(".")[0]
        if top not in (*FRAMEWORKS, "kloader"):
            continue  # the standard library and NumPy are open to every layer
        ok = any(name == rule or name.startswith(rule + ".") for rule in allowed) or (
            "kloader" in allowed and top == "kloader"
        )
        assert ok, f"{module} (line {line}) imports {name}, outside the {layer_of(module)} layer's rule"


def test_kloader_modules_import_each_other_without_a_cycle() -> None:
    """The graph of imports between kloader's modules (type-only ones too) has no cycle."""
    names = set(all_modules())

    def target(name: str) -> str | None:
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph = {
        module: {t for name, _ in imports_in(module) if (t := target(name)) and t != module}
        for module in names
    }
    # Package __init__ files that only re-export are not edges back into their package.
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for successor in sorted(graph[module]):
            if state.get(successor) == 1:
                cycle = path[path.index(successor) :] + [successor] if successor in path else [successor]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if successor not in state:
                visit(successor, [*path, successor])
        state[module] = 2

    for module in sorted(names):
        if module not in state:
            visit(module, [module])


def test_the_public_api_is_exactly_these_names() -> None:
    """The layout is private: `kloader` exports these names and nothing else, and each
    lives where the layers put it."""
    assert kloader.__all__ == [
        "BackupAndRestore",
        "EpochSync",
        "GlobalRandomWarning",
        "HFDataset",
        "ImageFolder",
        "Loader",
        "SampleError",
        "WorkerError",
        "augment",
        "save_preview",
    ]
    homes = {name: getattr(kloader, name).__module__ for name in kloader.__all__ if name != "augment"}
    assert homes == {
        "BackupAndRestore": "kloader._keras.callbacks",
        "EpochSync": "kloader._keras.callbacks",
        "GlobalRandomWarning": "kloader._core.errors",
        "HFDataset": "kloader._images.hf_dataset",
        "ImageFolder": "kloader._images.folder",
        "Loader": "kloader._keras.loader",
        "SampleError": "kloader._core.errors",
        "WorkerError": "kloader._core.errors",
        "save_preview": "kloader._images.preview",
    }
