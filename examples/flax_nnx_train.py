"""Trains a small Flax NNX model with `flax_adapter.attach`; survives SIGTERM and resumes.

    python examples/flax_nnx_train.py --directory /tmp/run2 --steps 40

The trainer's state is `(model, optimizer)`: parameters, batch-norm statistics, the
dropout RNG stream and the Adam moments are saved together (as the state's pure dict)
and written back into the live objects on resume. Each step prints one JSON line; send
SIGTERM while it runs, then run it again with the same directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jaxpoint.core import CheckpointManagerOptions  # noqa: E402
from jaxpoint.flax_adapter import attach  # noqa: E402


class Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(8, 32, rngs=rngs)
        self.norm = nnx.BatchNorm(32, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)
        self.out = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(self.dropout(nnx.relu(self.norm(self.hidden(x)))))


def batch_for(step: int) -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.key(1000 + step), (16, 8))
    return x, jnp.sin(jnp.sum(x, axis=1, keepdims=True))


@nnx.jit
def train_step(model: Model, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    def loss_fn(model: Model) -> jax.Array:
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--directory", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-interval-steps", type=int, default=5)
    parser.add_argument("--step-delay-s", type=float, default=0.0,
                        help="sleep after each step, so a signal can arrive mid-run")
    args = parser.parse_args()

    model = Model(nnx.Rngs(0, dropout=1))
    optimizer = nnx.Optimizer(model, optax.adamw(3e-3), wrt=nnx.Param)
    trainer = types.SimpleNamespace(state=(model, optimizer))
    options = CheckpointManagerOptions(save_interval_steps=args.save_interval_steps,
                                       max_to_keep=2)
    with attach(trainer, args.directory, options=options) as ckpt:
        for step in range((ckpt.restored_step or 0) + 1, args.steps + 1):
            loss = train_step(model, optimizer, *batch_for(step))
            print(json.dumps({"step": step, "loss": float(loss)}), flush=True)
            ckpt.on_step_end(step, metrics={"loss": float(loss)})
            if ckpt.should_stop:
                print(json.dumps({"stopped_at": step}), flush=True)
                break
            time.sleep(args.step_delay_s)
    sys.exit(0)


if __name__ == "__main__":
    main()
