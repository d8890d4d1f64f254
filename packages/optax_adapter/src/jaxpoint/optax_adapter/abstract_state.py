"""The abstract optimizer state: shapes, dtypes and shardings without allocating it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax
from jaxpoint.optax_adapter.leaf_path import leaf_path


def abstract_opt_state(tx: optax.GradientTransformation, params: Any, *,
                       shardings: Mapping[tuple[str, ...], jax.sharding.Sharding]
                       | jax.sharding.Sharding | None = None) -> Any:
    """`tx.init(params)` as `jax.ShapeDtypeStruct`s, with the real Optax state types.

    `params` may be arrays or `ShapeDtypeStruct`s. A leaf that mirrors a parameter (a
    moment, a trace) takes that parameter's sharding; every other leaf (counts,
    hyperparameters) is replicated over the parameters' mesh. `shardings` overrides this:
    one sharding for every leaf, or a mapping from leaf path to sharding.
    """
    abstract = jax.eval_shape(tx.init, params)
    by_path = {leaf_path(path): leaf for path, leaf in
               jax.tree_util.tree_flatten_with_path(params)[0]}
    fallback = _replicated(by_path.values())

    def with_sharding(path: Any, leaf: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
        key = leaf_path(path)
        sharding: jax.sharding.Sharding | None
        if isinstance(shardings, jax.sharding.Sharding):
            sharding = shardings
        elif shardings is not None and key in shardings:
            sharding = shardings[key]
        else:
            sharding = _mirrored_sharding(key, leaf, by_path) or fallback
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree_util.tree_map_with_path(with_sharding, abstract)


def _mirrored_sharding(key: tuple[str, ...], leaf: jax.ShapeDtypeStruct,
                       params: Mapping[tuple[str, ...], Any]) -> jax.sharding.Sharding | None:
    # Optax nests a params-shaped tree under a field (mu, nu, trace, ...): the longest
    # suffix of the state path that names a parameter of the same shape is its twin.
    for start in range(len(key)):
        twin = params.get(key[start:])
        if twin is not None and tuple(twin.shape) == tuple(leaf.shape):
            return getattr(twin, "sharding", None)
    return None


def _replicated(leaves: Any) -> jax.sharding.Sharding | None:
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding):
            return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        if sharding is not None:
            return jax.sharding.SingleDeviceSharding(next(iter(sharding.device_set)))
    return None
