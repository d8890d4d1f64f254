"""NNX models and optimizers as checkpoint trees, and back into live objects.

On disk an NNX state is its pure dict (`nnx.to_pure_dict`): nested dicts of arrays with no
`Variable` wrappers, so the pure-dict form and the `nnx.State` form read and write the
same files, and the checkpoint does not depend on Flax's classes. A tree saved the other
way, `nnx.State` with its `{'value': ...}` wrappers (what Orbax writes for `nnx.state(m)`),
is read too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from jaxpoint.optax_adapter import leaf_path


def is_nnx_object(value: Any) -> bool:
    """Whether `value` is an NNX graph node (a Module, an Optimizer) or a tuple of them."""
    if isinstance(value, tuple | list):
        return bool(value) and all(is_nnx_object(part) for part in value)
    return isinstance(value, nnx.Pytree)


def nnx_tree(obj: Any) -> dict[str, Any]:
    """What is saved for an NNX object: the pure dict of its whole state."""
    return nnx.to_pure_dict(nnx.state(_as_node(obj)))


def abstract_nnx(create_fn: Callable[[], Any], *,
                 shardings: Any = None) -> tuple[nnx.GraphDef, nnx.State]:
    """`nnx.eval_shape(create_fn)` split into its graph and an abstract state.

    The state's leaves are `ShapeDtypeStruct`s; `shardings` (a tree like the state, or one
    sharding for every leaf) places them, so a restore lands on a new mesh.
    """
    graphdef, state = nnx.split(nnx.eval_shape(create_fn))
    if shardings is not None:
        state = _with_shardings(state, shardings)
    return graphdef, state


def restore_into_state(abstract_state: nnx.State, restored_pure: Any) -> nnx.State:
    """`abstract_state` with the values of `restored_pure`, `Variable` types kept."""
    nnx.replace_by_pure_dict(abstract_state, restored_pure)
    return abstract_state


def pure_target(state: nnx.State) -> dict[str, Any]:
    """The restore target for a state's pure-dict form."""
    return nnx.to_pure_dict(state)


def has_variable_wrappers(saved: Any) -> bool:
    """Whether a saved tree is `nnx.State` with `{'value': ...}` wrappers."""
    paths = [leaf_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(saved)[0]]
    return bool(paths) and all(path and path[-1] == "value" for path in paths)


def without_variable_wrappers(saved: Any) -> Any:
    """A tree saved as `nnx.State` (each leaf as `{'value': leaf}`) as its pure dict."""
    if not isinstance(saved, dict):
        return saved
    if set(saved) == {"value"} and not isinstance(saved["value"], dict):
        return saved["value"]
    return {key: without_variable_wrappers(value) for key, value in saved.items()}


def with_variable_wrappers(pure: Any) -> Any:
    """A pure dict in the `nnx.State` form on disk: each leaf as `{'value': leaf}`."""
    if isinstance(pure, dict):
        return {key: with_variable_wrappers(value) for key, value in pure.items()}
    return {"value": pure}


def update_object(obj: Any, restored_pure: Any) -> None:
    """Writes restored values into a live NNX object, in place."""
    node = _as_node(obj)
    state = nnx.state(node)
    nnx.replace_by_pure_dict(state, restored_pure)
    nnx.update(node, state)


def live_state(obj: Any) -> nnx.State:
    """The `nnx.State` of a live object, `Variable` wrappers included."""
    return nnx.state(_as_node(obj))


def update_from_state(obj: Any, restored: nnx.State) -> None:
    """Writes a restored `nnx.State` into a live NNX object, in place."""
    nnx.update(_as_node(obj), restored)


def _as_node(obj: Any) -> Any:
    return tuple(obj) if isinstance(obj, list) else obj


def _with_shardings(state: nnx.State, shardings: Any) -> nnx.State:
    def place(leaf: Any, sharding: Any) -> Any:
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree_util.tree_map(lambda leaf: place(leaf, shardings), state)
    return jax.tree_util.tree_map(place, state, shardings)
