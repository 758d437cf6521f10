"""The import graph: layers depend downward only, and no module imports itself round a cycle.

Every ``import`` counts, also those inside functions and under ``TYPE_CHECKING``: an import moved into
a function to dodge a cycle is still a dependency. The layers, lowest first, are listed in
``docs/design.md``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "undertale"

# lowest first; a module may import its own layer (without cycles) and the layers below it
LAYERS = (
    ("undertale", "undertale.runtime"),
    ("undertale.settings",),
    ("undertale.data",),
    ("undertale.metrics",),
    ("undertale.models",),
    ("undertale.inference", "undertale.search"),
    ("undertale.tasks",),
    ("undertale.training",),
    ("undertale.evaluation", "undertale.report"),
    ("undertale.bench", "undertale.commands", "undertale.cli"),
)
# layers whose modules must import neither torch nor Lightning at module level (checking a config must stay light)
TORCH_FREE = ("undertale.settings", "undertale.runtime.runs", "undertale.runtime.errors")


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def _target(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix for alias in node.names]
    found = []
    for name in names:
        while name and name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES and name != module:
            found.append(name)
    return found


def imports() -> dict[str, set[str]]:
    """Each undertale module's imports of other undertale modules (every import statement, wherever it stands)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets.update(_target(module, node, path.name == "__init__.py"))
        graph[module] = targets
    return graph


def top_level_imports(path: Path) -> set[str]:
    """Third-party roots imported when the module is imported (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    roots = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def layer(module: str) -> int:
    best, rank = -1, None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), index
    assert rank is not None, f"{module} is in no layer: add it to LAYERS and docs/design.md"
    return rank


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer(module)


def test_no_upward_import():
    upward = [f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
              for module, targets in imports().items() for target in sorted(targets)
              if layer(target) > layer(module) and not module == "undertale"]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    found = cycles(imports())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(component) for component in found)


@pytest.mark.parametrize("prefix", TORCH_FREE)
def test_light_layers_import_no_torch(prefix):
    heavy = {"torch", "lightning", "pytorch_lightning", "torchmetrics", "transformers"}
    offenders = {module: sorted(top_level_imports(path) & heavy) for module, path in MODULES.items()
                 if module == prefix or module.startswith(prefix + ".")}
    assert not {module: roots for module, roots in offenders.items() if roots}


def test_the_graph_sees_function_local_and_relative_imports(tmp_path):
    """The scan is the test's eyes: an import hidden in a function, or written relatively, still counts."""
    module = "undertale.settings.store"
    source = "def f():\n    from ..models import encoder\n    import undertale.tasks\n"
    tree = ast.parse(source)
    found = {target for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for target in _target(module, node, False)}
    assert found == {"undertale.models.encoder", "undertale.tasks"}
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_every_generated_target_resolves_to_its_class():
    """The config store names its targets as strings (so the settings layer imports nothing above it)."""
    from hydra.utils import get_class

    from undertale.settings import store

    for name in ("MODEL_TARGET", "COLLATOR_TARGET", "DATA_TARGET", "PAIRS_TARGET"):
        path = getattr(store, name)
        assert get_class(path).__qualname__ == path.rsplit(".", 1)[1]


def test_the_generated_nodes_are_typed(tmp_path):
    """OmegaConf checks the types of the generated groups when a config is composed."""
    from hydra import compose, initialize_config_dir
    from omegaconf.errors import ValidationError

    from undertale.settings.store import CONF, register_configs

    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = compose("train", overrides=["optimizer.lr=2", "data=binaries", "data.paths=/usr/bin"])
        assert config.optimizer.lr == 2.0 and isinstance(config.optimizer.lr, float)
        assert config.data.paths == "/usr/bin"  # a sequence field is checked by its settings class, not by type
        for override in ("optimizer.lr=abc", "model.depth=1.5", "data.packing=maybe", "masking.probability=x"):
            with pytest.raises(Exception) as raised:
                compose("train", overrides=[override])
            assert isinstance(raised.value.__cause__, ValidationError), override
