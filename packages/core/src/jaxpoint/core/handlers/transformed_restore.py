"""Restoring a tree item through transforms (`PyTreeRestore(item, transforms=...)`).

Orbax's semantics, run as one plan: first decide which saved leaves the result needs and
how to read each (a renamed key is read with the target and restore args of its new key;
a `RestoreTransform.multi_value_fn` reads the keys its `multi_value_fn_input_args`
name; a key kept by `use_fallback` or dropped by `transforms_default_to_original=False`
is not read), then read them all concurrently like any restore, then apply the
transforms (see `tree.transforms`) to build the result with `item`'s structure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers.leaf_args import RestoreArgs
from jaxpoint.core.handlers.pytree_metadata import TreeRecord
from jaxpoint.core.handlers.pytree_restore import execute_plans
from jaxpoint.core.handlers.restore_plan import SavedExtras, plan_leaf
from jaxpoint.core.storage import Location
from jaxpoint.core.tree.build import build_tree
from jaxpoint.core.tree.placeholder import PLACEHOLDER
from jaxpoint.core.tree.transforms import (
    RestoreTransform,
    Transform,
    apply_flat,
    flat_leaves,
    flat_transforms,
)

_SKIP = object()  # a saved leaf the result does not need


def check_transform_options(args: Any) -> None:
    """Rejects transform options that would have no effect, or that are not supported."""
    if args is None:
        return
    if getattr(args, "legacy_transform_fn", None) is not None:
        raise InvalidArgumentError(
            "Expected legacy_transform_fn=None, got a function: legacy_transform_fn is not "
            "supported here (Orbax deprecated it). To fix, express the change as "
            "transforms={new_key: Transform(original_key=..., value_fn=...)}."
        )
    transforms = getattr(args, "transforms", None)
    if transforms is None:
        if getattr(args, "transforms_default_to_original", True) is not True:
            raise InvalidArgumentError(
                "Expected transforms with transforms_default_to_original=False, got no "
                "transforms: the option only says where keys that no transform names come "
                "from. To fix, pass transforms=..., or drop transforms_default_to_original."
            )
        return
    if getattr(args, "item", None) is None:
        raise InvalidArgumentError(
            "Expected item (the structure of the result) with transforms, got item=None. "
            "To fix, pass PyTreeRestore(item=<tree of the new structure>, transforms=...)."
        )
    if getattr(args, "partial_restore", False):
        raise InvalidArgumentError(
            "Expected partial_restore=False with transforms, got True: a transformed restore "
            "already reads only the saved keys that item and transforms need. To fix, drop "
            "partial_restore."
        )


def restore_with_transforms(item: Location, record: TreeRecord, extras: SavedExtras, *,
                            target: Any, restore_args: Any, transforms: Any, strict: bool,
                            default_to_original: bool) -> Any:
    """Restores the saved leaves `transforms` and `target` need, and transforms them."""
    new, treedef = flat_leaves(target)
    args_by_key = dict(zip(new, treedef.flatten_up_to(restore_args), strict=True)
                       ) if restore_args is not None else {}
    rules = flat_transforms(transforms)
    saved = {"/".join(leaf.path.keys): leaf for leaf in record.leaves}
    reads = []
    for key, leaf in saved.items():
        choice = _read_choice(key, new, args_by_key, rules, default_to_original)
        if choice is not _SKIP and choice[0] is not PLACEHOLDER:
            reads.append((key, leaf, choice))
    plans = [plan_leaf(leaf, leaf_target, args, extras, strict=strict)
             for _, leaf, (leaf_target, args) in reads]
    values = execute_plans(item, record, plans, extras)
    original = {key: value for (key, _, _), value in zip(reads, values, strict=True)}
    original_tree: list[Any] = []  # built once, for multi_value_fn only

    def multi_value(multi_value_fn: Callable[..., Any], key: str) -> Any:
        if not original_tree:
            original_tree.append(build_tree(
                (leaf.path, value) for (_, leaf, _), value in zip(reads, values, strict=True)))
        return multi_value_fn(key, original_tree[0], args_by_key.get(key) or RestoreArgs())

    result = apply_flat(original, rules, new, default_to_original=default_to_original,
                        multi_value=multi_value)
    return treedef.unflatten(list(result.values()))


def _read_choice(key: str, new: dict[str, Any], args_by_key: dict[str, Any],
                 rules: dict[str, Transform], default_to_original: bool) -> Any:
    """(target, restore args) to read saved `key` with, or _SKIP."""
    for pattern, rule in rules.items():
        if rule.multi_value_fn is not None:
            inputs = _multi_value_inputs(pattern, rule)
            for input_pattern, input_args in inputs.items():
                if re.fullmatch(input_pattern, key):
                    return None, input_args
        elif not rule.use_fallback:
            for output in new:
                match = re.fullmatch(pattern, output)
                if match is None:
                    continue
                source = rule.original_pattern
                if (output if source is None else match.expand(source)) == key:
                    # A value_fn may change shape and dtype: read as saved, with the args.
                    target = new[output] if rule.value_fn is None else None
                    return target, args_by_key.get(output)
    if key not in new:
        return _SKIP
    kept_from_new = any(rule.use_fallback and re.fullmatch(pattern, key)
                        for pattern, rule in rules.items())
    if kept_from_new == default_to_original:
        return _SKIP
    return new[key], args_by_key.get(key)


def _multi_value_inputs(pattern: str, rule: Transform) -> dict[str, Any]:
    if not isinstance(rule, RestoreTransform):
        raise InvalidArgumentError(
            f"Expected a RestoreTransform for the multi_value_fn at key {pattern!r} of "
            f"transforms, got {type(rule).__name__}. A restore reads only the saved keys "
            "transforms name. To fix, use RestoreTransform(multi_value_fn=..., "
            "multi_value_fn_input_args={saved_key_regex: RestoreArgs(...)})."
        )
    if rule.multi_value_fn_input_args is None:
        raise InvalidArgumentError(
            f"Expected multi_value_fn_input_args for the multi_value_fn at key {pattern!r} of "
            "transforms, got None. To fix, name the saved keys it reads: "
            "multi_value_fn_input_args={saved_key_regex: RestoreArgs(...)}."
        )
    return rule.multi_value_fn_input_args


__all__ = ["check_transform_options", "restore_with_transforms"]
