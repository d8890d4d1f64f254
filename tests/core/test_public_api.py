"""The public surface is pinned: each public namespace exports exactly the names listed in
tests/core/public_api/<namespace>.txt, each resolves, and type checkers see the same names
at the top level as `import jaxpoint.core` serves lazily."""

import ast
import importlib
import pathlib
import subprocess
import sys

import jaxpoint.core
import pytest

PINS = pathlib.Path(__file__).parent / "public_api"
NAMESPACES = sorted(p.stem for p in PINS.glob("*.txt"))


def _pinned(namespace: str) -> list[str]:
    return [line for line in (PINS / f"{namespace}.txt").read_text().splitlines() if line]


def test_the_public_namespaces():
    # jaxpoint.core, each namespace it serves as an attribute, and the inspection API.
    served = [f"jaxpoint.core.{name}" for name in jaxpoint.core._SUBMODULES]
    assert NAMESPACES == sorted(["jaxpoint.core", "jaxpoint.core.inspection", *served])


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_exports_exactly_the_pinned_names(namespace):
    module = importlib.import_module(namespace)
    exported = sorted(module.__all__)
    pinned = _pinned(namespace)
    assert pinned == sorted(pinned), f"keep {namespace}.txt sorted"
    assert sorted(set(exported) - set(pinned)) == [], f"new in {namespace}: pin or unexport"
    assert sorted(set(pinned) - set(exported)) == [], f"gone from {namespace}"
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == [], f"{namespace}.__all__ names what it does not define"


def test_internals_stay_out_of_public_namespaces():
    internals = {"SaveJob", "ensure_committed", "write_step_metadata", "read_step_metadata",
                 "reset_preemption_handler", "handler_for_args", "handler_for_typestr",
                 "handler_supports", "STEP_METADATA_FILE"}
    leaked = {ns: sorted(internals & set(_pinned(ns))) for ns in NAMESPACES}
    assert {ns: names for ns, names in leaked.items() if names} == {}


def _type_checking_names() -> set[str]:
    source = pathlib.Path(jaxpoint.core.__file__).read_text()
    block = next(node for node in ast.parse(source).body
                 if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    return {alias.asname or alias.name for node in block.body
            if isinstance(node, ast.ImportFrom) for alias in node.names}


def test_type_checkers_see_every_lazy_name():
    assert _type_checking_names() == set(jaxpoint.core.__all__)


def test_import_stays_lazy():
    code = ("import sys, jaxpoint.core; "
            "print(sorted(m for m in ('tensorstore', 'jax') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True).stdout.strip()
    assert loaded == "[]"
