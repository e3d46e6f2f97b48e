"""Probes fitted by full-batch Adam inside one jitted `lax.scan`: a linear one per step, and the Uni-Code
paper's sequence head (Linear -> max over steps -> Linear).

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


def _fit(logits_fn, params: dict, x: jax.Array, labels: jax.Array, num_classes: int, steps: int, lr: float) -> dict:
  """`params` after `steps` full-batch Adam steps on the class-weighted cross-entropy of `logits_fn(params, x)`."""
  counts = jnp.bincount(labels, length=num_classes)
  class_weight = jnp.where(counts > 0, len(labels) / (num_classes * jnp.maximum(counts, 1)), 0.0)
  tx = optax.adam(lr)

  def loss(params):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), labels)
    return jnp.mean(ce * class_weight[labels])

  def step(carry, _):
    params, state = carry
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
  return params


def _linear(params: dict, x: jax.Array) -> jax.Array:
  return x @ params["w"] + params["b"]


def _sequence_head(params: dict, inputs: tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]) -> jax.Array:
  """Linear -> max over steps -> Linear on the standardised step vectors concat_l(tables_l[codes_l]); the first
  Linear is applied to each (K_l, D_l) table once (its rows of `w1` for that table's dimensions) and gathered by
  code, which equals applying it to every step's concatenated vector."""
  tables, codes = inputs
  w1, offset, hidden = params["w1"], 0, params["b1"]
  for level, (table, level_codes) in enumerate(zip(tables, codes)):
    rows = w1 if len(tables) == 1 else w1[offset:offset + table.shape[-1]]
    projected = table @ rows + params["b1"] if level == 0 else table @ rows
    hidden = projected[level_codes] if level == 0 else hidden + projected[level_codes]  # (N, L, H)
    offset += table.shape[-1]
  return jnp.max(hidden, axis=1) @ params["w2"] + params["b2"]


def _levels(table, codes) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
  """(tables, codes) as tuples, one per codebook level: a single table and its codes, or tuples of them."""
  return (tuple(table), tuple(codes)) if isinstance(table, (tuple, list)) else ((table,), (codes,))


def _standardise(tables: tuple[jax.Array, ...], mean: jax.Array, std: jax.Array) -> tuple[jax.Array, ...]:
  """Each table standardised with its dimensions' part of the concatenated step vectors' mean and std."""
  out, offset = [], 0
  for table in tables:
    dims = slice(offset, offset + table.shape[-1])
    out.append((table - mean[dims]) / std[dims])
    offset += table.shape[-1]
  return tuple(out)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def fit(features: jax.Array, labels: jax.Array, *, num_classes: int = 2, steps: int = 300,
        lr: float = 1e-2) -> Probe:
  """Weights, bias and the standardisation of a softmax regression of `labels` (N,) on `features` (N, D)."""
  mean, std = features.mean(0), features.std(0) + 1e-6
  params = {"w": jnp.zeros((features.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
  params = _fit(_linear, params, (features - mean) / std, labels, num_classes, steps, lr)
  return {**params, "mean": mean, "std": std}


@jax.jit
def logits(probe: Probe, features: jax.Array) -> jax.Array:
  """(N, num_classes) class logits of the linear probe."""
  return _linear(probe, (features - probe["mean"]) / probe["std"])


@jax.jit
def predict(probe: Probe, features: jax.Array) -> jax.Array:
  return jnp.argmax(logits(probe, features), -1)


@functools.partial(jax.jit, static_argnames=("num_classes", "hidden", "steps"))
def fit_sequences(table, codes, labels: jax.Array, rng: jax.Array, *, num_classes: int = 2,
                  hidden: int = 64, steps: int = 300, lr: float = 1e-2) -> Probe:
  """The sequence head (Linear -> max over steps -> Linear) of `labels` (N,) on the vectors `table[codes]`
  of sequences of codes (N, L) (e.g. a codebook and each step's code), standardised per dimension over
  all steps. With several codebook levels, `table` and `codes` are tuples (one table (K_l, D_l) and its
  codes (N, L) per level) and a step's vector is the concatenation of its levels' vectors."""
  tables, codes = _levels(table, codes)
  steps_vectors = jnp.concatenate([t[c.ravel()] for t, c in zip(tables, codes)], -1)
  mean, std = steps_vectors.mean(0), steps_vectors.std(0) + 1e-6
  k1, k2 = jax.random.split(rng)
  dim = steps_vectors.shape[-1]
  params = {"w1": jax.random.normal(k1, (dim, hidden)) / jnp.sqrt(dim), "b1": jnp.zeros((hidden,)),
            "w2": jax.random.normal(k2, (hidden, num_classes)) / jnp.sqrt(hidden), "b2": jnp.zeros((num_classes,))}
  params = _fit(_sequence_head, params, (_standardise(tables, mean, std), codes), labels, num_classes, steps, lr)
  return {**params, "mean": mean, "std": std}


@jax.jit
def predict_sequences(probe: Probe, table, codes) -> jax.Array:
  """Classes (N,) of sequences of codes by the head of `fit_sequences` (a table and codes, or tuples per level)."""
  tables, codes = _levels(table, codes)
  return jnp.argmax(_sequence_head(probe, (_standardise(tables, probe["mean"], probe["std"]), codes)), -1)
