"""A linear probe: logistic regression fitted by full-batch Adam inside one jitted `lax.scan`.

Used to test cross-modal transfer: fit on one modality's code vectors with labels, predict from the
other modality's. Features are standardised with the fitting set's statistics; classes are weighted
inversely to their frequency so a probe cannot score by predicting the majority class alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

Probe = dict[str, jax.Array]


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def fit(features: jax.Array, labels: jax.Array, *, num_classes: int = 2, steps: int = 300,
        lr: float = 1e-2) -> Probe:
  """Weights, bias and the standardisation of a softmax regression of `labels` (N,) on `features` (N, D)."""
  mean, std = features.mean(0), features.std(0) + 1e-6
  x = (features - mean) / std
  counts = jnp.bincount(labels, length=num_classes)
  class_weight = jnp.where(counts > 0, len(labels) / (num_classes * jnp.maximum(counts, 1)), 0.0)
  tx = optax.adam(lr)

  def loss(params):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.mean(ce * class_weight[labels])

  def step(carry, _):
    params, state = carry
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  params = {"w": jnp.zeros((features.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
  return {**params, "mean": mean, "std": std}


@jax.jit
def predict(probe: Probe, features: jax.Array) -> jax.Array:
  return jnp.argmax(((features - probe["mean"]) / probe["std"]) @ probe["w"] + probe["b"], -1)

