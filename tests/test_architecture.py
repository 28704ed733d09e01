"""Structural rules of the code base, checked by parsing the sources (nothing here imports the code under test).

- The library's import graph, counting every import (also those inside functions), has no cycle, and the
  scaling rule (``efficientnet_jax/scaling.py``) imports nothing from the package: the core can then be read,
  and changed, bottom-up.
- No module imports or accesses another module's ``_private`` name, anywhere in the repository (library,
  training program, tests, benchmarks, experiments, notebooks): what a neighbour needs is made public.
- Inside the library no function imports a package module: a function-level import that dodges a cycle
  hides the cycle; only optional third-party dependencies are imported where they are used.
"""
from __future__ import annotations

import ast
import json
import pathlib
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "efficientnet_jax"
# Where the repository's own Python lives (notebooks are read from colab/ too).
SOURCE_DIRS = (PACKAGE, "train", "tests", "benchmarks", "experiments", "colab")


def module_name(path: pathlib.Path) -> str:
    """Dotted name a file is imported by: package-qualified inside a package (a directory with __init__.py),
    else its bare stem (tests/helpers.py is ``helpers``: pytest puts tests/ on sys.path)."""
    parts = [path.stem] if path.name != "__init__.py" else []
    parent = path.parent
    while (parent / "__init__.py").exists():
        parts.insert(0, parent.name)
        parent = parent.parent
    return ".".join(parts)


def python_files(*dirs: str) -> list[pathlib.Path]:
    files = []
    for d in dirs:
        files += [p for p in sorted((ROOT / d).rglob("*.py")) if "__pycache__" not in p.parts]
    return files


@dataclass(frozen=True)
class Source:
    label: str          # what a failure message names: the path relative to the repository (and a notebook's cell)
    module: str | None  # the dotted name of the module this source is, or None (a notebook cell)
    is_package: bool    # an __init__.py: its relative imports resolve against itself
    tree: ast.AST


def module_sources() -> list[Source]:
    return [Source(str(p.relative_to(ROOT)), module_name(p), p.name == "__init__.py", ast.parse(p.read_text(), str(p)))
            for p in python_files(*SOURCE_DIRS)]


def notebook_sources() -> list[Source]:
    """The code cells of colab/*.ipynb, shell (`!`) and magic (`%`) lines dropped."""
    sources = []
    for path in sorted((ROOT / "colab").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for index, cell in enumerate(cells):
            if cell["cell_type"] != "code":
                continue
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            code = "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in text.splitlines())
            label = f"{path.relative_to(ROOT)}[cell {index}]"
            sources.append(Source(label, None, False, ast.parse(code, label)))
    return sources


def all_modules() -> set[str]:
    return {module_name(p) for p in python_files(*SOURCE_DIRS)}


def absolute(source: Source, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <module> import ...``, relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = (source.module or "").split(".")
    if not source.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def import_targets(source: Source, node: ast.Import | ast.ImportFrom, modules: set[str]) -> list[str]:
    """The repository modules an import statement makes Python run, as Python does it: ``import a.b`` -> a.b;
    ``from a import b`` -> a.b when b is a submodule, else a (b comes from a's __init__); and every package
    above the target whose __init__ runs for it. Packages above the importing module itself are not counted:
    they are already being imported when it runs (every module would otherwise depend on its package's
    __init__, which imports it back)."""
    own = (source.module or "").split(".")
    own_parents = {".".join(own[:i]) for i in range(1, len(own) + (1 if source.is_package else 0))}

    def with_parents(name):
        parts = name.split(".")
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]
        return [p for p in parents if p in modules and p not in own_parents] + [name]

    targets = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in modules:
                targets += with_parents(alias.name)
    else:
        base = absolute(source, node)
        if base in modules:
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:  # base's __init__ runs first, unless it is already running
                    targets += [p for p in with_parents(base) if p not in own_parents] + [submodule]
                else:  # a name defined by base's __init__
                    targets += with_parents(base)
    return list(dict.fromkeys(t for t in targets if t != source.module))


# ---------------------------------------------------------------- (a) the library's import graph

def package_graph() -> dict[str, dict[str, list[str]]]:
    """module -> {imported package module: [file:line, ...]} over every import statement, nested ones included."""
    modules = all_modules()
    graph = {}
    for source in module_sources():
        if not source.label.startswith(PACKAGE + "/"):
            continue
        edges = graph.setdefault(source.module, {})
        for node in ast.walk(source.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in import_targets(source, node, modules):
                    if target.split(".")[0] == PACKAGE and target != source.module:
                        edges.setdefault(target, []).append(f"{source.label}:{node.lineno}")
    return graph


def strongly_connected(graph: dict[str, dict]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (a cycle each)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycle_through(graph: dict[str, dict], component: list[str]) -> list[str]:
    """One shortest cycle inside a strongly connected component, starting from its first module."""
    start, members = component[0], set(component)
    paths, queue = {start: [start]}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, {})):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def test_package_import_graph_has_no_cycle():
    graph = package_graph()
    assert f"{PACKAGE}.scaling" in graph and f"{PACKAGE}.model" in graph, sorted(graph)
    messages = []
    for component in strongly_connected(graph):
        cycle = cycle_through(graph, component)
        where = [f"  {a} -> {b}: {', '.join(graph[a][b])}" for a, b in zip(cycle, cycle[1:])]
        messages.append(" -> ".join(cycle) + "\n" + "\n".join(where))
    assert not messages, "import cycles in the package:\n" + "\n".join(messages)


def test_scaling_rule_imports_nothing_from_the_package():
    imports = package_graph()[f"{PACKAGE}.scaling"]
    assert not imports, "efficientnet_jax/scaling.py must import nothing from the package: " + "; ".join(
        f"{target} ({', '.join(lines)})" for target, lines in sorted(imports.items()))


# ---------------------------------------------------------------- (b) no cross-module _private names

def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_aliases(source: Source, modules: set[str]) -> dict[str, str]:
    """Local name -> repository module, for every ``import X [as a]`` and ``from P import m [as a]`` in the file.
    ``import a.b`` binds ``a`` (the package); attribute chains are followed from there."""
    aliases = {}
    for node in ast.walk(source.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    aliases[alias.asname] = alias.name
                elif not alias.asname and alias.name.split(".")[0] in modules:
                    aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(source, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return aliases


def resolve_attribute(node: ast.AST, aliases: dict[str, str], modules: set[str]) -> str | None:
    """The repository module an expression such as ``train.train`` or ``ip`` denotes, or None."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = resolve_attribute(node.value, aliases, modules)
        if owner and f"{owner}.{node.attr}" in modules:
            return f"{owner}.{node.attr}"
    return None


def private_uses(source: Source, modules: set[str]) -> list[str]:
    aliases = module_aliases(source, modules)
    found = []

    def flag(node, module, name):
        if module != source.module:
            found.append(f"{source.label}:{node.lineno}: {module}.{name}")

    for node in ast.walk(source.tree):
        if isinstance(node, ast.ImportFrom):
            base = absolute(source, node)
            if base in modules:
                for alias in node.names:
                    if is_private(alias.name):
                        flag(node, base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                for i in range(1, len(parts)):
                    if ".".join(parts[:i]) in modules and is_private(parts[i]):
                        flag(node, ".".join(parts[:i]), parts[i])
                        break
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = resolve_attribute(node.value, aliases, modules)
            if owner:
                flag(node, owner, node.attr)
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            # getattr(module, "_name"), monkeypatch.setattr(module, "_name", ...) and the like
            func = node.func
            func_name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            name = node.args[1]
            if func_name in ("getattr", "setattr", "hasattr", "delattr") and isinstance(name, ast.Constant) \
                    and isinstance(name.value, str) and is_private(name.value):
                owner = resolve_attribute(node.args[0], aliases, modules)
                if owner:
                    flag(node, owner, name.value)
    return found


def test_no_module_uses_another_modules_private_names():
    modules = all_modules()
    sources = module_sources() + notebook_sources()
    assert any(".ipynb[" in s.label for s in sources), "no notebook cells found"
    offences = [line for source in sources for line in private_uses(source, modules)]
    assert not offences, "private names used across modules (make them public or move them):\n" + "\n".join(offences)


# ---------------------------------------------------------------- (c) no function-level package imports

def function_level_package_imports(source: Source, modules: set[str], package: str = PACKAGE) -> list[str]:
    found = []
    for func in ast.walk(source.tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    in_package = [t for t in import_targets(source, node, modules) if t.split(".")[0] == package]
                    if in_package or (isinstance(node, ast.ImportFrom) and node.level):
                        found.append(f"{source.label}:{node.lineno}: {', '.join(in_package) or absolute(source, node)}"
                                     f" imported inside {getattr(func, 'name', 'lambda')}()")
    return sorted(set(found))


def test_no_function_level_imports_of_package_modules():
    modules = all_modules()
    offences = [line for source in module_sources() if source.label.startswith(PACKAGE + "/")
                for line in function_level_package_imports(source, modules)]
    assert not offences, ("function-level imports of package modules (import at the top; a cycle means a module "
                          "must be split):\n" + "\n".join(offences))


# ---------------------------------------------------------------- the checker itself, on small sources

def parsed(code: str, module: str | None = "pkg.a", is_package: bool = False) -> Source:
    return Source("x.py", module, is_package, ast.parse(code))


def test_checker_resolves_relative_imports_and_submodules():
    modules = {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"}
    source = parsed("from . import b\nfrom .sub import c, x\nfrom pkg import a\nimport pkg.sub.c\n"
                    "from . import public_name\nimport pkg as p\n", module="pkg.b")
    targets = [import_targets(source, n, modules) for n in source.tree.body]
    assert targets == [[], ["pkg.sub", "pkg.sub.c"], ["pkg.a"], ["pkg.sub", "pkg.sub.c"], ["pkg"], ["pkg"]]
    init = parsed("from .c import y\nfrom .. import a\n", module="pkg.sub", is_package=True)
    assert [import_targets(init, n, modules) for n in init.tree.body] == [["pkg.sub.c"], ["pkg.a"]]
    leaf = parsed("from ..b import y\n", module="pkg.sub.c")
    assert import_targets(leaf, leaf.tree.body[0], modules) == ["pkg.b"]


def test_checker_finds_cycles_and_private_uses():
    graph = {"a": {"b": ["a.py:1"]}, "b": {"c": ["b.py:1"]}, "c": {"a": ["c.py:1"]}, "d": {"a": ["d.py:1"]}}
    (component,) = strongly_connected(graph)
    assert cycle_through(graph, component) == ["a", "b", "c", "a"]
    modules = {"pkg", "pkg.a", "pkg.b", "train", "train.train"}
    source = parsed(
        "import train.train\nfrom pkg import b as bee\nfrom pkg.b import _hidden, __version__, public\n"
        "def f():\n    return train.train._step(bee._x, bee.__doc__, getattr(bee, '_y'), self._own)\n",
        module="tests_x")
    uses = [line.split(": ")[1] for line in private_uses(source, modules)]
    assert sorted(uses) == ["pkg.b._hidden", "pkg.b._x", "pkg.b._y", "train.train._step"]
    own = parsed("import pkg.a as me\nme._fine = 1\n", module="pkg.a")
    assert private_uses(own, modules) == []
    nested = parsed("def f():\n    from . import b\n    import numpy\n")
    assert [line.split(": ")[1] for line in function_level_package_imports(nested, modules, "pkg")] == ["pkg.b imported inside f()"]
