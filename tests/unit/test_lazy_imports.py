"""numpy (14-15 MB a rank) and h5py load only when a job uses arrays or checkpoints (issue 15).

A job of Python objects imports neither (run in a subprocess: this one has numpy loaded); the
codec tells an ndarray without importing numpy, and an array sent before it learnt numpy's type
is encoded exactly as the fast paths encode it afterwards. tests/test_memory.py runs the same
job under mpiexec -n 2.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mpirun import clean_env, python

import geode_mpi
from geode_mpi.base.ondemand import on_first_use

PACKAGE = Path(geode_mpi.__file__).resolve().parent
HEAVY = ("numpy", "h5py")
JOB = "tests/scripts/python_objects.py"
# Standard modules a job of Python objects no longer loads: dataclasses (which imports
# inspect, ast and dis: 1.1 MB a rank), logging (0.4 MB) and traceback (0.1), issue 15.
HEAVY_STDLIB = ("dataclasses", "inspect", "ast", "dis", "logging", "traceback")


def _checks_type(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def eager_imports(source: str, where: str) -> list[str]:
    """Imports of numpy or h5py that run when a module of ``source`` is imported: at module
    level, outside ``if TYPE_CHECKING:`` (a function's own import runs only when called)."""
    found = []
    pending: list[ast.stmt] = list(ast.parse(source).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If):
            pending += node.orelse if _checks_type(node) else node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            pending += [stmt for handler in node.handlers for stmt in handler.body]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            found += [
                f"{where}:{node.lineno} imports {name}"
                for name in names
                if name and name.split(".")[0] in HEAVY
            ]
    return found


def test_no_module_imports_numpy_or_h5py_when_it_is_imported() -> None:
    eager = [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in eager_imports(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    ]
    assert eager == []


def test_the_eager_import_check_finds_what_it_forbids() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy as np\n"
        "if TYPE_CHECKING:\n    import h5py\nelse:\n    from h5py import File\n"
        "try:\n    import numpy.linalg\nexcept ImportError:\n    pass\n"
        "def later():\n    import numpy\n"
    )
    assert sorted(eager_imports(source, "bad.py")) == [
        "bad.py:2 imports numpy",
        "bad.py:6 imports h5py",
        "bad.py:8 imports numpy.linalg",
    ]


def run_python(code: str) -> str:
    result = python(["-c", code], env=clean_env(), timeout=120)
    assert result.returncode == 0, result.explain()
    return result.stdout.strip().splitlines()[-1]


def test_importing_every_module_loads_neither_numpy_nor_h5py() -> None:
    """Module-level code (a type alias evaluated at run time, say) would load numpy too."""
    code = (
        "import importlib, pkgutil, sys, geode_mpi\n"
        "for info in pkgutil.walk_packages(geode_mpi.__path__, 'geode_mpi.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
        "print(sorted(n for n in sys.modules if n == 'numpy' or n.startswith('h5py.')))"
    )
    assert run_python(code) == "[]"


def test_a_job_of_python_objects_loads_neither_in_the_embedded_world() -> None:
    """send, receive, request, run, a topic and a work queue, of str, dict, list, bytes and a
    Message subclass with an attribute, then close()."""
    result = python([JOB], env=clean_env(), timeout=120)
    assert result.returncode == 0, result.explain()
    assert result.stdout.strip() == "loaded: []", result.explain()


def test_a_job_of_python_objects_loads_no_heavy_standard_module() -> None:
    """Value classes are plain (`geode_mpi.base.record`); the ``geode_mpi`` logger imports
    logging when it first logs."""
    code = (
        "import runpy, sys\n"
        f"runpy.run_path({JOB!r}, run_name='__main__')\n"
        f"print(sorted(name for name in {HEAVY_STDLIB!r} if name in sys.modules))"
    )
    assert run_python(code) == "[]"


def test_the_geode_logger_imports_logging_when_it_first_logs() -> None:
    """A warning reaches the job's handlers as before; only then is logging imported."""
    code = (
        "import sys\n"
        "from geode_mpi.base.logger import log\n"
        "before = 'logging' in sys.modules\n"
        "log.warning('from %s', 'geode')\n"
        "import logging\n"
        "caught = []\n"
        "logging.getLogger('geode_mpi').addHandler(logging.Handler())\n"
        "logging.getLogger('geode_mpi').handlers[0].emit = caught.append\n"
        "log.warning('again %d', 2)\n"
        "print(before, [(r.name, r.getMessage(), r.funcName) for r in caught])"
    )
    assert run_python(code) == "False [('geode_mpi', 'again 2', '<module>')]"


def test_arrays_sent_after_numpy_is_imported_late_arrive_intact() -> None:
    result = python([JOB, "arrays"], env=clean_env(), timeout=120)
    assert result.returncode == 0, result.explain()
    assert result.stdout.strip() == "loaded: ['numpy']", result.explain()


def test_the_codec_learns_ndarray_once_numpy_is_imported_and_encodes_alike() -> None:
    """Before numpy is known, an array takes encode's general path; the same array then goes
    the fast paths (a template, a large array alone), byte for byte the same message."""
    code = (
        "import sys\n"
        "from geode_mpi.codec import arrays, encode, make_stamp\n"
        "from geode_mpi import Message\n"
        "before = (arrays.is_ndarray([1]), arrays.ndarray.__name__, 'numpy' in sys.modules)\n"
        "import numpy as np\n"
        "stamp = make_stamp(1, 2, 3.0, 0, 1)\n"
        "out = []\n"
        "for n in (4, 4, 4, 5000, 5000):\n"
        "    data = np.arange(n, dtype=np.int32)\n"
        "    fast = arrays.ndarray is np.ndarray\n"
        "    meta, frames = encode(Message(data), stamp)\n"
        "    out.append((fast, meta, [bytes(f) for f in frames]))\n"
        "assert out[0][1:] == out[1][1:] == out[2][1:] and out[3][1:] == out[4][1:]\n"
        "print(before, [fast for fast, _, _ in out], arrays.is_ndarray(np.zeros(1)))"
    )
    assert run_python(code) == ("(False, '_NoArray', False) [False, True, True, True, True] True")


def test_a_stand_in_imports_its_module_at_first_use_then_gets_out_of_the_way() -> None:
    namespace: dict[str, Any] = {}
    seen: list[ModuleType] = []
    namespace["mod"] = on_first_use("json", namespace, "mod", then=seen.append)
    assert repr(namespace["mod"]) == "<module 'json', imported on first use>"
    assert namespace["mod"].dumps([1]) == "[1]"
    assert namespace["mod"] is sys.modules["json"] and seen == [sys.modules["json"]]
