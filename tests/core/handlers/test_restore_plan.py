"""The restore plan is data: built from tree metadata and a target alone, before any read."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpoint.core.handlers.pytree_metadata import LeafRecord, TreeRecord
from jaxpoint.core.handlers.restore_plan import LeafKind, SavedExtras, build_restore_plan
from jaxpoint.core.tree.keys import KeyType, TreePath
from jaxpoint.core.tree.placeholder import PLACEHOLDER

D = KeyType.DICT


def _record(*leaves):
    return TreeRecord(leaves=[LeafRecord(path=TreePath(keys, (D,) * len(keys)), value_type=kind)
                              for keys, kind in leaves])


EXTRAS = SavedExtras(strings={}, shardings={}, key_impls={"k": "threefry2x32"})


def test_plan_kinds_from_metadata_and_target():
    record = _record((("w",), "jax.Array"), (("n",), "np.ndarray"), (("s",), "scalar"),
                     (("t",), "string"), (("e",), "Dict"), (("k",), "jax.Array"),
                     (("skip", "a"), "jax.Array"), (("skip", "b"), "jax.Array"))
    target = {"w": jax.ShapeDtypeStruct((2,), jnp.int32), "n": np.zeros(3), "s": 1, "t": "",
              "e": {}, "k": jax.random.key(0), "skip": PLACEHOLDER}
    plan = build_restore_plan(record, EXTRAS, target=target, restore_args=None, strict=True,
                              partial=False)
    kinds = {leaf.path.param_name: leaf.kind for leaf in plan.leaves}
    assert kinds == {"w": LeafKind.JAX_ARRAY, "n": LeafKind.NUMPY_ARRAY, "s": LeafKind.SCALAR,
                     "t": LeafKind.STRING, "e": LeafKind.EMPTY, "k": LeafKind.RANDOM_KEY,
                     "skip": LeafKind.PLACEHOLDER}
    w = next(leaf for leaf in plan.leaves if leaf.path.param_name == "w")
    assert w.shape == (2,) and w.dtype == np.int32 and w.sharding is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.shape = (3,)
    assert [leaf.kind.is_read for leaf in plan.leaves].count(True) == 4
