import collections

import jax
import numpy as np
import pytest
from jaxpoint.core.errors import InvalidNameError
from jaxpoint.core.tree.build import build_tree
from jaxpoint.core.tree.flatten import flatten_with_paths
from jaxpoint.core.tree.keys import KeyType

Point = collections.namedtuple("Point", "x y")


def test_paths_and_empty_nodes_survive():
    tree = {"a": [1, {"b": None}], "e": {}, "t": (), "p": Point(np.zeros(1), 2)}
    entries, treedef = flatten_with_paths(tree)
    names = [path.param_name for path, _ in entries]
    assert names == ["a.0", "a.1.b", "e", "p.x", "p.y", "t"]
    assert entries[0][0].key_types == (KeyType.DICT, KeyType.SEQUENCE)
    rebuilt = jax.tree_util.tree_unflatten(treedef, [leaf for _, leaf in entries])
    assert rebuilt["p"].__class__ is Point and rebuilt["e"] == {} and rebuilt["t"] == ()


def test_build_tree_makes_lists_from_sequence_keys():
    entries, _ = flatten_with_paths({"l": [10, 11, 12], "d": {"k": 1}})
    assert build_tree(entries) == {"l": [10, 11, 12], "d": {"k": 1}}


def test_colliding_dotted_names_are_rejected():
    with pytest.raises(InvalidNameError, match="both store as parameter 'a.b'"):
        flatten_with_paths({"a.b": 1, "a": {"b": 2}})


@pytest.mark.parametrize("key", ["..", "a/b", ""])
def test_keys_that_escape_are_rejected(key):
    with pytest.raises(InvalidNameError, match="would escape or break"):
        flatten_with_paths({key: 1})
