"""Abstract targets for Flax linen `TrainState`s, sharded by Flax's partitioning metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers import ArrayMetadata
from jaxpoint.core.metadata import NamedShardingMetadata
from jaxpoint.optax_adapter import dotted, leaf_path


def abstract_train_state(create_fn: Callable[[], Any], mesh: jax.sharding.Mesh | None = None, *,
                         logical_axis_rules: Sequence[tuple[str, Any]] | None = None,
                         saved: Any = None) -> Any:
    """The state `create_fn()` would build, as `ShapeDtypeStruct`s with shardings.

    With a mesh, a leaf boxed by `nn.with_partitioning` gets the mesh axes it names, and
    one boxed by `nn.with_logical_partitioning` its logical names mapped by
    `logical_axis_rules` (else the box's own rules, else those set with
    `nn.logical_axis_rules`). Every other leaf takes the `PartitionSpec` it was saved with
    when `saved` (the item's metadata, `manager.item_metadata(step)["state"]`) records one
    whose axes the mesh has, and is replicated over the mesh otherwise. Without a mesh,
    leaves get the default device. `apply_fn`, `tx` and other static fields come from
    `create_fn`, never from a checkpoint. Boxes stay in place, so the target has the saved
    tree's structure.
    """
    abstract = jax.eval_shape(create_fn)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.tree_util.tree_map(lambda leaf: _with(leaf, device), abstract)
    saved_specs = _saved_specs(saved, mesh)

    def sharded(path: Any, leaf: Any) -> Any:
        if isinstance(leaf, nn.Partitioned):
            spec = _annotated_spec(leaf, logical_axis_rules)
            _check_axes(spec, mesh, path)
        else:
            spec = saved_specs.get(leaf_path(path), jax.sharding.PartitionSpec())
        return _with(leaf, jax.sharding.NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(
        sharded, abstract, is_leaf=lambda node: isinstance(node, nn.Partitioned))


def _annotated_spec(box: nn.Partitioned,
                    rules: Sequence[tuple[str, Any]] | None) -> jax.sharding.PartitionSpec:
    """The mesh PartitionSpec a box asks for: `nn.with_partitioning` names mesh axes,
    `nn.with_logical_partitioning` names logical axes that the rules map to mesh axes."""
    if isinstance(box, nn.LogicallyPartitioned):
        # The rules passed here win, then the box's own, then `nn.logical_axis_rules`.
        spec = nn.logical_to_mesh_axes(box.names, rules if rules is not None else box.rules)
    else:
        spec = box.get_partition_spec()
    return spec if spec is not None else jax.sharding.PartitionSpec()


def _check_axes(spec: jax.sharding.PartitionSpec, mesh: jax.sharding.Mesh, path: Any) -> None:
    unknown = sorted(_axis_names(spec) - set(mesh.axis_names))
    if unknown:
        raise InvalidArgumentError(
            f"Expected the partitioning of {dotted(leaf_path(path))} ({spec}) to name axes of "
            f"the mesh {tuple(mesh.axis_names)}, found {unknown}. To fix, build the mesh with "
            "those axis names, or map logical names to them with logical_axis_rules=.")


def _saved_specs(saved: Any, mesh: jax.sharding.Mesh) -> dict[tuple[str, ...], Any]:
    """Leaf path → the PartitionSpec recorded at save time, where the mesh has its axes."""
    if saved is None:
        return {}
    specs = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(
            saved, is_leaf=lambda node: isinstance(node, ArrayMetadata))[0]:
        sharding = leaf.sharding if isinstance(leaf, ArrayMetadata) else None
        if not isinstance(sharding, NamedShardingMetadata):
            continue
        spec = jax.sharding.PartitionSpec(*sharding.partition_spec)
        if _axis_names(spec) <= set(mesh.axis_names):
            specs[leaf_path(path)] = spec
    return specs


def _axis_names(spec: jax.sharding.PartitionSpec) -> set[str]:
    return {name for entry in spec if entry is not None
            for name in (entry if isinstance(entry, tuple) else (entry,))
            if isinstance(name, str)}


def _with(leaf: Any, sharding: jax.sharding.Sharding) -> Any:
    if isinstance(leaf, nn.Partitioned):
        return leaf.replace_boxed(_with(leaf.unbox(), sharding))
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    return leaf
