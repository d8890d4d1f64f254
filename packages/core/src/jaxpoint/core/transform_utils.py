"""`ocp.transform_utils`: Orbax's helpers for turning one tree into another."""

from collections.abc import Callable
from typing import Any

from jaxpoint.core.handlers.leaf_args import RestoreArgs
from jaxpoint.core.tree.transforms import (
    RestoreTransform,
    Transform,
    apply_transformations,
    intersect_trees,
    merge_trees,
)

PyTree = Any
ValueFn = Callable[[Any], Any]
MultiValueFn = Callable[[str, PyTree], Any]

__all__ = ["MultiValueFn", "PyTree", "RestoreArgs", "RestoreTransform", "Transform", "ValueFn",
           "apply_transformations", "intersect_trees", "merge_trees"]
