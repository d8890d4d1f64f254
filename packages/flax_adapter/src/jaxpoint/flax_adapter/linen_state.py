"""Abstract targets for Flax linen `TrainState`s, sharded by Flax's partitioning metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax


def abstract_train_state(create_fn: Callable[[], Any], mesh: jax.sharding.Mesh | None = None, *,
                         logical_axis_rules: Sequence[tuple[str, Any]] | None = None) -> Any:
    """The state `create_fn()` would build, as `ShapeDtypeStruct`s with shardings.

    With a mesh, a leaf boxed by `nn.with_partitioning` / `nn.with_logical_partitioning`
    gets its annotated `PartitionSpec` (logical names mapped by `logical_axis_rules`, or
    the rules set with `nn.logical_axis_rules`); every other leaf is replicated over the
    mesh. Without a mesh, leaves get the default device. `apply_fn`, `tx` and other
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

    def sharded(leaf: jax.ShapeDtypeStruct, spec: Any) -> jax.ShapeDtypeStruct:
        if not isinstance(spec, jax.sharding.PartitionSpec):
            spec = jax.sharding.PartitionSpec()
        return _with(leaf, jax.sharding.NamedSharding(mesh, spec))

    return jax.tree_util.tree_map(sharded, abstract, specs,
                                  is_leaf=lambda node: isinstance(node, nn.Partitioned))


def _with(leaf: Any, sharding: jax.sharding.Sharding) -> Any:
    if isinstance(leaf, nn.Partitioned):
        return leaf.replace_boxed(_with(leaf.unbox(), sharding))
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    return leaf
