"""Reading a persistent-tier step: the state item and the JSON items, straight from its folder.

The persistent tier keeps orbax's emergency layout: the state is the item `default` of the
step (what orbax's emergency manager writes and reads), the other items sit beside it. The
folder is read with a plain checkpointer rather than through the core manager, whose
single-item/named-item mode would be fixed by the first folder it sees.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import jax
from jaxpoint.core.checkpointers.checkpointer import Checkpointer
from jaxpoint.core.errors import CheckpointNotFoundError
from jaxpoint.core.handlers import (
    ArrayRestoreArgs,
    Composite,
    CompositeCheckpointHandler,
    JsonRestore,
    PyTreeRestore,
    SingleReplicaArrayRestoreArgs,
)
from jaxpoint.core.handlers.target_restore_args import construct_restore_args
from jaxpoint.core.storage import Location
from jaxpoint.core.storage.step_layout import item_folders

logger = logging.getLogger(__name__)

STATE_ITEM = "default"
METRICS_ITEM = "metrics"


def _restore_args(abstract_state: Any, *, single_replica: bool, replica_axis_index: int) -> Any:
    def leaf_args(leaf: Any) -> Any:
        sharding = getattr(leaf, "sharding", None)
        if not isinstance(sharding, jax.sharding.Sharding):
            return construct_restore_args(leaf)
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            # The key impl is stored with the data; the single-replica broadcast refuses keys.
            return ArrayRestoreArgs(restore_type=jax.Array, sharding=sharding)
        if single_replica and isinstance(sharding, jax.sharding.NamedSharding):
            return SingleReplicaArrayRestoreArgs(sharding=sharding, global_shape=leaf.shape,
                                                 dtype=leaf.dtype,
                                                 replica_axis_index=replica_axis_index)
        return ArrayRestoreArgs(restore_type=jax.Array, sharding=sharding,
                                global_shape=leaf.shape, dtype=leaf.dtype)

    return jax.tree.map(leaf_args, abstract_state)


def saved_item_names(folder: Location) -> list[str]:
    """The JSON items saved beside the state in a persistent step folder."""
    return sorted(set(item_folders(folder)) - {STATE_ITEM, METRICS_ITEM})


def read_step(folder: Location, abstract_state: Any, *, item_names: Collection[str] | None,
              single_replica: bool, replica_axis_index: int) -> tuple[Any, dict[str, Any]]:
    """Collective: every process calls this, in the same order.

    The state on `abstract_state`'s shardings and the JSON items `item_names` (all saved ones
    when None) of the step at `folder`. `single_replica`: the replica at index 0 of the
    replica axis reads and broadcasts to the others; else every process reads its shards.
    """
    present = saved_item_names(folder)
    wanted = present if item_names is None else sorted(item_names)
    missing = sorted(set(wanted) - set(present))
    if missing:
        raise CheckpointNotFoundError(
            f"Expected item(s) {missing} in the persistent step at {folder}, found only "
            f"{present}. To fix, restore the items that step has (args=None restores all).")
    restore_args = _restore_args(abstract_state, single_replica=single_replica,
                                 replica_axis_index=replica_axis_index)
    args = Composite(**{STATE_ITEM: PyTreeRestore(abstract_state, restore_args=restore_args)},
                     **{name: JsonRestore() for name in wanted})
    with Checkpointer(CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(folder, args=args)
    return restored[STATE_ITEM], {name: restored[name] for name in wanted}


def read_item_metadata(folder: Location) -> Composite:
    """Composite(state=tree metadata, <item>=...) of the step at `folder`, from files only."""
    with Checkpointer(CompositeCheckpointHandler()) as checkpointer:
        stored = checkpointer.metadata(folder).item_metadata or {}
    items = {name: value for name, value in stored.items() if name != METRICS_ITEM}
    state = items.pop(STATE_ITEM, None)
    return Composite(state=state, **items)
