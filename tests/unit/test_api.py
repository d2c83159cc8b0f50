"""The public API and the layering: what users import, and imports only going downward."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import geode_mpi

PACKAGE = Path(geode_mpi.__file__).resolve().parent
# Bottom to top: a module may import only from its own layer or layers below it.
LAYERS = [
    "base",
    "codec",
    "transport",
    "queues",
    "delivery",
    "persistence",
    "core",
    "runner",
    "top",
]
BASE_MODULES = {"errors", "message", "tracing", "_version"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "geode_mpi":
        raise ValueError(module)
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "top"
    return "base" if parts[1] in BASE_MODULES else parts[1]


def test_all_is_a_literal_list_of_what_the_package_exports() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    literal = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__"
    )
    names = ast.literal_eval(literal)
    assert names == sorted(names, key=lambda n: (n.startswith("_"), n))
    assert set(names) == set(geode_mpi.__all__)
    for name in names:
        assert getattr(geode_mpi, name) is not None
    public = {n for n in vars(geode_mpi) if not n.startswith("_")}
    modules = {"codec", "core", "delivery", "errors", "message", "queues", "transport", "runner"}
    modules |= {"base", "persistence", "tracing"}
    assert public - modules == set(names) - {"__version__"}


def test_every_error_derives_from_geode_error() -> None:
    for name in geode_mpi.__all__:
        obj = getattr(geode_mpi, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, geode_mpi.GeodeError)


def test_terminated_is_exported_as_a_geode_error_and_an_interrupted_error() -> None:
    assert "Terminated" in geode_mpi.__all__
    assert issubclass(geode_mpi.Terminated, geode_mpi.GeodeError)
    assert issubclass(geode_mpi.Terminated, InterruptedError)
    error = geode_mpi.Terminated(10.0, 20.0)
    assert (error.waited, error.grace, error.left) == (10.0, 20.0, 10.0)
    assert "term_grace=20 s" in str(error)


def test_imports_only_go_down_the_layers() -> None:
    bad = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts)
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        mine = LAYERS.index(layer_of(module))
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                inner = target.startswith("geode_mpi.")
                if inner and LAYERS.index(layer_of(target)) > mine:
                    bad.append(f"{module} imports {target}")
                if target.startswith("mpi4py") and layer_of(module) not in ("transport", "runner"):
                    bad.append(f"{module} imports {target}: only transport and runner may")
    assert bad == []


def imported(path: Path) -> list[str]:
    """The absolute module names a module imports (at run time or for type checking)."""
    targets = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets.append(node.module)
        elif isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
    return targets


def core_violations(paths: list[Path]) -> list[str]:
    """Imports of a transport sub-module by core modules (issue 14: the core takes from the
    transport only its package, geode_mpi/transport/__init__.py; pure helpers come from base)."""
    return [
        f"{path.name} imports {target}: import it from geode_mpi.transport (or geode_mpi.base)"
        for path in paths
        for target in imported(path)
        if target.startswith("geode_mpi.transport.")
    ]


def base_violations(paths: list[Path]) -> list[str]:
    """Imports by base modules of anything but the standard library and base itself (pure
    Python: no numpy, no mpi4py, nothing above it)."""
    bad = []
    for path in paths:
        for target in imported(path):
            top = target.split(".")[0]
            ours = top == "geode_mpi" and layer_of(target) == "base"
            if not ours and top not in sys.stdlib_module_names:
                bad.append(f"{path.name} imports {target}")
    return bad


def test_core_imports_the_transport_only_through_its_package() -> None:
    assert core_violations(sorted((PACKAGE / "core").glob("*.py"))) == []


def test_base_modules_import_only_the_standard_library_and_base() -> None:
    modules = [PACKAGE / f"{name}.py" for name in sorted(BASE_MODULES)]
    assert base_violations(modules + sorted((PACKAGE / "base").glob("*.py"))) == []


def test_the_layer_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from geode_mpi.base.gate import Gate\n"
        "from geode_mpi.transport import open_world\n"
        "if TYPE_CHECKING:\n"
        "    from geode_mpi.transport.watchdog import Watchdog\n"
    )
    assert core_violations([bad]) == [
        "bad.py imports geode_mpi.transport.watchdog: import it from geode_mpi.transport "
        "(or geode_mpi.base)"
    ]
    assert base_violations([bad]) == [
        "bad.py imports numpy",
        "bad.py imports geode_mpi.transport",
        "bad.py imports geode_mpi.transport.watchdog",
    ]


def test_embedded_world_does_not_import_mpi4py() -> None:
    import subprocess
    import sys

    code = "import sys, geode_mpi; g = geode_mpi.Geode(); print('mpi4py.MPI' in sys.modules)"
    from mpirun import clean_env

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr


def test_package_docstrings_give_their_layer_number() -> None:
    # "Layer 5, persistence: ..." must match the stack above (numbers went stale once).
    wrong = []
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        layer = init.parent.name
        first = (ast.get_docstring(ast.parse(init.read_text())) or "").splitlines()[0]
        if not first.startswith(f"Layer {LAYERS.index(layer)}, "):
            wrong.append(f"{layer}: {first!r} (it is layer {LAYERS.index(layer)})")
    assert wrong == []
