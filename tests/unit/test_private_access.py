"""No module of geode_mpi reaches into another object's private attributes, and the core's
modules import one another without a cycle (issue 14: a facade over a runtime, not a circle)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import geode_mpi

PACKAGE = Path(geode_mpi.__file__).parent

# (module path under geode_mpi, the accessed expression, attribute): each with why it is fine.
ALLOWED: dict[tuple[str, str, str], str] = {
    # The standard library's and numpy's own underscored names (nothing of ours).
    ("core/termination.py", "os", "_exit"): "os._exit: the documented immediate exit",
    ("transport/abort.py", "os", "_exit"): "os._exit: the documented immediate exit",
    ("transport/watchdog.py", "os", "_exit"): "os._exit: the documented immediate exit",
    (
        "codec/wire_parts.py",
        "copyreg",
        "_slotnames",
    ): "CPython's slot names, as copy/pickle find them",
    ("codec/arrays.py", "pickle", "_Unpickler"): "the pure-Python unpickler (find_class hook)",
    ("runner/cli.py", "parser()", "_actions"): "argparse keeps its actions only there",
    ("delivery/arriving.py", "parcel", "_replace"): "NamedTuple._replace: public namedtuple API",
    ("delivery/failures.py", "parcel", "_replace"): "NamedTuple._replace: public namedtuple API",
    ("core/poller.py", "asyncio", "_get_running_loop"): "asyncio's documented-for-loops look-up "
    "of the running loop (None when there is none; get_running_loop raises instead)",
    ("base/gate.py", "self.lock", "_is_owned"): "threading.Condition's RLock protocol",
    ("base/gate.py", "self.lock", "_release_save"): "threading.Condition's RLock protocol",
    ("base/gate.py", "self.lock", "_acquire_restore"): "threading.Condition's RLock protocol",
    ("base/gate.py", "lock", "_owner"): "Python 3.10: the levels held, of threading's own RLock",
    ("base/gate.py", "lock", "_count"): "Python 3.10: the levels held, of threading's own RLock",
    ("base/gate.py", "threading", "_PyRLock"): "Python 3.10: an RLock that tells the levels held",
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module_privates(tree: ast.Module) -> set[str]:
    """Underscored names a module defines at its top level (its own private helpers)."""
    names = set()
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
    return {name for name in names if name.startswith("_")}


def private_accesses(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, expression, attribute) of every ``x._name`` in a module where ``x`` is not
    self, cls, or one of the module's own private helpers (dunders are not private)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = {"self", "cls"} | _module_privates(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") and node.attr.endswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in own:
            continue
        yield node.lineno, ast.unparse(node.value), node.attr


def test_no_module_reaches_into_another_objects_private_attributes() -> None:
    found = []
    used = set()
    for path in modules():
        where = path.relative_to(PACKAGE).as_posix()
        for line, expression, attribute in private_accesses(path):
            key = (where, expression, attribute)
            if key in ALLOWED:
                used.add(key)
                continue
            found.append(f"geode_mpi/{where}:{line}: {expression}.{attribute}")
    assert not found, "private attributes of another object:\n" + "\n".join(found)
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"allow-list entries no longer needed (remove them): {stale}"


def test_the_scan_finds_a_private_access(tmp_path: Path) -> None:
    module = tmp_path / "example.py"
    module.write_text(
        "_helper = object()\n"
        "def f(geode, self):\n"
        "    self._ok, _helper._fine, geode.__dict__\n"
        "    return geode._engine\n"
    )
    assert list(private_accesses(module)) == [(4, "geode", "_engine")]


def _imports(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that a module imports, TYPE_CHECKING imports included (a
    cycle through them is a cycle all the same: each module needs the other to be read)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.startswith(package + "."))
    return found


def import_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """Module name -> the modules of the same folder it imports."""
    names = {f"{package}.{path.stem}": path for path in folder.glob("*.py")}
    return {
        name: {other for other in _imports(path, package) if other in names and other != name}
        for name, path in names.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path back to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                return [*path[path.index(other) :], other]
            if other not in state and (cycle := visit(other)) is not None:
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)) is not None:
            return cycle
    return None


def test_the_core_imports_without_a_cycle() -> None:
    graph = import_graph(PACKAGE / "core", "geode_mpi.core")
    assert "geode_mpi.core.runtime" in graph
    assert find_cycle(graph) is None, f"import cycle in geode_mpi/core: {find_cycle(graph)}"


def test_siblings_use_the_runtime_not_the_facade() -> None:
    graph = import_graph(PACKAGE / "core", "geode_mpi.core")
    importers = sorted(
        name for name, imported in graph.items() if "geode_mpi.core.geode" in imported
    )
    assert importers == ["geode_mpi.core.__init__"]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set(), "c": {"a", "b"}}, None),
    ],
)
def test_the_cycle_finder(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected
