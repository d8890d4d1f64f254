"""Writes `orbax_0_12_8_names.txt`: the public dotted names of orbax-checkpoint 0.12.8.

Run once with the orbax version the list is pinned to installed:
    .venv/bin/python tests/core/orbax_names/generate_names.py
A name is public when it does not start with "_" and is not an object imported from
outside orbax under its own name (`Any`, `epath`, `jax`, ...). Namespaces are walked two
levels deep (`ocp.path.step.*`); `experimental`, `v1`, `_src` and test-only trees are out
of scope (see docs/orbax-compatibility.md).
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import pathlib
import types

import orbax.checkpoint as ocp

OUTPUT = pathlib.Path(__file__).with_name("orbax_0_12_8_names.txt")
SKIPPED_NAMESPACES = {"experimental", "v1", "testing", "conftest", "version", "pathways"}


def _is_foreign(name: str, value: object) -> bool:
    if isinstance(value, types.ModuleType):
        return not value.__name__.startswith("orbax.checkpoint")
    module = getattr(value, "__module__", None) or ""
    return not module.startswith("orbax") and getattr(value, "__name__", None) == name


def _defines_code(module: types.ModuleType) -> bool:
    """True for an implementation module (it defines functions or classes), not a facade."""
    return any(getattr(v, "__module__", None) == module.__name__ and callable(v)
               for v in vars(module).values())


def _bound_here(module: types.ModuleType) -> set[str]:
    """Names an implementation module binds itself: def, class and assignments, not imports."""
    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _walk(prefix: str, module: types.ModuleType, depth: int, names: set[str]) -> None:
    own = _bound_here(module) if depth > 0 and _defines_code(module) else None
    for name in dir(module):
        if name.startswith("_") or name in SKIPPED_NAMESPACES:
            continue
        if own is not None and name not in own:
            continue
        value = getattr(module, name)
        if _is_foreign(name, value):
            continue
        if isinstance(value, types.ModuleType) and not value.__name__.endswith(f".{name}"):
            continue  # `import step as step_lib`: an alias, not a namespace
        dotted = f"{prefix}{name}"
        names.add(dotted)
        if isinstance(value, types.ModuleType) and depth < 2:
            _walk(f"{dotted}.", value, depth + 1, names)


def main() -> None:
    version = importlib.metadata.version("orbax-checkpoint")
    if version != "0.12.8":
        raise SystemExit(f"Expected orbax-checkpoint 0.12.8 installed, found {version}.")
    names: set[str] = set()
    _walk("", ocp, 0, names)
    OUTPUT.write_text("\n".join(sorted(names)) + "\n")
    print(f"{len(names)} names written to {OUTPUT}")


if __name__ == "__main__":
    main()
