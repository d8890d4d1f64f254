"""Optax states round-trip with their real types onto `abstract_opt_state(tx, params)`."""

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import optax
import optax.contrib
import pytest
from jaxpoint.optax_adapter import abstract_opt_state

PARAMS = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones((3,))},
          "scale": jnp.asarray(0.5)}
MASK = {"dense": {"kernel": True, "bias": False}, "scale": False}
LABELS = {"dense": {"kernel": "adam", "bias": "sgd"}, "scale": "sgd"}

OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.1),
    "sgd_momentum_nesterov": lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(1e-3),
    "adamw": lambda: optax.adamw(1e-3, weight_decay=1e-2),
    "lamb": lambda: optax.lamb(1e-3),
    "lion": lambda: optax.lion(1e-4),
    "adafactor": lambda: optax.adafactor(1e-2),
    "rmsprop": lambda: optax.rmsprop(1e-3, momentum=0.9),
    "adagrad": lambda: optax.adagrad(1e-2),
    "chain_clip_adamw": lambda: optax.chain(optax.clip_by_global_norm(1.0),
                                            optax.adamw(1e-3)),
    "masked": lambda: optax.masked(optax.adam(1e-3), MASK),
    "multi_transform": lambda: optax.multi_transform(
        {"adam": optax.adam(1e-3), "sgd": optax.sgd(0.1)}, LABELS),
    "partition": lambda: optax.partition(
        {"adam": optax.adam(1e-3), "sgd": optax.sgd(0.1, momentum=0.9)}, LABELS),
    "inject_hyperparams_schedule": lambda: optax.inject_hyperparams(optax.adamw)(
        learning_rate=optax.linear_schedule(1e-3, 0.0, 100), weight_decay=1e-2),
    "inject_stateful_hyperparams": lambda: optax.inject_hyperparams(optax.sgd)(
        learning_rate=optax.cosine_decay_schedule(0.1, 50), momentum=0.9),
    "multi_steps": lambda: optax.MultiSteps(optax.adam(1e-3), every_k_schedule=3),
    "lookahead": lambda: optax.lookahead(optax.sgd(0.1), sync_period=2, slow_step_size=0.5),
    "ema": lambda: optax.chain(optax.adam(1e-3), optax.ema(0.99)),
    "schedule_free_adamw": lambda: optax.contrib.schedule_free_adamw(1e-3),
    "apply_if_finite": lambda: optax.apply_if_finite(optax.adam(1e-3), max_consecutive_errors=3),
    "zero_nans_chain": lambda: optax.chain(optax.zero_nans(), optax.scale_by_adam(),
                                           optax.scale(-1e-3)),
    "prodigy": lambda: optax.contrib.prodigy(1.0),
    "muon": lambda: optax.contrib.muon(1e-3),
    "reduce_on_plateau": lambda: optax.chain(optax.adam(1e-3),
                                             optax.contrib.reduce_on_plateau(patience=1)),
    "legacy_inject_hyperparams_state": lambda: _legacy_injected_adam(1e-3),
}

# Where the types the issue names sit in each state, checked by class after the restore.
TYPED_NODES = {
    "adam": {lambda s: s[0]: optax.ScaleByAdamState, lambda s: s[1]: optax.EmptyState},
    "masked": {lambda s: s: optax.MaskedState,
               lambda s: s.inner_state[0].mu["dense"]["bias"]: optax.MaskedNode},
    "inject_hyperparams_schedule": {
        lambda s: s: optax.InjectStatefulHyperparamsState,
        # optax does not export the schedule's state class: checked by name.
        lambda s: s.hyperparams_states["learning_rate"]: "WrappedScheduleState"},
    "legacy_inject_hyperparams_state": {lambda s: s: optax.InjectHyperparamsState},
    "multi_steps": {lambda s: s: optax.MultiStepsState},
    "multi_transform": {lambda s: s: optax.MultiTransformState},
    "partition": {lambda s: s: optax.PartitionState,
                  lambda s: s.inner_states["sgd"].inner_state[0]: optax.TraceState},
    "chain_clip_adamw": {lambda s: s[1][0]: optax.ScaleByAdamState},
    "lookahead": {lambda s: s: optax.LookaheadState},
    "ema": {lambda s: s[1]: optax.EmaState},
    "schedule_free_adamw": {lambda s: s: optax.contrib.ScheduleFreeState},
    "apply_if_finite": {lambda s: s: optax.ApplyIfFiniteState},
    "prodigy": {lambda s: s: optax.contrib.ProdigyState},
    "muon": {lambda s: s.inner_states["muon"].inner_state[0]: optax.contrib.MuonState},
    "reduce_on_plateau": {lambda s: s[1]: optax.contrib.ReduceLROnPlateauState},
}


def _legacy_injected_adam(learning_rate: float) -> optax.GradientTransformation:
    """Adam in `InjectHyperparamsState`, the class optax keeps for states written by
    `inject_hyperparams` before 0.1.9 (no `hyperparams_states` field)."""

    def init(params):
        return optax.InjectHyperparamsState(
            count=jnp.zeros([], jnp.int32),
            hyperparams={"learning_rate": jnp.asarray(learning_rate)},
            inner_state=optax.adam(learning_rate).init(params))

    def update(updates, state, params=None):
        inner = optax.adam(state.hyperparams["learning_rate"])
        updates, inner_state = inner.update(updates, state.inner_state, params)
        return updates, state._replace(count=state.count + 1, inner_state=inner_state)

    return optax.GradientTransformation(init, update)


def _params_for(name: str):
    return optax.LookaheadParams.init_synced(PARAMS) if name == "lookahead" else PARAMS


def _grads_like(params, value: float):
    plain = params.fast if isinstance(params, optax.LookaheadParams) else params
    return jax.tree_util.tree_map(lambda p: jnp.full_like(p, value), plain)


def _update(tx, grads, state, params):
    # reduce_on_plateau reads the loss; chain passes it on to the stages that take it.
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        return tx.update(grads, state, params, value=jnp.asarray(1.0))
    return tx.update(grads, state, params)


def _trained_state(tx, params, steps: int = 2):
    state = tx.init(params)
    for i in range(steps):
        grads = _grads_like(params, 0.1 * (i + 1))
        updates, state = _update(tx, grads, state, params)
        params = optax.apply_updates(params, updates)
    return state


def _assert_same_types_and_values(restored, expected):
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree_util.tree_leaves(restored),
                         jax.tree_util.tree_leaves(expected), strict=True):
        assert isinstance(got, jax.Array)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_at_least_fifteen_optimizers_are_covered():
    assert len(OPTIMIZERS) >= 15
    assert set(TYPED_NODES) <= set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_restores_with_real_types(tmp_path, name):
    tx = OPTIMIZERS[name]()
    params = _params_for(name)
    state = _trained_state(tx, params)
    ocp.save(tmp_path / "ckpt", {"opt_state": state})

    target = {"opt_state": abstract_opt_state(tx, params)}
    restored = ocp.restore(tmp_path / "ckpt", target)

    _assert_same_types_and_values(restored["opt_state"], state)
    for node, wanted in TYPED_NODES.get(name, {}).items():
        got = type(node(restored["opt_state"]))
        assert got.__name__ == wanted if isinstance(wanted, str) else got is wanted
    # The restored state keeps working with the optimizer that built the target.
    _update(tx, _grads_like(params, 1.0), restored["opt_state"], params)


def test_moments_follow_the_params_shardings_and_counts_are_replicated():
    mesh = jax.make_mesh((2,), ("data",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    params = {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=sharded)}

    abstract = abstract_opt_state(optax.adam(1e-3), params)

    adam_state = abstract[0]
    assert isinstance(adam_state, optax.ScaleByAdamState)
    assert adam_state.mu["w"].sharding == sharded
    assert adam_state.nu["w"].sharding == sharded
    assert adam_state.count.sharding.spec == jax.sharding.PartitionSpec()
    assert isinstance(abstract[1], optax.EmptyState)


def test_restores_onto_the_shardings_of_params_on_a_new_mesh(tmp_path):
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    auto = jax.sharding.AxisType.Auto  # eager optax updates on sharded arrays need Auto axes
    old_mesh = jax.make_mesh((2,), ("data",), axis_types=(auto,))
    rows = jax.sharding.NamedSharding(old_mesh, jax.sharding.PartitionSpec("data"))
    params = {"w": jax.device_put(jnp.arange(8.0).reshape(4, 2), rows)}
    state = _trained_state(tx, params)
    ocp.save(tmp_path / "ckpt", {"opt_state": state})
    new_mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(auto, auto),
                             devices=jax.devices()[4:8])
    columns = jax.sharding.NamedSharding(new_mesh, jax.sharding.PartitionSpec(None, "model"))
    new_params = {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=columns)}

    restored = ocp.restore(tmp_path / "ckpt",
                           {"opt_state": abstract_opt_state(tx, new_params)})["opt_state"]

    adam = restored[1][0]
    assert adam.mu["w"].sharding == columns and adam.nu["w"].sharding == columns
    assert adam.count.sharding.mesh == new_mesh
    assert adam.count.sharding.spec == jax.sharding.PartitionSpec()
    _assert_same_types_and_values(restored, state)


def test_explicit_shardings_override_the_params(tmp_path):
    params = {"w": jnp.ones((4, 2))}
    tx = optax.adam(1e-3)
    ocp.save(tmp_path / "ckpt", {"opt_state": _trained_state(tx, params)})
    mesh = jax.make_mesh((4,), ("model",))
    resharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    target = {"opt_state": abstract_opt_state(tx, params, shardings=resharded)}
    restored = ocp.restore(tmp_path / "ckpt", target)

    assert restored["opt_state"][0].mu["w"].sharding == resharded
