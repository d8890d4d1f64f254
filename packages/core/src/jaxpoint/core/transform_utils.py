"""`ocp.transform_utils`: Orbax's helpers for turning one tree into another."""

from jaxpoint.core.tree.transforms import (
    RestoreTransform,
    Transform,
    apply_transformations,
    intersect_trees,
    merge_trees,
)

__all__ = ["RestoreTransform", "Transform", "apply_transformations", "intersect_trees",
           "merge_trees"]
