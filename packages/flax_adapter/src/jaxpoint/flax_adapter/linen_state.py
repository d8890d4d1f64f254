"""Abstract targets for Flax linen `TrainState`s, sharded by Flax's partitioning metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
from jaxpoint.core.handlers import ArrayMetadata
from jaxpoint.optax_adapter import leaf_path


def abstract_train_state(create_fn: Callable[[], Any], mesh: jax.sharding.Mesh | None = None, *,
                         logical_axis_rules: Sequence[tuple[str, Any]] | None = None,
                         saved: Any = None) -> Any:
    """The state `create_fn()` would build, as `ShapeDtypeStruct`s with shardings.

    With a mesh, a leaf boxed by `nn.with_partitioning` / `nn.with_logical_partitioning`
    gets its annotated `PartitionSpec` (logical names mapped by `logical_axis_rules`, or
    the rules set with `nn.logical_axis_rules`); every other leaf takes the
    `PartitionSpec` it was saved with when `saved` (the item's metadata,
    `manager.item_metadata(step)["state"]`) records one whose axes the mesh has, and is
    replicated over the mesh otherwise. Without a mesh, leaves get the default device. `apply_fn`, `tx` and other
    static fields come from `create_fn`, never from a checkpoint. Boxes stay in place, so
    the target has the saved tree's structure.
    """
    abstract = jax.eval_shape(create_fn)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.tree_util.tree_map(lambda leaf: _with(leaf, device), abstract)
    specs = nn.get_partition_spec(abstract)
    if logical_axis_rules is not None:
        specs = nn.logical_to_mesh(specs, logical_axis_rules)
    else:
        specs = nn.logical_to_mesh(specs)

    saved_specs = _saved_specs(saved, mesh)

    def sharded(path: Any, leaf: Any, spec: Any) -> Any:
        if not isinstance(leaf, nn.Partitioned):
            spec = saved_specs.get(leaf_path(path), jax.sharding.PartitionSpec())
        return _with(leaf, jax.sharding.NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(
        sharded, abstract, specs, is_leaf=lambda node: isinstance(node, nn.Partitioned))


def _saved_specs(saved: Any, mesh: jax.sharding.Mesh) -> dict[tuple[str, ...], Any]:
    """Leaf path → the PartitionSpec recorded at save time, where the mesh has its axes."""
    if saved is None:
        return {}
    specs = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(
            saved, is_leaf=lambda node: isinstance(node, ArrayMetadata))[0]:
        description = getattr(leaf, "sharding_description", None) or {}
        if description.get("sharding_type") != "NamedSharding":
            continue
        entries = [tuple(entry) if isinstance(entry, list) else entry
                   for entry in description.get("partition_spec", [])]
        names = {name for entry in entries if entry is not None
                 for name in (entry if isinstance(entry, tuple) else (entry,))}
        if names <= set(mesh.axis_names):
            specs[leaf_path(path)] = jax.sharding.PartitionSpec(*entries)
    return specs


def _with(leaf: Any, sharding: jax.sharding.Sharding) -> Any:
    if isinstance(leaf, nn.Partitioned):
        return leaf.replace_boxed(_with(leaf.unbox(), sharding))
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    return leaf
