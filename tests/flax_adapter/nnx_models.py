"""A tiny NNX model with batch-norm statistics and a dropout RNG stream."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class BatchNormMlp(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.dropout = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.dropout(nnx.relu(self.norm(self.dense(x)))))


def create(seed: int = 0) -> tuple[BatchNormMlp, nnx.Optimizer]:
    model = BatchNormMlp(nnx.Rngs(seed, dropout=seed + 1))
    return model, nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def batch_for(step: int):
    x = jax.random.normal(jax.random.key(step), (8, 3))
    return x, jnp.sum(x, axis=1, keepdims=True)
