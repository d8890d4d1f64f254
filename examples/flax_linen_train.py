"""Trains a small Flax linen MLP with `flax_adapter.attach`; survives SIGTERM and resumes.

    python examples/flax_linen_train.py --directory /tmp/run1 --steps 40

Each step prints one JSON line `{"step": ..., "loss": ...}`. Send SIGTERM while it runs:
it saves the step it is on, stops and exits normally. Run it again with the same
directory and it resumes after that step; the losses continue exactly as an
uninterrupted run's would (the data for a step depends only on the step, and the
dropout key lives in the TrainState).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax.training import train_state  # noqa: E402
from jaxpoint.core import CheckpointManagerOptions  # noqa: E402
from jaxpoint.flax_adapter import attach  # noqa: E402


class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.relu(nn.Dense(32)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(1)(x)


class TrainState(train_state.TrainState):
    dropout_key: jax.Array


def create_state() -> TrainState:
    model = Mlp()
    params = model.init(jax.random.key(0), jnp.ones((1, 8)), train=False)["params"]
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.inject_hyperparams(optax.adamw)(
                         learning_rate=optax.cosine_decay_schedule(3e-3, 200)))
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                             dropout_key=jax.random.key_data(jax.random.key(1)))


def batch_for(step: int) -> dict[str, jax.Array]:
    x = jax.random.normal(jax.random.key(1000 + step), (16, 8))
    return {"x": x, "y": jnp.sin(jnp.sum(x, axis=1, keepdims=True))}


@jax.jit
def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, jax.Array]:
    key, dropout = jax.random.split(jax.random.wrap_key_data(state.dropout_key))

    def loss_fn(params):
        predictions = state.apply_fn({"params": params}, batch["x"], train=True,
                                     rngs={"dropout": dropout})
        return jnp.mean((predictions - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = state.apply_gradients(grads=grads, dropout_key=jax.random.key_data(key))
    return state, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--directory", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-interval-steps", type=int, default=5)
    parser.add_argument("--step-delay-s", type=float, default=0.0,
                        help="sleep after each step, so a signal can arrive mid-run")
    args = parser.parse_args()

    trainer = types.SimpleNamespace(state=create_state())
    options = CheckpointManagerOptions(save_interval_steps=args.save_interval_steps,
                                       max_to_keep=2)
    with attach(trainer, args.directory, options=options) as ckpt:
        for step in range((ckpt.restored_step or 0) + 1, args.steps + 1):
            trainer.state, loss = train_step(trainer.state, batch_for(step))
            print(json.dumps({"step": step, "loss": float(loss)}), flush=True)
            ckpt.on_step_end(step, metrics={"loss": float(loss)})
            if ckpt.should_stop:
                print(json.dumps({"stopped_at": step}), flush=True)
                break
            time.sleep(args.step_delay_s)
    sys.exit(0)


if __name__ == "__main__":
    main()
