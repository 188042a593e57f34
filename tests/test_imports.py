"""The package's import graph has no cycle (function-local imports included): each concern has one home."""
import ast

from tests.conftest import ROOT

PACKAGES = ("shared", "jepa_arm", "vlm_arm", "experiments", "plots")


def import_graph() -> dict[str, set[str]]:
    files = {}
    for package in PACKAGES:
        for f in (ROOT / package).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = f

    def owner(name: str) -> str | None:  # the project module an imported name lives in
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in files}
    for module, f in files.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in filter(None, map(owner, names)):
                if target != module and not module.startswith(target + "."):  # a package's own __init__
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_walker_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_project():
    graph = import_graph()
    assert "shared.config.loader" in graph and "shared.registry" in graph["shared.config.loader"]
    assert cycles(graph) == []


def test_the_registry_imports_nothing_of_the_project():
    assert import_graph()["shared.registry"] == set()


def test_training_and_evaluation_import_nothing_from_profiling():
    """Measuring (shared/profiling: step timer, latency harness, memory and FLOP estimates) sits above
    what it measures: the loop, the evaluators and the arms run without it."""
    graph = import_graph()
    users = {m for m, targets in graph.items() if any(t.startswith("shared.profiling") for t in targets)}
    assert users and not {m for m in users if m.startswith(("shared.training", "shared.evaluation", "jepa_arm",
                                                            "vlm_arm", "shared.pipeline", "shared.arm"))}
