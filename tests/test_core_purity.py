"""detector/ stays a pure numpy/scipy core: no I/O libraries, no file access, no global RNG."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "detector"
MODULES = sorted(CORE.glob("*.py"))
ALLOWED_THIRD_PARTY = {"numpy", "scipy"}
FORBIDDEN = {"confluent_kafka", "prometheus_client", "pydantic", "orjson", "baselines", "streams"}
# The standard library's own global RNG and file/process access are as bad as a Kafka import.
FORBIDDEN_STDLIB = {"random", "io", "os", "pathlib", "shutil", "tempfile", "socket", "subprocess", "pickle", "logging"}
RNG_OK = {"default_rng", "Generator", "SeedSequence", "BitGenerator", "PCG64", "PCG64DXSM", "Philox", "SFC64"}
FILE_CALLS = {
    "open",
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "load",
    "save",
    "savez",
    "savez_compressed",
    "loadtxt",
    "savetxt",
    "genfromtxt",
    "fromfile",
    "tofile",
    "memmap",
}


def imported_modules(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: detector itself
                out.add("detector")
            elif node.module:
                out.add(node.module)
    return out


def import_problems(tree: ast.AST) -> list[str]:
    problems = []
    for mod in sorted(imported_modules(tree)):
        top = mod.split(".")[0]
        if top in FORBIDDEN or top in FORBIDDEN_STDLIB:
            problems.append(f"imports {mod}")
        elif top in ALLOWED_THIRD_PARTY or top == "detector" or top == "__future__":
            continue
        elif top not in sys.stdlib_module_names:
            problems.append(f"imports third-party {mod}")
    return problems


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def io_and_rng_problems(tree: ast.AST) -> list[str]:
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name == "open" or (last in FILE_CALLS and "." in name):  # open(), Path.open, np.load, ...
                problems.append(f"line {node.lineno}: calls {name}()")
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            parts = name.split(".")
            if len(parts) >= 3 and parts[0] in {"np", "numpy"} and parts[1] == "random" and parts[2] not in RNG_OK:
                problems.append(f"line {node.lineno}: uses global RNG {name}")
        if isinstance(node, ast.ImportFrom) and node.module == "numpy.random":
            bad = [a.name for a in node.names if a.name not in RNG_OK]
            if bad:
                problems.append(f"line {node.lineno}: imports {bad} from numpy.random")
    return problems


def test_core_modules_found() -> None:
    names = {p.name for p in MODULES}
    assert {
        "schema.py",
        "reference.py",
        "stats.py",
        "window.py",
        "drift.py",
        "decision.py",
        "monitor.py",
        "errors.py",
        "__init__.py",
    } <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_imports_only_numpy_scipy_stdlib(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert import_problems(tree) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_does_no_file_io_and_no_global_rng(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert io_and_rng_problems(ast.parse(source)) == []
    # grep-level backstop (also catches what the AST walk could miss, e.g. getattr tricks)
    for needle in ("np.random.seed", "random.seed(", "open(", "RandomState"):
        code_lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith((">>>", "...", "#"))]
        assert not any(needle in ln for ln in code_lines), f"{path.name} contains {needle!r}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import confluent_kafka", "imports confluent_kafka"),
        ("from prometheus_client import Counter", "imports prometheus_client"),
        ("import pydantic.fields", "imports pydantic.fields"),
        ("from orjson import loads", "imports orjson"),
        ("from baselines.store import X", "imports baselines.store"),
        ("import streams", "imports streams"),
        ("import random", "imports random"),
        ("import pandas", "imports third-party pandas"),
    ],
)
def test_checker_flags_bad_imports(source: str, expected: str) -> None:
    assert import_problems(ast.parse(source)) == [expected]


@pytest.mark.parametrize(
    "source",
    [
        "open('x')",
        "np.load('x.npy')",
        "np.savez(f, a=a)",
        "p.write_text('x')",
        "np.random.seed(0)",
        "np.random.normal(size=3)",
        "from numpy.random import rand",
        "import io\nio.open('x')",
    ],
)
def test_checker_flags_io_and_global_rng(source: str) -> None:
    assert io_and_rng_problems(ast.parse(source)) != []


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np\nrng = np.random.default_rng(0)",
        "from scipy import special, stats",
        "from detector.schema import MISSING\nfrom .errors import SnapshotError",
        "from collections.abc import Mapping\nimport dataclasses",
        "x = arrays.get('edges')",
    ],
)
def test_checker_accepts_clean_code(source: str) -> None:
    tree = ast.parse(source)
    assert import_problems(tree) == [] and io_and_rng_problems(tree) == []
