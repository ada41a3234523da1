"""The repository's shape: imports run one way, private names stay in their file, each seed stream
has its own key. Read from the source with `ast`, so a lazy import inside a function counts too."""

import ast
from pathlib import Path

import prompts

ROOT = Path(__file__).resolve().parents[1]
MODULES = {path.stem: path for path in ROOT.glob("*.py")}


def _trees():
    return {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _imports(tree: ast.AST) -> set[str]:
    """The repository's top-level modules a file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MODULES)


def import_graph() -> dict[str, set[str]]:
    return {name: _imports(tree) - {name} for name, tree in _trees().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                return stack[stack.index(other):] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_top_level_files_import_each_other_without_a_cycle():
    graph = import_graph()
    assert {"train", "evaluate", "model", "data"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_nothing_imports_train_and_the_leaves_import_no_stage_script():
    graph = import_graph()
    assert [name for name, imported in graph.items() if "train" in imported] == []
    stages = {"train", "evaluate", "segment", "video", "app", "prepare"}
    for leaf in ("cli", "prompts", "synthetic", "model", "data", "distributed"):
        assert not graph[leaf] & stages, f"{leaf}.py imports stage script(s) {graph[leaf] & stages}"


def test_no_private_name_is_used_outside_its_file():
    reached = []
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in MODULES
                    and node.value.id != name and node.attr.startswith("_") and not node.attr.startswith("__")):
                reached.append(f"{name}.py: {node.value.id}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module in MODULES:
                reached += [f"{name}.py: from {node.module} import {a.name}" for a in node.names
                            if a.name.startswith("_")]
    assert reached == []


def test_every_seed_stream_has_a_key_of_its_own():
    keys = list(prompts.SEED_STREAMS.values())
    assert len(set(keys)) == len(keys)
