"""A changed optimizer structure fails with the first differing node and the ways out."""

import jax.numpy as jnp
import jaxpoint.core as ocp
import optax
import pytest
from jaxpoint.optax_adapter import (
    OptStateMismatchError,
    abstract_opt_state,
    check_opt_state_structure,
    saved_leaf_paths,
)

PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros((3,))}


def _saved_metadata(tmp_path, tx):
    ocp.save(tmp_path / "ckpt", {"opt_state": tx.init(PARAMS)})
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.metadata(tmp_path / "ckpt").item_metadata["opt_state"]


def test_same_optimizer_passes(tmp_path):
    saved = _saved_metadata(tmp_path, optax.adamw(1e-3))
    check_opt_state_structure(saved, abstract_opt_state(optax.adamw(1e-3), PARAMS))


def test_saved_paths_spell_namedtuple_fields_as_keys(tmp_path):
    saved = _saved_metadata(tmp_path, optax.adam(1e-3))
    assert set(saved_leaf_paths(saved)) == {
        ("0", "count"), ("0", "mu", "w"), ("0", "mu", "b"), ("0", "nu", "w"), ("0", "nu", "b")}


def test_adamw_to_sgd_names_the_first_differing_node_on_each_side(tmp_path):
    saved = _saved_metadata(tmp_path, optax.adamw(1e-3))
    target = abstract_opt_state(optax.sgd(0.1, momentum=0.9), PARAMS)
    with pytest.raises(OptStateMismatchError,
                       match=r"the checkpoint has opt_state\.0\.count, the target has "
                             r"opt_state\.0\.trace\.b.*reinitialize_opt_state.*"
                             r"transfer_opt_state"):
        check_opt_state_structure(saved, target)


def test_a_new_clipping_stage_is_a_structure_change(tmp_path):
    saved = _saved_metadata(tmp_path, optax.adam(1e-3))
    target = abstract_opt_state(
        optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)), PARAMS)
    with pytest.raises(OptStateMismatchError, match=r"the target has opt_state\.1\.0\.count"):
        check_opt_state_structure(saved, target)


def test_another_mask_is_a_structure_change(tmp_path):
    saved = _saved_metadata(tmp_path, optax.masked(optax.adam(1e-3), {"w": True, "b": False}))
    target = abstract_opt_state(
        optax.masked(optax.adam(1e-3), {"w": True, "b": True}), PARAMS)
    with pytest.raises(OptStateMismatchError, match=r"2 only in the target, 0 only in the checkpoint\). First differing node: the "
                       r"checkpoint has no leaf the target lacks, the target has "
                       r"state\.opt_state\.inner_state\.0\.mu\.b"):
        check_opt_state_structure(saved, target, where="state.opt_state")


def test_changed_parameter_shapes_are_named(tmp_path):
    saved = _saved_metadata(tmp_path, optax.adam(1e-3))
    target = abstract_opt_state(optax.adam(1e-3), {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)})
    with pytest.raises(OptStateMismatchError,
                       match=r"Expected shape \(4, 3\) at opt_state\.0\.mu\.w.*has \(2, 3\)"):
        check_opt_state_structure(saved, target)
