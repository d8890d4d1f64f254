"""Tiny Flax models and states shared by the flax_adapter tests."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class Mlp(nn.Module):
    features: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.features)(x)
        return nn.Dense(1)(nn.relu(x))


class PartitionedMlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        kernel_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                   ("embed", "hidden"))
        return nn.Dense(8, kernel_init=kernel_init)(x)


class MeshPartitionedMlp(nn.Module):
    """Partitioned by mesh axis names directly (`nn.with_partitioning`), no logical names."""

    @nn.compact
    def __call__(self, x):
        kernel_init = nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
        return nn.Dense(8, kernel_init=kernel_init)(x)


def create_partitioned(module: nn.Module):
    """A create function for a TrainState of `module` (inputs of 4 features)."""

    def create():
        params = module.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
        return train_state.TrainState.create(apply_fn=module.apply, params=params,
                                             tx=optax.adam(1e-3))
    return create


class RngTrainState(train_state.TrainState):
    """A user subclass with extra fields: a PRNG key and a Python counter."""

    key: jax.Array
    epoch: Any = 0


def make_tx():
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.inject_hyperparams(optax.adamw)(
                           learning_rate=optax.linear_schedule(1e-2, 1e-3, 10)))


def create_state(seed: int = 0) -> train_state.TrainState:
    model = Mlp()
    params = model.init(jax.random.key(seed), jnp.ones((1, 3)))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=make_tx())


def create_rng_state(seed: int = 0) -> RngTrainState:
    model = Mlp()
    params = model.init(jax.random.key(seed), jnp.ones((1, 3)))["params"]
    return RngTrainState.create(apply_fn=model.apply, params=params, tx=make_tx(),
                                key=jax.random.key_data(jax.random.key(seed + 1)), epoch=0)


@jax.jit
def train_step(state, batch):
    def loss_fn(params):
        predictions = state.apply_fn({"params": params}, batch["x"])
        return jnp.mean((predictions - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def batch_for(step: int):
    key = jax.random.key(step)
    x = jax.random.normal(key, (8, 3))
    return {"x": x, "y": jnp.sum(x, axis=1, keepdims=True)}
