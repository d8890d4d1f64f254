"""The import-linter contract and the public-name pins agree: every module of jaxpoint.core
is either a pinned public namespace, which packages outside jaxpoint.core may import, or
forbidden to them by the contract in pyproject.toml."""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORE = ROOT / "packages" / "core" / "src" / "jaxpoint" / "core"
PINS = pathlib.Path(__file__).parent / "public_api"
NAMESPACES = sorted(p.stem for p in PINS.glob("*.txt"))
CONTRACT = "packages outside jaxpoint.core import only its public modules"


def _forbidden() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == CONTRACT)
    return contract["forbidden_modules"]


def _is_forbidden(module: str, patterns: list[str]) -> bool:
    # import-linter: "a.b" forbids a.b and everything below it; "a.b.*" only what is below.
    return any(module.startswith(p[:-1]) if p.endswith(".*")
               else module == p or module.startswith(p + ".") for p in patterns)


def _public_modules(modules: list[str]) -> list[str]:
    """The pinned namespaces and the modules they export by name (`ocp.path.step`)."""
    exported = {f"{ns}.{name}" for ns in NAMESPACES
                for name in (PINS / f"{ns}.txt").read_text().split()}
    return sorted({*NAMESPACES, *(exported & set(modules))})


def _core_modules() -> list[str]:
    found = []
    for path in CORE.rglob("*.py"):
        parts = path.relative_to(CORE.parent.parent).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(set(found) - {"jaxpoint.core"})


def test_public_modules_are_importable_by_adapters():
    forbidden = _forbidden()
    public = _public_modules(_core_modules())
    assert "jaxpoint.core.path.step" in public
    assert [m for m in public if _is_forbidden(m, forbidden)] == []


def test_every_other_module_is_forbidden():
    forbidden, modules = _forbidden(), _core_modules()
    public = _public_modules(modules)
    undeclared = [m for m in modules if m not in public and not _is_forbidden(m, forbidden)]
    assert undeclared == [], (
        "declare each public (pin it in tests/core/public_api/) or private (add it to the "
        f"forbidden_modules of {CONTRACT!r} in pyproject.toml)")


def test_tree_is_public_but_its_layer_is_not():
    forbidden = _forbidden()
    assert not _is_forbidden("jaxpoint.core.tree", forbidden)
    assert _is_forbidden("jaxpoint.core.tree.keys", forbidden)
