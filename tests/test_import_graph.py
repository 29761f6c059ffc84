"""The modules of speechbrain_rsc import only downward (issue 21, item 3).

The graph is read from the source with :mod:`ast`: every ``import`` and
``from ... import`` of the package, at module level and inside functions
(a function-local import hides a cycle from Python, not from this test);
``from package import name`` is an edge to ``package.name`` where that
is a submodule. A cycle fails the test, named module by module.
"""

import ast
from pathlib import Path

import speechbrain_rsc

PACKAGE = "speechbrain_rsc"
ROOT = Path(speechbrain_rsc.__file__).parent


def module_files(root=ROOT, package=PACKAGE):
    """Dotted module name -> source file, for every module of the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = path
    return modules


def imported(node, module, is_package, modules):
    """The package modules an import statement ``node`` of ``module``
    reaches, each submodule named in a ``from`` import included.
    """
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    if node.level:
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    targets = [source] if source in modules else []
    targets += [
        f"{source}.{a.name}"
        for a in node.names
        if f"{source}.{a.name}" in modules
    ]
    return targets


def import_graph(modules):
    """Module -> the set of package modules it imports, anywhere in it."""
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(imported(node, module, is_package, modules))
        edges.discard(module)
        graph[module] = edges
    return graph


def knots(graph):
    """The strongly connected components of more than one module
    (Tarjan's algorithm): sets of modules that all reach each other.
    """
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def find_cycles(graph):
    """One cycle per :func:`knots` component, as a list of modules ending
    where it began.
    """
    return [_cycle_in(graph, component) for component in knots(graph)]


def _cycle_in(graph, component):
    """A path through ``component`` back to its first module."""
    start = min(component)
    path, seen = [start], {start}
    while True:
        succs = sorted(graph[path[-1]] & component)
        if start in succs and len(path) > 1:
            return path + [start]
        step = next((s for s in succs if s not in seen), None)
        if step is None:  # the walk closed on a module after the start
            return path[path.index(succs[0]) :] + [succs[0]]
        path.append(step)
        seen.add(step)


def test_the_graph_sees_function_level_and_submodule_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg import b\n")
    (package / "b.py").write_text("from .sub import c\n")
    (package / "sub" / "c.py").write_text("from ..a import f\n")
    graph = import_graph(module_files(package, "pkg"))
    assert graph["pkg.a"] == {"pkg", "pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_the_package_has_no_import_cycle():
    graph = import_graph(module_files())
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(
        f"{' -> '.join(cycle)} (of the knot {', '.join(sorted(knot))})"
        for cycle, knot in zip(cycles, knots(graph))
    )
